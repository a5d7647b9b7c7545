import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { ApiClient, loadOrCreateUserKey } from '../../src/cli/index.ts'
import { XENOSD_NODE_FLAGS } from '../../src/cli/local-cloud.ts'

/** Real `xenosd` processes on loopback, each with its own data dir, for multi-host tests. */
export const ROOT = resolve(import.meta.dirname, '..', '..')
export const NODE = process.execPath

export interface HostFile {
  peerId: string
  multiaddrs: string[]
  api: string
  pid: number
}

export interface TestHost {
  name: string
  dataDir: string
  proc: ChildProcess
  info: HostFile
  api: string
}

export interface StartOptions {
  name: string
  bootstrap?: TestHost[]
  advertTtl?: number
  extraArgs?: string[]
  /** Options for node itself, before the script: a heap limit. */
  nodeArgs?: string[]
  /** An xenosd command to run in place of the sources: bin/xenosd (compiled once built), or an installed one. */
  executable?: string
  dataDir?: string
}

let apiPort = 17_400 + (process.pid % 500) * 4

export async function tempDir (prefix: string): Promise<string> {
  return await mkdtemp(join(tmpdir(), `xenos-${prefix}-`))
}

/** Starts `xenosd` and resolves once it has written `host.json` and answers on its API. */
export async function startHost (o: StartOptions): Promise<TestHost> {
  const dataDir = o.dataDir ?? await tempDir(o.name)
  await rm(join(dataDir, 'host.json'), { force: true })
  const port = apiPort++
  const args = [
    '--data', dataDir, '--api', `127.0.0.1:${port}`, '--listen', '/ip4/127.0.0.1/tcp/0', '--name', o.name,
    '--advert-ttl', String(o.advertTtl ?? 6), '--log-level', process.env.XENOS_TEST_LOG ?? 'warn',
    ...(o.bootstrap ?? []).flatMap(h => ['--bootstrap', h.info.multiaddrs[0] ?? '']),
    ...(o.extraArgs ?? []),
  ]
  const proc = o.executable !== undefined
    ? spawn(o.executable, args, { stdio: ['ignore', 'inherit', 'inherit'] })
    : spawn(NODE, [...XENOSD_NODE_FLAGS, ...(o.nodeArgs ?? []), join(ROOT, 'src/cli/xenosd.ts'), ...args], { stdio: ['ignore', 'inherit', 'inherit'] })
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`xenosd ${o.name} exited with ${proc.exitCode}`)
    try {
      const info = JSON.parse(await readFile(join(dataDir, 'host.json'), 'utf8')) as HostFile
      if (info.pid === proc.pid) return { name: o.name, dataDir, proc, info, api: info.api }
    } catch {}
    await sleep(100)
  }
  proc.kill('SIGKILL')
  throw new Error(`xenosd ${o.name} did not start within 30 s`)
}

export async function stopHost (h: TestHost, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (h.proc.exitCode !== null || h.proc.signalCode !== null) return
  const exited = new Promise(r => h.proc.once('exit', r))
  h.proc.kill(signal)
  await exited
}

/**
 * Stops every host for good at the end of a test: a host's clean stop leaves its instances
 * running for its next start, which never comes, so whatever still runs from its data dir
 * (VMs, process instances, disk servers, relays) is killed too, and the next test starts on an
 * idle machine. With SIGKILL, a machine dies: its xenosd and all it ran end at once.
 */
export async function stopHosts (hosts: TestHost[], signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  await Promise.all(hosts.map(async h => { await stopHost(h, signal) }))
  const dirs = [...new Set(hosts.map(h => h.dataDir))]
  for (const pid of await readdir('/proc').catch(() => [])) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')
    if (dirs.some(d => cmdline.includes(d))) {
      try { process.kill(Number(pid), 'SIGKILL') } catch {}
    }
  }
}

/** Runs the `xenos` CLI with `--json` against a host; resolves with parsed stdout or rejects with stderr. */
export async function cli (h: TestHost | string, user: string, args: string[], json = true): Promise<any> {
  return (await cliRun(h, user, args, json)).result
}

