import type { Command } from 'commander'
import { XenosError, type DrainResult, type DrainStatus } from '../core/index.ts'
import { errorOf } from './client.ts'
import { client, hostNames, out, resolveHost, type HostRow } from './command.ts'
import { migrationView } from './progress.ts'
import { ago, hostLabel, table } from './table.ts'

/** `xenos peers`, and `xenos host drain|undrain` for the host the CLI talks to. */
export function registerHostCommands (program: Command): void {
  program.command('peers').description('Hosts on the overlay').action(async (_o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    const self = await api.get<HostRow>('/v1/host')
    const peers = await api.get<{ connected: Array<{ id: string }>, hosts: HostRow[], unreachable: Array<{ id: string, name: string, since: number }> }>('/v1/peers')
    const connected = new Set(peers.connected.map(p => p.id))
    out(flags, { self, ...peers }, () => table(['HOST', 'NAME', 'API', 'DRIVERS', 'FREE CPU', 'FREE MEM', 'INSTANCES', 'LINK'], [
      ...peers.hosts.sort((a, b) => a.name.localeCompare(b.name)).map(h => [
        h.id, h.name, h.api, h.drivers.join(','), `${h.free.cpu}/${h.capacity.cpu}`, `${h.free.memory}/${h.capacity.memory} MiB`, String(h.instances),
        h.id === self.id ? 'self' : connected.has(h.id) ? 'connected' : 'via overlay',
      ]),
      ...peers.unreachable.map(h => [h.id, h.name, '-', '-', '-', '-', '-', `unreachable since ${ago(h.since)}`]),
    ]))
  })

  const hostCmd = program.command('host').description('The host the CLI talks to: drain it before maintenance')
  hostCmd.command('drain').description('Move every running instance on this host to other hosts, live, one at a time; it takes no new instances until "xenos host undrain" (signed by the host\'s operator)')
    .option('--to <hosts>', 'comma-separated hosts to move them to (default: those with most room)')
    .action(async (o: { to?: string }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const to = o.to === undefined ? undefined : await Promise.all(o.to.split(',').map(async h => await resolveHost(api, h.trim())))
      const names = await hostNames(api)
      const where = (h: string): string => hostLabel(names, h)
      let current = ''
      let view = migrationView()
      let result: DrainResult | undefined
      const self = await api.hostId()
      for await (const { event, data } of api.signedEvents('/v1/host/drain', 'drain', self, { to: to ?? null }, to === undefined ? {} : { to }, AbortSignal.timeout(24 * 3_600_000))) {
        if (event === 'progress') {
          const p = data as DrainStatus
          if (p.instance !== current) {
            view.stop()
            view = migrationView()
            current = p.instance
            process.stderr.write(`moving ${p.instance} (${p.index + 1} of ${p.total}) to ${where(p.to)}\n`)
          }
          view.update(p.migration)
        } else if (event === 'result') {
          result = data as DrainResult
        } else if (event === 'error') {
          throw errorOf(data, 'the drain failed')
        }
      }
      view.stop()
      if (result === undefined) throw new XenosError('PEER_PROTOCOL', 'the host closed the drain\'s event stream before its result')
      const r = result
      out(flags, r, () => table(['INSTANCE', 'OUTCOME'], [
        ...r.moved.map(m => [m.id, `moved to ${where(m.to)} in ${(m.totalMs / 1000).toFixed(1)} s, ${m.downtimeMs ?? '?'} ms paused`]),
        ...r.stayed.map(st => [st.id, `stayed: ${st.reason}`]),
      ]))
      if (r.stayed.length > 0) process.exitCode = 1
    })
  hostCmd.command('undrain').description('Let a drained host take instances again').action(async (_o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    await api.signed('POST', '/v1/host/undrain', 'undrain', await api.hostId(), {})
    out(flags, { undrained: true }, () => 'the host takes instances again')
  })
}
