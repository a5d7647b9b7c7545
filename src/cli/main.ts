import { Command, Option } from 'commander'
import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import {
  CONTROL_ACTIONS, formatTemplateUri, isTemplateUri, parseTemplateUri, toXenosError, XenosError,
  type DeployResult, type DrainResult, type DrainStatus, type InstanceMetrics, type InstanceView, type MigrationResult, type MigrationStatus, type NameRecord, type TemplateSummary,
} from '../core/index.ts'
import { ApiClient, errorOf } from './client.ts'
import { registerDataCommands, stagedInputs } from './data.ts'
import { registerTaskCommands } from './tasks.ts'
import { runDaemon } from './daemon.ts'
import { daemonOptionsFrom, withDaemonOptions, type DaemonFlags } from './daemon-options.ts'
import { DEFAULT_KEY_FILE, loadOrCreateUserKey } from './keys.ts'
import { LOCAL_CLOUD_DIR, runLocalCloud } from './local-cloud.ts'
import { buildAndImport, deriveAndImport, DEFAULT_CACHE_DIR } from './build.ts'
import { migrationView, withTransferProgress } from './progress.ts'
import { RolloutView } from './rollout-view.ts'
import { ago, bytes, shortId, table } from './table.ts'

interface GlobalFlags {
  api: string
  json?: boolean
  key: string
}

interface HostRow { id: string, name: string, api: string, drivers: string[], capacity: { cpu: number, memory: number }, free: { cpu: number, memory: number }, instances: number, expiresAt: number }
interface SearchResult { kind: string, id: string, host: string, issuedAt: number, body: Record<string, unknown> }

const collect = (value: string, previous: string[] = []): string[] => [...previous, value]

function out (flags: Pick<GlobalFlags, 'json'>, json: unknown, human: () => string): void {
  process.stdout.write((flags.json === true ? JSON.stringify(json, null, 2) : human()) + '\n')
}

async function client (cmd: Command): Promise<{ api: ApiClient, flags: GlobalFlags }> {
  const flags = cmd.optsWithGlobals<GlobalFlags>()
  const { key, created } = await loadOrCreateUserKey(flags.key)
  if (created) process.stderr.write(`created your user key ${flags.key} (owner id ${key.id})\n`)
  return { api: new ApiClient({ api: flags.api, key }), flags }
}

/** Accepts a full peer id, a unique suffix or prefix of one, or a host name. */
async function resolveHost (api: ApiClient, ref: string): Promise<string> {
  if (/^[1-9A-HJ-NP-Za-km-z]{46,}$/.test(ref)) return ref
  const { hosts } = await api.get<{ hosts: HostRow[] }>('/v1/peers')
  const self = await api.get<{ id: string, name: string }>('/v1/host')
  const all = [...new Map([...hosts, { id: self.id, name: self.name }].map(h => [h.id, h])).values()]
  const named = all.filter(h => h.name === ref)
  const bare = ref.replace(/^…/, '')
  const matches = named.length > 0 || bare.length < 4 ? named : all.filter(h => h.id.endsWith(bare) || h.id.startsWith(bare))
  if (matches.length === 1 && matches[0] !== undefined) return matches[0].id
  if (matches.length === 0) throw new XenosError('HOST_NOT_FOUND', `no advertised host is named "${ref}" or has a peer id starting or ending with it: see "xenos peers"`)
  throw new XenosError('INVALID_ARGUMENT', `"${ref}" matches ${matches.length} hosts: give more of the peer id`)
}

/** `NAME/TAG` or `template://me/NAME/TAG` (or the user's own owner id): a name the user may sign. */
function ownName (target: string, self: string): { name: string, tag: string } {
  const n = parseTemplateUri(isTemplateUri(target) ? target : `template://me/${target}`, self)
  if (n.owner !== self) throw new XenosError('FORBIDDEN', `${target} belongs to owner ${n.owner}: you can only publish names under your own key (template://me/…)`)
  return n
}

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

