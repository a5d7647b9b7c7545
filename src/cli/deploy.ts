import type { Command } from 'commander'
import { randomBytes } from 'node:crypto'
import { instanceIdsOf, newSnapshotId, toXenosError, XenosError, type BudgetView, type DeployResult, type InstanceView, type MigrationStatus, type Replica, type TemplateSummary } from '../core/index.ts'
import type { ApiClient } from './client.ts'
import { checkCount, client, collect, hostNames, type HostRow, out, resolveHost, resolveInstance } from './command.ts'
import { stagedInputs } from './data.ts'
import { instanceTable, instanceView } from './instances.ts'
import { creditsOf } from './bank.ts'
import { budgetBids, deployBids, refundBids, secondsOf, type PaidBids } from './market.ts'
import { migrationView } from './progress.ts'
import { RolloutView } from './rollout-view.ts'
import { bytes, hostLabel, table } from './table.ts'

/** The advertised host other than instance `v`'s with most free memory that fits it. */
async function roomiestHost (api: ApiClient, v: InstanceView): Promise<string> {
  const { hosts } = await api.get<{ hosts: HostRow[] }>('/v1/peers')
  const fits = hosts.filter(h => h.id !== v.host && h.free.memory >= v.resources.memory && h.free.cpu >= v.resources.cpu).sort((a, b) => b.free.memory - a.free.memory)
  const best = fits[0]
  if (best === undefined) throw new XenosError('NO_HOST_AVAILABLE', `no other advertised host has ${v.resources.cpu} CPU and ${v.resources.memory} MiB free for a replica of ${v.id}: see "xenos peers", or name one with --to`)
  return best.id
}

