import type { Command } from 'commander'
import { randomBytes } from 'node:crypto'
import { toXenosError, XenosError, type DeployResult, type InstanceView, type TemplateSummary } from '../core/index.ts'
import type { ApiClient } from './client.ts'
import { client, collect, hostNames, out, resolveHost, type HostRow } from './command.ts'
import { stagedInputs } from './data.ts'
import { instanceTable, instanceView, migrateWatched } from './instances.ts'
import { RolloutView } from './rollout-view.ts'
import { bytes, shortId, table } from './table.ts'

/** The advertised host other than instance `v`'s with most free memory that fits it. */
async function roomiestHost (api: ApiClient, v: InstanceView): Promise<string> {
  const { hosts } = await api.get<{ hosts: HostRow[] }>('/v1/peers')
  const fits = hosts.filter(h => h.id !== v.host && h.free.memory >= v.resources.memory && h.free.cpu >= v.resources.cpu).sort((a, b) => b.free.memory - a.free.memory)
  const best = fits[0]
  if (best === undefined) throw new XenosError('NO_HOST_AVAILABLE', `no other advertised host has ${v.resources.cpu} CPU and ${v.resources.memory} MiB free for a replica of ${v.id}: see "xenos peers", or name one with --to`)
  return best.id
}

/** Deploys one instance on `host`, signed by the user, and returns it (or the host's error). */
async function deployOne (api: ApiClient, template: string, host: string, spec: { name: string, snapshot?: string }): Promise<InstanceView> {
  const result = await api.deploy(template, { hosts: [host], count: 1, spec }, { wait: true })
  const made = result.instances[0]
  if (made === undefined) throw new XenosError((result.failures[0]?.code ?? 'INTERNAL') as XenosError['code'], result.failures[0]?.message ?? 'the deploy made no instance')
  return made
}

/** The host a deploy from snapshot `id` goes to when none is given: this one, which must hold it (a snapshot stays where it was taken). */
async function snapshotHost (api: ApiClient, id: string): Promise<string> {
  const self = await api.hostId()
  const { snapshots } = await api.signed<{ snapshots: Array<{ id: string }> }>('GET', '/v1/snapshots', 'snapshots', self, {})
  if (!snapshots.some(s => s.id === id)) throw new XenosError('SNAPSHOT_NOT_FOUND', `this host holds no snapshot ${id} of yours: give --host, the host that took it`)
  return self
}

/** `NAME=TARGET[:ENDPOINT]`, a link given on the command line. */
function linkOf (text: string): { name: string, target: string, endpoint?: string } {
  const m = /^([a-z][a-z0-9_]{0,30})=([^:=]+)(?::([a-z][a-z0-9_]{0,30}))?$/.exec(text)
  if (m === null) throw new XenosError('INVALID_ARGUMENT', `--link ${text}: give NAME=SERVICE or NAME=SERVICE:ENDPOINT (NAME lower-case letters, digits and "_")`)
  const [, name = '', target = '', endpoint] = m
  return { name, target, ...endpoint === undefined ? {} : { endpoint } }
}

/** A deploy whose outcome is unknown (the host went away) says how to learn it without making anything twice. */
function withRetryHint (err: unknown, requestId: string): XenosError {
  const e = toXenosError(err)
  if (e.code !== 'PEER_UNREACHABLE' && e.code !== 'TIMEOUT' && e.code !== 'PEER_PROTOCOL') return e
  return new XenosError(e.code, `${e.message}; what the deploy made is not known: run it again with --request-id ${requestId}, which makes only what is missing`)
}

function rolloutTable (parts: DeployResult['hosts'], names: Map<string, string>): string {
  const ms = (n: number | null): string => n === null ? '-' : n < 1000 ? `${Math.round(n)} ms` : `${(n / 1000).toFixed(1)} s`
  return table(['HOST', 'INSTANCES', 'FETCH', 'CREATE', 'BOOT', 'HEALTHY', 'RESULT'], parts.map(p => [
    names.get(p.host) ?? shortId(p.host),
    String(p.instances.length),
    p.fetchMs === null ? '-' : `${ms(p.fetchMs)}${p.fetchedBytes !== null && p.fetchedBytes > 0 ? ` (${bytes(p.fetchedBytes)})` : ''}`,
    ms(p.createMs),
    ms(p.bootMs),
    ms(p.healthyMs),
    p.error === null ? 'ok' : `${p.error.code}: ${p.error.message}`,
  ]))
}

