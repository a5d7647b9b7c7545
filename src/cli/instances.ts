import type { Command } from 'commander'
import { setTimeout as sleep } from 'node:timers/promises'
import { CONTROL_ACTIONS, type InstanceMetrics, type InstanceView, type LogPiece, type MigrationResult, type MigrationStatus, type TemplateSummary } from '../core/index.ts'
import type { ApiClient } from './client.ts'
import { client, hostNames, out, resolveHost, resolveInstance } from './command.ts'
import { migrationView } from './progress.ts'
import { ago, bytes, hostLabel, percent, table } from './table.ts'

/** Moves an instance live, its progress on stderr; the owner signs the destination and whether the disk moves too, for the host it runs on. */
export async function migrateWatched (api: ApiClient, id: string, to: string, copyDisk: boolean): Promise<MigrationResult> {
  const view = migrationView()
  const params = { to, copyDisk }
  const from = await api.hostOf(id)
  return await api.watched<MigrationResult>(`/v1/instances/${encodeURIComponent(id)}/migrate`, 'migrate', id, params, params, p => { view.update(p as MigrationStatus) }, from).finally(view.stop)
}

/** Instance `id`'s whole view, signed for the host it runs on. */
export async function instanceView (api: ApiClient, id: string): Promise<InstanceView> {
  return await api.signed<InstanceView>('GET', `/v1/instances/${encodeURIComponent(id)}`, 'get', id, {}, undefined, await api.hostOf(id))
}

export function instanceTable (views: InstanceView[], names: ReadonlyMap<string, string>): string {
  if (views.length === 0) return 'no instances'
  return table(['ID', 'NAME', 'TEMPLATE', 'HOST', 'STATE', 'ENDPOINTS', 'CREATED'],
    views.map(v => [v.id, v.name, v.templateName, hostLabel(names, v.host), stateOf(v), v.endpoints.map(e => e.url).join(' ') || '-', ago(v.createdAt)]))
}

/** An instance's state as a table shows it: unknown, with its last known state, when its host is unreachable. */
function stateOf (v: InstanceView): string {
  return v.unreachableSince === undefined ? v.state : `unknown (host unreachable since ${ago(v.unreachableSince)}; was ${v.state})`
}

function instanceDetail (v: InstanceView): string {
  const lines = [
    `id:        ${v.id}`,
    `name:      ${v.name}`,
    `state:     ${v.state}`,
    `template:  ${v.templateName} (${v.template})`,
    `host:      ${v.host}`,
    `owner:     ${v.owner}`,
    `resources: ${v.resources.cpu} CPU, ${v.resources.memory} MiB`,
    `created:   ${new Date(v.createdAt).toISOString()} (${ago(v.createdAt)})`,
    ...v.endpoints.map(e => `endpoint:  ${e.name} ${e.url}`),
  ]
  if (v.share !== undefined) lines.push(`share:     ${percent(v.share)} of its host's CPU when others want it too`)
  if (v.bid !== undefined) lines.push(`bid:       ${v.bid} credits, ${v.spent ?? 0} spent, ${(v.rate ?? 0).toFixed(4)} credits/s until ${new Date(v.bidUntil ?? 0).toISOString()}`)
  if (v.error !== undefined) lines.push(`error:     ${v.error}`)
  return lines.join('\n')
}

/** How often `logs -f` asks for what an instance printed since. */
const FOLLOW_EVERY_MS = 1000