/** Like `cli`, and also gives what the command said on stderr (its progress). */
export async function cliRun (h: TestHost | string, user: string, args: string[], json = true): Promise<{ result: any, stderr: string }> {
  const api = typeof h === 'string' ? h : h.api
  const argv = ['--disable-warning=ExperimentalWarning', join(ROOT, 'src/cli/main.ts'), '--api', api, '--key', user, ...(json ? ['--json'] : []), ...args]
  const child = spawn(NODE, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  // 'close', not 'exit': the last of what it wrote (its error) may come after it exited.
  const code = await new Promise<number | null>(r => child.once('close', r))
  // A command that fails part-way (a deploy with one host failing) explains itself on stdout, after its progress on stderr.
  if (code !== 0) throw new CliError([readableErrors(stderr), stdout.trim()].filter(s => s !== '').join('\n'), code)
  return { result: json ? JSON.parse(stdout) : stdout, stderr }
}

/** What the CLI said on stderr, its error (a line of JSON with --json) written as it reads without. */
function readableErrors (stderr: string): string {
  return stderr.trim().split('\n').map(line => {
    try {
      const { error } = JSON.parse(line) as { error?: { code: string, message: string } }
      return error === undefined ? line : `error ${error.code}: ${error.message}`
    } catch {
      return line
    }
  }).join('\n')
}

/** Starts a long-running CLI command with `--json`; resolves once it printed its first line, with that line parsed. */
export async function cliStart (h: TestHost, user: string, args: string[]): Promise<{ first: any, child: ChildProcess, stop: () => Promise<void> }> {
  const argv = ['--disable-warning=ExperimentalWarning', join(ROOT, 'src/cli/main.ts'), '--api', h.api, '--key', user, '--json', ...args]
  const child = spawn(NODE, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const first = await new Promise<any>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString()
      const end = stdout.indexOf('\n')
      if (end >= 0) resolve(JSON.parse(stdout.slice(0, end)))
    })
    child.once('close', code => { reject(new CliError(readableErrors(stderr), code)) })
  })
  return {
    first,
    child,
    stop: async () => {
      if (child.exitCode !== null) return
      const exited = new Promise(r => child.once('exit', r))
      child.kill('SIGINT')
      await exited
    },
  }
}

/** The phases a deploy's progress lines on stderr showed for host `name`, in order. */
export function rolloutPhases (stderr: string, name: string): string[] {
  return stderr.split('\n').filter(l => l.startsWith(`${name}: `)).map(l => l.slice(name.length + 2).split(' ')[0] ?? '')
}

export class CliError extends Error {
  readonly exitCode: number | null
  constructor (message: string, exitCode: number | null) {
    super(message)
    this.exitCode = exitCode
  }
}

export async function getJson<T = any>(h: TestHost, path: string): Promise<T> {
  const res = await fetch(`${h.api}${path}`)
  return await res.json() as T
}

/** The key that operates host `h`: the one it made in its data dir (no --operator was given). */
export function operatorOf (h: TestHost): string {
  return join(h.dataDir, 'operator.pem')
}

/** An API client of host `h` that signs with the key in file `user`. */
export async function apiOf (h: TestHost, user: string): Promise<ApiClient> {
  return new ApiClient({ api: h.api, key: (await loadOrCreateUserKey(user)).key })
}

/** Instance `id` as its owner (the key in `user`) sees it, asked through host `h` of the host it runs on. */
export async function viewOf (h: TestHost, user: string, id: string): Promise<any> {
  const api = await apiOf(h, user)
  return await api.signed('GET', `/v1/instances/${id}`, 'get', id, {}, undefined, await api.hostOf(id))
}

/** What anyone sees of instance `id` through host `h` (its advert), or undefined. */
export async function publicViewOf (h: TestHost, id: string): Promise<any> {
  return (await getJson(h, '/v1/instances')).instances.find((i: any) => i.id === id)
}

/** Polls `fn` until it returns a truthy value or `timeoutMs` passes. */
export async function eventually<T>(fn: () => Promise<T | undefined | false>, timeoutMs = 15_000, what = 'condition', everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < deadline) {
    try {
      const v = await fn()
      if (v !== undefined && v !== false) return v
    } catch (err) {
      last = err
    }
    await sleep(everyMs)
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`)
}

/** GETs a URL with a short timeout; resolves with the body or undefined when it does not answer. */
export async function httpGet (url: string, timeoutMs = 1500): Promise<string | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) })
    return await res.text()
  } catch {
    return undefined
  }
}

export const HELLO_MANIFEST = join(ROOT, 'examples/hello.yaml')