/** Moves an instance live, its progress on stderr; the owner signs the destination and whether the disk moves too, for the host it runs on. */
async function migrateWatched (api: ApiClient, id: string, to: string, copyDisk: boolean): Promise<MigrationResult> {
  const view = migrationView()
  const params = { to, copyDisk }
  const from = await api.hostOf(id)
  return await api.watched<MigrationResult>(`/v1/instances/${encodeURIComponent(id)}/migrate`, 'migrate', id, params, params, p => { view.update(p as MigrationStatus) }, from).finally(view.stop)
}

/** Instance `id`'s whole view, signed for the host it runs on. */
async function instanceView (api: ApiClient, id: string): Promise<InstanceView> {
  return await api.signed<InstanceView>('GET', `/v1/instances/${encodeURIComponent(id)}`, 'get', id, {}, undefined, await api.hostOf(id))
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

async function hostNames (api: ApiClient): Promise<Map<string, string>> {
  const { hosts } = await api.get<{ hosts: Array<{ id: string, name: string }> }>('/v1/peers').catch(() => ({ hosts: [] }))
  return new Map(hosts.map(h => [h.id, h.name]))
}

function instanceTable (views: InstanceView[]): string {
  if (views.length === 0) return 'no instances'
  return table(['ID', 'NAME', 'TEMPLATE', 'HOST', 'STATE', 'ENDPOINTS', 'CREATED'],
    views.map(v => [v.id, v.name, v.templateName, shortId(v.host), v.state, v.endpoints.map(e => e.url).join(' ') || '-', ago(v.createdAt)]))
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
  if (v.error !== undefined) lines.push(`error:     ${v.error}`)
  return lines.join('\n')
}

export function buildProgram (): Command {
  const program = new Command('xenos')
    .description('Find, deploy, control and measure services on a Xenos cloud')
    .option('--api <url>', 'API of any Xenos host', process.env.XENOS_API ?? 'http://127.0.0.1:7380')
    .option('--json', 'print JSON instead of tables')
    .option('--key <file>', 'your user key (created on first use)', process.env.XENOS_KEY ?? DEFAULT_KEY_FILE)
    .showHelpAfterError()

  withDaemonOptions(program.command('node').description('Run this machine as a Xenos host').command('start').description('Start xenosd in the foreground'))
    .action(async (flags: DaemonFlags) => { await runDaemon(daemonOptionsFrom(flags)) })

  program.command('cloud').description('Run a small Xenos cloud on this machine (several hosts on loopback)')
    .option('--hosts <n>', 'how many hosts', Number, 3)
    .option('--data <dir>', 'where the hosts keep their state', LOCAL_CLOUD_DIR)
    .option('--first-api-port <port>', 'API port of host1; the others follow', Number, 7380)
    .option('--template <dir|file>', 'VM template directory to build, or manifest file to import, and deploy', resolve(import.meta.dirname, '..', '..', 'examples', 'hello-web'))
    .action(async (o: { hosts: number, data: string, firstApiPort: number, template: string }, cmd: Command) => {
      if (!Number.isInteger(o.hosts) || o.hosts < 1 || o.hosts > 32) throw new XenosError('INVALID_ARGUMENT', '--hosts must be from 1 to 32')
      const flags = cmd.optsWithGlobals<GlobalFlags>()
      const { key } = await loadOrCreateUserKey(flags.key)
      await runLocalCloud({
        hosts: o.hosts, dataDir: o.data, firstApiPort: o.firstApiPort, template: o.template, operator: key.id,
        api: url => new ApiClient({ api: url, key }),
        print: line => { process.stdout.write(line + '\n') },
      })
    })

  program.command('whoami').description('Show your owner id').action(async (_o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    out(flags, { owner: api.owner }, () => api.owner)
  })

  program.command('peers').description('Hosts on the overlay').action(async (_o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    const self = await api.get<HostRow>('/v1/host')
    const peers = await api.get<{ connected: Array<{ id: string }>, hosts: HostRow[] }>('/v1/peers')
    const connected = new Set(peers.connected.map(p => p.id))
    out(flags, { self, ...peers }, () => table(['HOST', 'NAME', 'API', 'DRIVERS', 'FREE CPU', 'FREE MEM', 'INSTANCES', 'LINK'],
      peers.hosts.sort((a, b) => a.name.localeCompare(b.name)).map(h => [
        h.id, h.name, h.api, h.drivers.join(','), `${h.free.cpu}/${h.capacity.cpu}`, `${h.free.memory}/${h.capacity.memory} MiB`, String(h.instances),
        h.id === self.id ? 'self' : connected.has(h.id) ? 'connected' : 'via overlay',
      ])))
  })

  const template = program.command('template').description('Templates: import, list, show, remove')
  template.command('import <file>').description('Import a template manifest (YAML or JSON)').action(async (file: string, _o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    const body = { text: await readFile(file, 'utf8') }
    const t = await api.signed<TemplateSummary>('POST', '/v1/templates', 'template.import', 'templates', body, body)
    out(flags, t, () => `imported ${t.name}:${t.version} as ${t.id}`)
  })
  template.command('build <dir>').description('Build a VM template from DIR/template.yaml (kernel, initramfs, disk) and import it')
    .option('--cache <dir>', 'where Debian packages, builds and blobs are cached', DEFAULT_CACHE_DIR)
    .action(async (dir: string, o: { cache: string }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const t = await buildAndImport(api, dir, o.cache)
      out(flags, t, () => `built ${t.name}:${t.version} as ${t.id}`)
    })
  template.command('derive <base>').description('Make a tailored template: BASE\'s image with the files of DIR added (under /srv), stored as a small overlay on BASE\'s disk')
    .requiredOption('--add <dir>', 'files to add to the disk, laid out as under /srv in the guest')
    .option('--name <name>', 'name of the new template (default: BASE\'s)')
    .option('--version <version>', 'its version (default: BASE\'s, suffixed with the new disk\'s id)')
    .option('--cache <dir>', 'where base disks and built files are cached', DEFAULT_CACHE_DIR)
    .action(async (base: string, o: { add: string, name?: string, version?: string, cache: string }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const t = await deriveAndImport(api, base, o.add, o.cache, { name: o.name, version: o.version })
      out(flags, t, () => `derived ${t.name}:${t.version} as ${t.id}`)
    })
  template.command('pull <template>').description('Fetch a template onto this host from every host that holds it, with progress (signed by the host\'s operator)')
    .action(async (ref: string, _o, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const t = await api.template<TemplateSummary>(ref)
      const t2 = await withTransferProgress(api, t.id, async () => await api.signed<TemplateSummary>('POST', `/v1/templates/${encodeURIComponent(t.id)}/pull`, 'template.pull', t.id, {}))
      out(flags, t2, () => `${t2.name}:${t2.version} (${t2.id}) is on this host`)
    })
  template.command('list').description('Templates held by this host').action(async (_o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    const { templates } = await api.get<{ templates: TemplateSummary[] }>('/v1/templates')
    out(flags, templates, () => templates.length === 0
      ? 'no templates here: import one with "xenos template import FILE"'
      : table(['ID', 'NAME', 'VERSION', 'DRIVER', 'CPU', 'MEMORY', 'TAGS'],
        templates.map(t => [t.id.slice(0, 19), t.name, t.version, t.driver, String(t.resources.cpu), `${t.resources.memory} MiB`, Object.entries(t.tags).map(([k, v]) => `${k}=${v}`).join(',')])))
  })
  template.command('show <ref>').description('Show a template by id, name or name:version').action(async (ref: string, _o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    const t = await api.template<TemplateSummary & { manifest?: unknown }>(ref)
    out(flags, t, () => [`id:        ${t.id}`, `name:      ${t.name}:${t.version}`, `driver:    ${t.driver}`,
      `resources: ${t.resources.cpu} CPU, ${t.resources.memory} MiB`, `tags:      ${Object.entries(t.tags).map(([k, v]) => `${k}=${v}`).join(', ') || '-'}`,
      `held by:   ${t.hosts.join(', ')}`].join('\n'))
  })
  template.command('rm <ref>').description('Remove a template you imported (any, for the host\'s operator) from this host').action(async (ref: string, _o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    const { id } = await api.template<TemplateSummary>(ref)
    const r = await api.signed<{ id: string, blobsRemoved: number, bytesFreed: number }>('DELETE', `/v1/templates/${encodeURIComponent(id)}`, 'template.remove', id, {})
    out(flags, r, () => `removed ${r.id}${r.blobsRemoved > 0 ? `, and ${r.blobsRemoved} image file(s) no other template uses (${bytes(r.bytesFreed)} freed)` : ''}`)
  })

  for (const kind of ['version', 'alias'] as const) {
    template.command(`${kind === 'version' ? 'tag' : 'alias'} <template> <name/${kind}>`)
      .description(kind === 'version'
        ? 'Publish template://you/NAME/VERSION for a template, to every host; a version never moves once published'
        : 'Point template://you/NAME/ALIAS (such as current) at a template, to every host; moves it if it exists')
      .action(async (ref: string, target: string, _o, cmd: Command) => {
        const { api, flags } = await client(cmd)
        const { name, tag } = ownName(target, api.owner)
        const t = await api.template<TemplateSummary>(ref)
        const r = await api.publishName(name, tag, kind, t.id)
        out(flags, r, () => `${formatTemplateUri(r.record)} → ${t.id}${r.changed ? '' : ' (already so)'}`)
      })
  }

  program.command('names').description('Template names (template://owner/name/tag) known on the overlay')
    .option('--owner <id>', 'only this owner\'s ("me" for yours)')
    .action(async (o: { owner?: string }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const owner = o.owner === 'me' ? api.owner : o.owner
      const { names } = await api.get<{ names: NameRecord[] }>(`/v1/names${owner === undefined ? '' : `?owner=${encodeURIComponent(owner)}`}`)
      out(flags, names, () => names.length === 0
        ? 'no template names yet: publish one with "xenos template tag TEMPLATE NAME/VERSION"'
        : table(['NAME', 'KIND', 'TEMPLATE', 'SET'], names.map(n => [formatTemplateUri({ ...n, owner: n.owner === api.owner ? 'me' : n.owner }), n.kind, n.template.slice(0, 19), ago(n.seq)])))
    })

  program.command('search [text]').description('Search the overlay for templates, instances and hosts')
    .addOption(new Option('--kind <kind>', 'only this kind').choices(['template', 'instance', 'host']))
    .option('--tag <key=value>', 'tag that must match (repeatable)', collect)
    .option('--host <peer>', 'only adverts from this host')
    .action(async (text: string | undefined, o: { kind?: string, tag?: string[], host?: string }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const q = new URLSearchParams()
      if (text !== undefined) q.set('q', text)
      if (o.kind !== undefined) q.set('kind', o.kind)
      if (o.host !== undefined) q.set('host', await resolveHost(api, o.host))
      for (const t of o.tag ?? []) q.append('tag', t)
      const { results } = await api.get<{ results: SearchResult[] }>(`/v1/search?${q.toString()}`)
      out(flags, results, () => results.length === 0 ? 'nothing found' : table(['KIND', 'ID', 'NAME', 'HOST', 'DETAIL', 'SEEN'], results.map(r => [
        r.kind, r.kind === 'host' ? shortId(r.id) : r.id.slice(0, 19), typeof r.body.name === 'string' ? r.body.name : '', shortId(r.host), detailOf(r), ago(r.issuedAt),
      ])))
    })

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

  program.command('migrate <id>').description('Move a running VM to another host while it keeps running: memory is copied live; the disk stays and is served to the new host, unless --copy-disk')
    .requiredOption('--to <host>', 'host to move it to (peer id, unique part of it, or host name)')
    .option('--copy-disk', 'copy the disk to the new host too (what the instance wrote, while it runs), so the old host keeps nothing of it and may be shut down')
    .action(async (id: string, o: { to: string, copyDisk?: boolean }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const to = await resolveHost(api, o.to)
      const r = await migrateWatched(api, id, to, o.copyDisk === true)
      const names = await hostNames(api)
      const disk = o.copyDisk === true ? `, ${bytes(r.copiedDiskBytes)} of disk copied` : ''
      out(flags, r, () => `migrated ${r.id} from ${names.get(r.from) ?? shortId(r.from)} to ${names.get(r.to) ?? shortId(r.to)} in ${(r.totalMs / 1000).toFixed(1)} s: ${bytes(r.transferredBytes)} of memory sent ${r.memoryPath === 'direct' ? 'directly' : 'through the overlay'}${disk}, ${r.downtimeMs ?? '?'} ms paused`)
    })

  const hostCmd = program.command('host').description('The host the CLI talks to: drain it before maintenance')
  hostCmd.command('drain').description('Move every running instance on this host to other hosts, live, one at a time; it takes no new instances until "xenos host undrain" (signed by the host\'s operator)')
    .option('--to <hosts>', 'comma-separated hosts to move them to (default: those with most room)')
    .action(async (o: { to?: string }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const to = o.to === undefined ? undefined : await Promise.all(o.to.split(',').map(async h => await resolveHost(api, h.trim())))
      const names = await hostNames(api)
      const where = (h: string): string => names.get(h) ?? shortId(h)
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

  registerDataCommands(program, { client, out, resolveHost })
  registerTaskCommands(program, { client, out, resolveHost })

  program.command('connect <target>').description('Open a port on the host the CLI talks to that reaches a service of yours (instance id or name) through the overlay, wherever it runs; it follows the service when it migrates')
    .option('--port <port>', 'local port (default: any free one)', Number, 0)
    .option('--address <ip>', 'address to listen on (other than loopback: only for the host\'s operator)', '127.0.0.1')
    .option('--endpoint <name>', 'which endpoint of the service (default: its first TCP one)')
    .action(async (target: string, o: { port: number, address: string, endpoint?: string }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const stop = new AbortController()
      process.once('SIGINT', () => { stop.abort() })
      process.once('SIGTERM', () => { stop.abort() })
      const names = await hostNames(api)
      let reaching: string | undefined
      try {
        const params = { endpoint: o.endpoint ?? null, address: o.address, port: o.port }
        for await (const { event, data } of api.signedEvents('/v1/connect', 'connect', target, params, { target, port: o.port, address: o.address, ...(o.endpoint === undefined ? {} : { endpoint: o.endpoint }) }, stop.signal)) {
          const d = data as { address: string, port: number, connections: number, failed: number, lastHost?: string, lastInstance?: string }
          if (flags.json) process.stdout.write(`${JSON.stringify({ event, ...d })}\n`)
          else if (event === 'listening') process.stdout.write(`${d.address}:${d.port} reaches ${target} through the overlay (Ctrl-C to stop)\n`)
          else if (event === 'stats' && d.lastHost !== undefined && `${d.lastInstance}@${d.lastHost}` !== reaching) {
            reaching = `${d.lastInstance}@${d.lastHost}`
            process.stdout.write(`now reaching ${d.lastInstance ?? '?'} on ${names.get(d.lastHost) ?? shortId(d.lastHost)} (${d.connections} connections, ${d.failed} failed)\n`)
          }
        }
      } catch (err) {
        if (!stop.signal.aborted) throw err
      }
    })

  const instance = program.command('instance').description('Instances: list, show, control, measure')
  instance.command('list').description('Your instances anywhere on the overlay')
    .option('--all', 'everyone\'s instances')
    .option('--host <peer>', 'only instances on this host')
    .action(async (o: { all?: boolean, host?: string }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const q = new URLSearchParams()
      if (o.all !== true) q.set('owner', api.owner)
      if (o.host !== undefined) q.set('host', await resolveHost(api, o.host))
      const { instances } = await api.get<{ instances: InstanceView[] }>(`/v1/instances?${q.toString()}`)
      out(flags, instances, () => instanceTable(instances))
    })
  instance.command('show <id>').description('Details of an instance (yours, or any on a host you operate)').action(async (id: string, _o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    const v = await instanceView(api, id)
    out(flags, v, () => instanceDetail(v))
  })
  for (const action of CONTROL_ACTIONS) {
    instance.command(`${action} <id>`).description(`${action[0]?.toUpperCase()}${action.slice(1)} an instance you own`).action(async (id: string, _o, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const v = await api.signed<InstanceView | undefined>('POST', `/v1/instances/${encodeURIComponent(id)}/${action}`, action, id, {}, undefined, await api.hostOf(id))
      out(flags, v ?? { id, destroyed: true }, () => v === undefined ? `destroyed ${id}` : `${id} is ${v.state}`)
    })
  }
  instance.command('snapshot <id>').description('Save a VM\'s memory and disk as a snapshot (deploy from it with --from-snapshot)').action(async (id: string, _o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    const host = await api.hostOf(id)
    const s = await api.signed<{ id: string, createdAt: number }>('POST', `/v1/instances/${encodeURIComponent(id)}/snapshot`, 'snapshot', id, {}, undefined, host)
    const name = (await hostNames(api)).get(host) ?? host
    out(flags, { ...s, host }, () => `snapshot ${s.id} of ${id}, held by ${name}: deploy from it with --from-snapshot ${s.id} --host ${name}`)
  })
  instance.command('derive <id>').description('Make a tailored template from a stopped or suspended VM: its template with the changes on its disk')
    .requiredOption('--name <name>', 'name of the new template')
    .option('--version <version>', 'its version (default: the template\'s, suffixed with the new disk\'s id)')
    .action(async (id: string, o: { name: string, version?: string }, cmd: Command) => {
      const { api, flags } = await client(cmd)
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
  instance.command('metrics <id>').description('CPU, memory and uptime of an instance').action(async (id: string, _o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    const m = await api.signed<InstanceMetrics>('GET', `/v1/instances/${encodeURIComponent(id)}/metrics`, 'metrics', id, {}, undefined, await api.hostOf(id))
    out(flags, m, () => table(['ID', 'STATE', 'CPU SECONDS', 'MEMORY', 'UPTIME'], [[m.id, m.state, m.cpuSeconds.toFixed(2), bytes(m.memoryBytes), `${Math.round(m.uptimeSeconds)}s`]]))
  })
  instance.command('logs <id>').description('Last lines an instance printed').option('--lines <n>', 'how many lines', Number, 100)
    .action(async (id: string, o: { lines: number }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const r = await api.signed<{ text: string }>('GET', `/v1/instances/${encodeURIComponent(id)}/logs?lines=${o.lines}`, 'logs', id, {}, undefined, await api.hostOf(id))
      out(flags, r, () => r.text)
    })
  return program
}

function detailOf (r: SearchResult): string {
  const b = r.body
  if (r.kind === 'template') return `${String(b.version)} ${String(b.driver)} ${Object.entries(b.tags as Record<string, string>).map(([k, v]) => `${k}=${v}`).join(',')}`.trim()
  if (r.kind === 'instance') return `${String(b.state)} ${(b.endpoints as Array<{ url: string }>).map(e => e.url).join(' ')}`.trim()
  const free = b.free as { cpu: number, memory: number }
  return `free ${free.cpu} CPU ${free.memory} MiB, ${String(b.instances)} instances`
}

buildProgram().parseAsync().catch((err: unknown) => {
  const e = toXenosError(err)
  process.stderr.write(`error ${e.code}: ${e.message}\n`)
  process.exit(1)
})