/** `xenos deploy` and `xenos replicate`: instances made from a template, or like another. */
export function registerDeployCommands (program: Command): void {
  program.command('deploy <template>').description('Deploy instances of a template (by template://owner/name/tag, id, name or name:version) on one or many hosts at once')
    .option('--host <peer>', 'host to deploy on (peer id, unique part of it, or host name)')
    .option('--hosts <peers>', 'deploy on each of these hosts at once (comma-separated)')
    .option('--count <n>', 'instances in all, spread over the hosts with most room; with --host(s): on each host', Number, 1)
    .option('--name <name>', 'instance name (suffixed -1, -2… when there are several)')
    .option('--from-snapshot <id>', 'start from a snapshot of this template instead of booting, on the host that holds it (this one, unless --host)')
    .option('--wait', 'wait until every instance has booted and passed its health checks, and time each phase')
    .option('--in <name>', 'a file or directory of the data repository (data://me/PATH) to stage read-only at /in/NAME in each instance; repeatable', collect)
    .option('--request-id <id>', 'name this deploy: run it again with the same id (after a lost answer, a host that failed) and it makes only what is missing, never twice')
    .option('--link <name=service>', 'a service of yours (instance id or name, :ENDPOINT for another than its first) each instance reaches at XENOS_LINK_NAME, wherever it runs; repeatable', collect)
    .action(async (ref: string, o: { host?: string, hosts?: string, count: number, name?: string, fromSnapshot?: string, wait?: boolean, in?: string[], requestId?: string, link?: string[] }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      if (!Number.isInteger(o.count) || o.count < 1 || o.count > 100) throw new XenosError('INVALID_ARGUMENT', '--count must be a whole number from 1 to 100')
      if (o.host !== undefined && o.hosts !== undefined) throw new XenosError('INVALID_ARGUMENT', 'give --host or --hosts, not both')
      const t = await api.template<TemplateSummary>(ref)
      const wanted = o.hosts?.split(',').map(h => h.trim()).filter(h => h !== '') ?? (o.host === undefined ? undefined : [o.host])
      const hosts = wanted === undefined ? (o.fromSnapshot === undefined ? null : [await snapshotHost(api, o.fromSnapshot)]) : await Promise.all(wanted.map(async h => await resolveHost(api, h)))
      if (hosts !== null && new Set(hosts).size !== hosts.length) throw new XenosError('INVALID_ARGUMENT', 'a host is listed twice: name each host once')
      const spec = {
        name: o.name ?? null,
        ...(o.fromSnapshot === undefined ? {} : { snapshot: o.fromSnapshot }),
        ...(o.in === undefined ? {} : { inputs: await stagedInputs(api, o.in) }),
        ...(o.link === undefined ? {} : { links: o.link.map(linkOf) }),
      }
      const requestId = o.requestId ?? randomBytes(8).toString('hex')
      process.stderr.write(`deploying ${t.name}:${t.version} on ${hosts === null ? 'the hosts with most room' : `${hosts.length} host(s)`}${o.wait === true ? ', waiting until healthy' : ''} (request ${requestId})…\n`)
      const names = await hostNames(api)
      const view = new RolloutView(names)
      const result = await api.deploy(t.id, { hosts, count: o.count, spec, requestId }, { wait: o.wait === true, onProgress: parts => { view.update(parts) } })
        .catch((err: unknown) => { throw withRetryHint(err, requestId) })
        .finally(() => { view.stop() })
      view.update(result.hosts)
      out(flags, result, () => [instanceTable(result.instances), '', rolloutTable(result.hosts, names)].join('\n'))
      if (result.instances.length === 0 || result.hosts.some(h => h.error !== null)) process.exitCode = 1
      if (result.failures.length > 0) process.stderr.write(`some hosts failed: "xenos deploy … --request-id ${requestId}" again makes only what is missing\n`)
    })

  program.command('replicate <id>').description('Start another instance of the same service (same template, same name, so "xenos connect NAME" spreads over both) on another host; with --from-snapshot, a copy of the running one, memory and disk')
    .option('--to <host>', 'host to start it on (default: the other host with most free memory)')
    .option('--from-snapshot', 'start it from a snapshot of the running instance (taken now) instead of booting')
    .action(async (id: string, o: { to?: string, fromSnapshot?: boolean }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const v = await instanceView(api, id)
      if (v.owner !== api.owner) throw new XenosError('FORBIDDEN', `instance ${id} belongs to another owner; only its owner may replicate it`)
      const to = o.to === undefined ? await roomiestHost(api, v) : await resolveHost(api, o.to)
      const names = await hostNames(api)
      const where = (h: string): string => names.get(h) ?? shortId(h)
      let replica: InstanceView
      if (o.fromSnapshot !== true) {
        process.stderr.write(`starting ${v.templateName} as ${v.name} on ${where(to)}…\n`)
        replica = await deployOne(api, v.template, to, { name: v.name })
      } else {
        // The snapshot stays where it is taken: the copy starts there, then moves live.
        const snap = await api.signed<{ id: string }>('POST', `/v1/instances/${encodeURIComponent(id)}/snapshot`, 'snapshot', id, {}, undefined, v.host)
        process.stderr.write(`took snapshot ${snap.id} of ${id} on ${where(v.host)}; starting the copy there…\n`)
        replica = await deployOne(api, v.template, v.host, { name: v.name, snapshot: snap.id })
        if (to !== v.host) {
          process.stderr.write(`moving the copy ${replica.id} to ${where(to)}…\n`)
          // Disk and all: a replica must not depend on the original's host.
          await migrateWatched(api, replica.id, to, true)
          replica = await instanceView(api, replica.id)
        }
      }
      out(flags, replica, () => `${replica.id} replicates ${id} (${v.name}) on ${where(replica.host)}: ${replica.endpoints.map(e => e.url).join(' ') || 'no endpoints'}`)
    })
}