/** `xenos instance …` (list, show, control, snapshot, derive, metrics, logs), `xenos snapshots` and `xenos migrate`. */
export function registerInstanceCommands (program: Command): void {
  program.command('migrate <instance>').description('Move a running VM to another host while it keeps running: memory is copied live; the disk stays and is served to the new host, unless --copy-disk')
    .requiredOption('--to <host>', 'host to move it to (peer id, unique part of it, or host name)')
    .option('--copy-disk', 'copy the disk to the new host too (what the instance wrote, while it runs), so the old host keeps nothing of it and may be shut down')
    .action(async (ref: string, o: { to: string, copyDisk?: boolean }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const id = await resolveInstance(api, ref)
      const to = await resolveHost(api, o.to)
      const r = await migrateWatched(api, id, to, o.copyDisk === true)
      const names = await hostNames(api)
      const disk = o.copyDisk === true ? `, ${bytes(r.copiedDiskBytes)} of disk copied` : ''
      out(flags, r, () => `migrated ${r.id} from ${hostLabel(names, r.from)} to ${hostLabel(names, r.to)} in ${(r.totalMs / 1000).toFixed(1)} s: ${bytes(r.transferredBytes)} of memory sent ${r.memoryPath === 'direct' ? 'directly' : 'through the overlay'}${disk}, ${r.downtimeMs ?? '?'} ms paused`)
    })

  const instance = program.command('instance').description('Instances: list, show, control, measure (INSTANCE: an id, a unique start of one, or the name of one of yours)')
  instance.command('list').description('Your instances anywhere on the overlay')
    .option('--all', 'everyone\'s instances')
    .option('--host <peer>', 'only instances on this host')
    .action(async (o: { all?: boolean, host?: string }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const q = new URLSearchParams()
      if (o.all !== true) {
        // No key yet, no instances of one's own.
        const owner = api.knownOwner
        if (owner === undefined) {
          out(flags, [], () => `no instances: you have no user key yet (${flags.key}); the first command that acts makes it`)
          return
        }
        q.set('owner', owner)
      }
      if (o.host !== undefined) q.set('host', await resolveHost(api, o.host))
      const { instances } = await api.get<{ instances: InstanceView[] }>(`/v1/instances?${q.toString()}`)
      const names = await hostNames(api)
      out(flags, instances, () => instanceTable(instances, names))
    })
  instance.command('show <instance>').description('Details of an instance (yours, or any on a host you operate)').action(async (ref: string, _o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    const id = await resolveInstance(api, ref)
    const v = await instanceView(api, id)
    out(flags, v, () => instanceDetail(v))
  })
  for (const action of CONTROL_ACTIONS) {
    instance.command(`${action} <instance>`).description(`${action[0]?.toUpperCase()}${action.slice(1)} an instance you own`).action(async (ref: string, _o, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const id = await resolveInstance(api, ref)
      const v = await api.signed<InstanceView | undefined>('POST', `/v1/instances/${encodeURIComponent(id)}/${action}`, action, id, {}, undefined, await api.hostOf(id))
      out(flags, v ?? { id, destroyed: true }, () => v === undefined ? `destroyed ${id}` : `${id} is ${v.state}`)
    })
  }
  instance.command('snapshot <instance>').description('Save a VM\'s memory and disk as a snapshot (deploy from it with --from-snapshot)').action(async (ref: string, _o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    const id = await resolveInstance(api, ref)
    const host = await api.hostOf(id)
    const s = await api.signed<{ id: string, createdAt: number }>('POST', `/v1/instances/${encodeURIComponent(id)}/snapshot`, 'snapshot', id, {}, undefined, host)
    const name = (await hostNames(api)).get(host) ?? host
    out(flags, { ...s, host }, () => `snapshot ${s.id} of ${id}, held by ${name}: deploy from it with --from-snapshot ${s.id} --host ${name}`)
  })
  instance.command('derive <instance>').description('Make a tailored template from a stopped or suspended VM: its template with the changes on its disk')
    .requiredOption('--name <name>', 'name of the new template')
    .option('--version <version>', 'its version (default: the template\'s, suffixed with the new disk\'s id)')
    .action(async (ref: string, o: { name: string, version?: string }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const id = await resolveInstance(api, ref)
      const params = { name: o.name, ...(o.version === undefined ? {} : { version: o.version }) }
      const t = await api.signed<TemplateSummary>('POST', `/v1/instances/${encodeURIComponent(id)}/derive`, 'derive', id, params, params, await api.hostOf(id))
      out(flags, t, () => `derived ${t.name}:${t.version} as ${t.id} from ${id}`)
    })
  const snapshots = program.command('snapshots').description('Snapshots held by this host: list, remove')
  snapshots.command('list', { isDefault: true }).description('Your snapshots held by this host (all of them, for its operator)').action(async (_o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    const { snapshots } = await api.signed<{ snapshots: Array<{ id: string, instanceId: string, templateId: string, createdAt: number }> }>('GET', '/v1/snapshots', 'snapshots', await api.hostId(), {})
    out(flags, snapshots, () => snapshots.length === 0 ? 'no snapshots here' : table(['SNAPSHOT', 'INSTANCE', 'TEMPLATE', 'TAKEN'], snapshots.map(s => [s.id, s.instanceId, s.templateId.slice(0, 19), ago(s.createdAt)])))
  })
  snapshots.command('rm <id>').description('Delete one of your snapshots held by this host').action(async (id: string, _o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    await api.signed('DELETE', `/v1/snapshots/${encodeURIComponent(id)}`, 'snapshot.delete', id, {})
    out(flags, { deleted: id }, () => `deleted snapshot ${id}`)
  })
  instance.command('metrics <instance>').description('CPU, memory, disk and network use and uptime of an instance').action(async (ref: string, _o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    const id = await resolveInstance(api, ref)
    const m = await api.signed<InstanceMetrics>('GET', `/v1/instances/${encodeURIComponent(id)}/metrics`, 'metrics', id, {}, undefined, await api.hostOf(id))
    // A driver that cannot count disk or network leaves them out: '-', not a zero that looks measured.
    const pair = (x: number | undefined, y: number | undefined): string => x === undefined || y === undefined ? '-' : `${bytes(x)} / ${bytes(y)}`
    out(flags, m, () => table(['ID', 'STATE', 'CPU SECONDS', 'MEMORY', 'DISK READ / WRITTEN', 'NET IN / OUT', 'UPTIME'],
      [[m.id, m.state, m.cpuSeconds.toFixed(2), bytes(m.memoryBytes), pair(m.diskReadBytes, m.diskWriteBytes), pair(m.netRxBytes, m.netTxBytes), `${Math.round(m.uptimeSeconds)}s`]]))
  })
  instance.command('logs <instance>').description('Last lines an instance printed; with -f, then what it prints as it prints it, until Ctrl-C')
    .option('--lines <n>', 'how many lines', Number, 100)
    .option('-f, --follow', 'go on printing what the instance prints (with --json, a line of JSON per piece)')
    .action(async (ref: string, o: { lines: number, follow?: boolean }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const id = await resolveInstance(api, ref)
      let host = await api.hostOf(id)
      const logs = async (query: string): Promise<LogPiece> => await api.signed<LogPiece>('GET', `/v1/instances/${encodeURIComponent(id)}/logs?${query}`, 'logs', id, {}, undefined, host)
      let piece = await logs(`lines=${o.lines}`)
      if (o.follow !== true) {
        out(flags, piece, () => piece.text)
        return
      }
      const print = (p: LogPiece, text: string): void => { if (text !== '') process.stdout.write(flags.json ? `${JSON.stringify(p)}\n` : text) }
      print(piece, `${piece.text}\n`)
      const stop = new AbortController()
      process.once('SIGINT', () => { stop.abort() })
      while (!stop.signal.aborted) {
        await sleep(FOLLOW_EVERY_MS, undefined, { signal: stop.signal }).catch(() => {})
        if (stop.signal.aborted) break
        try {
          piece = await logs(`lines=1&from=${piece.next}`)
        } catch (err) {
          // Moved to another host: follow it there (its log there starts where the move did).
          const now = await api.hostOf(id)
          if (now === host) throw err
          host = now
          continue
        }
        print(piece, piece.text)
      }
    })
}