/** `--env KEY=VALUE` options as an environment. */
function envOf (options: string[]): Record<string, string> {
  const env: Record<string, string> = {}
  for (const o of options) {
    const at = o.indexOf('=')
    if (at < 1) throw new XenosError('INVALID_ARGUMENT', `--env ${o}: give KEY=VALUE`)
    env[o.slice(0, at)] = o.slice(at + 1)
  }
  return env
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
    hostLabel(names, p.host),
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
    .option('--env <KEY=VALUE>', 'an environment variable of each instance, over its template\'s (${XENOS_LINK_NAME} in VALUE: a link\'s address); repeatable', collect)
    .option('--bid <credits>', 'buy each instance a share of its host\'s CPU: pay this many credits for each into its host\'s escrow (with --for)')
    .option('--budget <credits>', 'buy the instances shares of their hosts\' CPU out of this many credits in all (with --for): this host\'s bidder splits them by the best response to what others bid, and bids again as prices change')
    .option('--for <duration>', 'how long each instance\'s bid (with --bid) or the budget (with --budget) lasts: seconds, or 20s, 30m, 1h30m, 2d')
    .option('--link <name=service>', 'a service of yours (instance id or name, :ENDPOINT for another than its first) each instance reaches at XENOS_LINK_NAME, wherever it runs; repeatable', collect)
    .action(async (ref: string, o: { host?: string, hosts?: string, count: number, name?: string, fromSnapshot?: string, wait?: boolean, in?: string[], requestId?: string, link?: string[], env?: string[], bid?: string, budget?: string, for?: string }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      checkCount(o.count)
      if (o.bid !== undefined && o.budget !== undefined) throw new XenosError('INVALID_ARGUMENT', 'give --bid (each instance\'s bid) or --budget (what all of them spend), not both')
      if ((o.bid === undefined && o.budget === undefined) !== (o.for === undefined)) throw new XenosError('INVALID_ARGUMENT', 'give --bid or --budget with --for: how much, and for how long')
      const paid: PaidBids = new Map()
      const onBudget = (b: BudgetView): void => { process.stderr.write(`this host's bidder spends ${b.max} credits at most until ${new Date(b.until).toISOString()}, bidding again as prices change: "xenos budget ${b.id}" shows how\n`) }
      const bids = o.bid !== undefined
        ? deployBids(api, flags.key, creditsOf(o.bid), secondsOf(o.for ?? ''), paid)
        : o.budget === undefined ? undefined : budgetBids(api, flags.key, creditsOf(o.budget), secondsOf(o.for ?? ''), paid, onBudget)
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
        ...(o.env === undefined ? {} : { env: envOf(o.env) }),
      }
      const requestId = o.requestId ?? randomBytes(8).toString('hex')
      process.stderr.write(`deploying ${t.name}:${t.version} on ${hosts === null ? 'the hosts with most room' : `${hosts.length} host(s)`}${o.wait === true ? ', waiting until healthy' : ''} (request ${requestId})…\n`)
      const names = await hostNames(api)
      const view = new RolloutView(names)
      const result = await api.deploy(t.id, { hosts, count: o.count, spec, requestId, bids }, { wait: o.wait === true, onProgress: parts => { view.update(parts) } })
        .catch((err: unknown) => { throw withRetryHint(err, requestId) })
        .finally(() => { view.stop() })
      await refundBids(api, paid, result.failures.map(f => f.host))
      view.update(result.hosts)
      out(flags, result, () => [instanceTable(result.instances, names), '', rolloutTable(result.hosts, names)].join('\n'))
      if (result.instances.length === 0 || result.hosts.some(h => h.error !== null)) process.exitCode = 1
      if (result.failures.length > 0) process.stderr.write(`some hosts failed: "xenos deploy … --request-id ${requestId}" again makes only what is missing\n`)
    })

  program.command('replicate <instance>').description('Start another instance of the same service (same template, same name, so "xenos connect NAME" spreads over both) on another host; with --from-snapshot, a copy of the running one, memory and disk')
    .option('--to <host>', 'host to start it on (default: the other host with most free memory)')
    .option('--from-snapshot', 'start it from a snapshot of the running instance (taken now) instead of booting')
    .action(async (ref: string, o: { to?: string, fromSnapshot?: boolean }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const id = await resolveInstance(api, ref)
      const v = await instanceView(api, id)
      const to = o.to === undefined ? await roomiestHost(api, v) : await resolveHost(api, o.to)
      const names = await hostNames(api)
      const where = (h: string): string => hostLabel(names, h)
      // The host that runs the instance does the work; what the replica needs is signed here first.
      const snapshot = o.fromSnapshot === true ? newSnapshotId() : undefined
      const spec = { name: v.name, ...snapshot === undefined ? {} : { snapshot } }
      const [part] = api.deployParts(v.template, [{ host: snapshot === undefined ? to : v.host, count: 1 }], spec, randomBytes(8).toString('hex'))
      if (part === undefined) throw new XenosError('INTERNAL', 'no deploy part was signed')
      const [replicaId = ''] = instanceIdsOf(part.token)
      const move = snapshot !== undefined && to !== v.host ? api.authFor('migrate', replicaId, { to, copyDisk: true }, v.host) : undefined
      process.stderr.write(snapshot === undefined
        ? `starting ${v.templateName} as ${v.name} on ${where(to)}…\n`
        : `snapshotting ${id} on ${where(v.host)} and starting the copy ${replicaId} there${move === undefined ? '' : `, then moving it to ${where(to)}`}…\n`)
      const view = migrationView()
      const done = await api.watched<Replica>(`/v1/instances/${encodeURIComponent(id)}/replicate`, 'replicate', id, { to, snapshot: snapshot ?? null },
        { to, ...snapshot === undefined ? {} : { snapshot }, part, ...move === undefined ? {} : { move } }, p => { view.update(p as MigrationStatus) }, v.host).finally(view.stop)
      // Moved: asked of the host it moved to, which knows it before its advert reaches everyone.
      const replica = done.migration === null ? done.replica : await api.signed<InstanceView>('GET', `/v1/instances/${encodeURIComponent(replicaId)}`, 'get', replicaId, {}, undefined, done.migration.to)
      out(flags, replica, () => `${replica.id} replicates ${id} (${v.name}) on ${where(replica.host)}: ${replica.endpoints.map(e => e.url).join(' ') || 'no endpoints'}`)
    })
}
