import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, readFile, rm, stat } from 'node:fs/promises'
import { extname, join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { XenosError, type InstanceView, type TemplateSummary } from '../core/index.ts'
import { DEFAULT_DATA_DIR } from '../node/index.ts'
import { buildAndImport, DEFAULT_CACHE_DIR } from './build.ts'
import type { ApiClient } from './client.ts'
import type { HostFile } from './daemon.ts'
import { table } from './table.ts'

export interface LocalCloudOptions {
  hosts: number
  dataDir: string
  firstApiPort: number
  template: string
  /** The key that operates every host: the user's. */
  operator: string
  api: (url: string) => ApiClient
  print: (line: string) => void
}

/** xenosd in the form this file runs in: compiled beside compiled, sources beside sources. */
const XENOSD = resolve(import.meta.dirname, `xenosd${extname(import.meta.filename)}`)
/**
 * Node's options for xenosd, as bin/xenosd gives them: a young generation of at most 4 MiB a
 * half (V8's grows to 16), so an idle host keeps 30 MiB less; a busy one scavenges more often.
 */
export const XENOSD_NODE_FLAGS = ['--disable-warning=ExperimentalWarning', '--max-semi-space-size=4']
/** Where the local cloud's hosts keep their state unless told otherwise. */
export const LOCAL_CLOUD_DIR = join(DEFAULT_DATA_DIR, 'local-cloud')

/** What the local cloud's bank gives each new account. */
const LOCAL_BANK_GRANT = 1000

/**
 * Runs a small Xenos cloud on this machine: N `xenosd` processes on loopback joined through the
 * first, an example template (a VM, by default) built and imported on the first, and one
 * instance deployed from the last host onto itself. Stops everything on Ctrl-C.
 */
export async function runLocalCloud (o: LocalCloudOptions): Promise<void> {
  const procs: ChildProcess[] = []
  const stopAll = async (): Promise<void> => {
    await Promise.all(procs.map(async p => {
      if (p.exitCode !== null) return
      const gone = new Promise(r => p.once('exit', r))
      p.kill('SIGTERM')
      await gone
    }))
  }
  let bootstrap: string | undefined
  /** The first host runs the cloud's bank; the others deal with it. */
  let bank: string | undefined
  const infos: HostFile[] = []
  try {
    for (let i = 1; i <= o.hosts; i++) {
      const dir = join(o.dataDir, `host${i}`)
      await mkdir(dir, { recursive: true })
      await rm(join(dir, 'host.json'), { force: true })
      const args = [...XENOSD_NODE_FLAGS, XENOSD, '--data', dir, '--name', `host${i}`,
        '--api', `127.0.0.1:${o.firstApiPort + i - 1}`, '--listen', '/ip4/127.0.0.1/tcp/0', '--log-level', 'warn', '--operator', o.operator,
        ...(bootstrap === undefined ? [] : ['--bootstrap', bootstrap]),
        ...(bank === undefined ? ['--bank', '--bank-grant', String(LOCAL_BANK_GRANT)] : ['--accept-bank', bank])]
      const proc = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'] })
      procs.push(proc)
      const info = await waitForHostFile(dir, proc)
      infos.push(info)
      bootstrap ??= info.multiaddrs[0]
      o.print(`host${i}  ${info.api}  ${info.peerId}`)
      if (bank === undefined) {
        bank = (await o.api(info.api).get<{ bank: string }>('/v1/bank')).bank
        o.print(`       runs the bank ${bank}: every new account gets ${LOCAL_BANK_GRANT} credits ("xenos account")`)
      }
    }
    const first = o.api(infos[0]?.api ?? '')
    const last = o.api(infos[infos.length - 1]?.api ?? '')
    const t = (await stat(o.template)).isDirectory() ? await buildAndImport(first, o.template, DEFAULT_CACHE_DIR) : await importManifest(first, o.template)
    o.print(`imported template ${t.name}:${t.version} (${t.id}) on host1`)
    await waitFor(async () => (await last.get<{ results: unknown[] }>(`/v1/search?kind=template&q=${t.name}`)).results.length > 0, 15_000, 'the template advert reaching every host')
    const target = infos[infos.length - 1]?.peerId
    const result = await last.deploy(t.id, { hosts: target === undefined ? null : [target], count: 1, spec: { name: `${t.name}-demo` } })
    const instances: InstanceView[] = result.instances
    o.print('')
    o.print(table(['INSTANCE', 'NAME', 'STATE', 'ENDPOINT'], instances.map(v => [v.id, v.name, v.state, v.endpoints.map(e => e.url).join(' ')])))
    const url = instances[0]?.endpoints[0]?.url
    if (url !== undefined) {
      o.print(`waiting for ${url} to answer (a VM boots in seconds with KVM, tens of seconds without)…`)
      await waitFor(async () => (await fetch(url, { signal: AbortSignal.timeout(2000) })).ok, 180_000, 'the service answering')
      o.print(`${url} answers`)
    }
    o.print('')
    o.print('Try, from another terminal:')
    o.print(`  bin/xenos --api ${infos[0]?.api ?? ''} peers`)
    o.print(`  bin/xenos --api ${infos[0]?.api ?? ''} search ${t.name}`)
    o.print(`  curl ${instances[0]?.endpoints[0]?.url ?? ''}`)
    o.print(`  bin/xenos --api ${infos[0]?.api ?? ''} deploy ${t.name} --count 2`)
    o.print('Ctrl-C stops the cloud.')
    await new Promise<void>(resolve => {
      process.once('SIGINT', resolve)
      process.once('SIGTERM', resolve)
      for (const p of procs) p.once('exit', () => { resolve() })
    })
    // The demo may have moved meanwhile: its destroy is signed for the host that runs it now.
    for (const v of instances) await last.signed('POST', `/v1/instances/${v.id}/destroy`, 'destroy', v.id, {}, undefined, await last.hostOf(v.id)).catch(() => {})
    const left = (await last.get<{ instances: InstanceView[] }>('/v1/instances').catch(() => ({ instances: [] }))).instances.filter(v => (v.state === 'running' || v.state === 'paused') && !instances.some(d => d.id === v.id))
    if (left.length > 0) o.print(`${left.length} instance(s) you deployed keep running while the cloud is stopped; it takes them up again when it starts (destroy them then with "bin/xenos instance destroy ID")`)
  } finally {
    await stopAll()
  }
}

async function importManifest (api: ApiClient, file: string): Promise<TemplateSummary> {
  const body = { text: await readFile(file, 'utf8') }
  return await api.signed<TemplateSummary>('POST', '/v1/templates', 'template.import', 'templates', body, body)
}

async function waitForHostFile (dir: string, proc: ChildProcess): Promise<HostFile> {
  for (let i = 0; i < 300; i++) {
    if (proc.exitCode !== null) throw new XenosError('INTERNAL', `xenosd in ${dir} exited with code ${proc.exitCode}; see ${join(dir, 'xenosd.log')}`)
    try {
      const info = JSON.parse(await readFile(join(dir, 'host.json'), 'utf8')) as HostFile
      if (info.pid === proc.pid) return info
    } catch {}
    await sleep(100)
  }
  throw new XenosError('TIMEOUT', `xenosd in ${dir} did not start within 30 s; see ${join(dir, 'xenosd.log')}`)
}

async function waitFor (fn: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await fn().catch(() => false)) return
    await sleep(200)
  }
  throw new XenosError('TIMEOUT', `${what} did not happen within ${timeoutMs / 1000} s`)
}
