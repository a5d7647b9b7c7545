/**
 * Where an idle host's CPU goes: N xenosd on loopback (default 16 and 32), one of them run with
 * V8's sampling profiler (--cpu-prof) over a quiet minute, its samples summed by the part of the
 * code they fell in (the library of the innermost frame that is not Node's own) and by the Xenos
 * function that started the work. Writes bench/results/profile-idle-latest.json and prints
 * tables.
 *
 *   node bench/profile-idle.ts 16 32
 */
import { readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { getJson, ROOT, startHost, stopHost, stopHosts, tempDir, type TestHost } from '../test/helpers/cluster.ts'
import { DEFAULT_ADVERT_TTL_MS } from '../src/overlay/index.ts'
import { procStat, round } from './stats.ts'

const sizes = process.argv.slice(2).map(Number).filter(n => n > 1)
const SIZES = sizes.length > 0 ? sizes : [16, 32]
const IDLE_MS = Number(process.env.XENOS_BENCH_IDLE_MS ?? 60_000)
/** xenosd's own default (the test helpers give hosts a short one). */
const ADVERT_TTL_S = DEFAULT_ADVERT_TTL_MS / 1000

interface ProfileNode { id: number, callFrame: { functionName: string, url: string }, children?: number[] }
interface Profile { nodes: ProfileNode[], samples: number[], timeDeltas: number[], startTime: number, endTime: number }

/** The part of the code a frame belongs to, from its file. */
function partOf (url: string, fn: string): string | undefined {
  if (url === '') return fn.startsWith('(') ? fn : undefined // (garbage collector), (program), (idle)
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)?.[1]
  if (pkg !== undefined) return pkg
  const src = /\/src\/([^/]+)\//.exec(url)?.[1]
  if (src !== undefined) return `xenos ${src}`
  return undefined // node: internals: counted with whatever called them
}

/** Sums the samples taken between `from` and `to` (microseconds of the monotonic clock, which V8's profiler and process.hrtime share). */
function analyse (p: Profile, from: number, to: number): { byPart: Array<[string, number]>, byXenos: Array<[string, number]>, byFunction: Array<[string, number]>, totalMs: number } {
  const nodes = new Map(p.nodes.map(n => [n.id, n]))
  const parent = new Map<number, number>()
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const byPart = new Map<string, number>()
  const byXenos = new Map<string, number>()
  const byFunction = new Map<string, number>()
  let total = 0
  let at = p.startTime
  p.samples.forEach((id, k) => {
    const ms = (p.timeDeltas[k] ?? 0) / 1000
    at += p.timeDeltas[k] ?? 0
    if (at < from || at > to) return
    const leaf = nodes.get(id)
    if (leaf?.callFrame.functionName === '(idle)') return
    total += ms
    let part: string | undefined
    let innermost: string | undefined
    let outerXenos: string | undefined
    for (let frame: number | undefined = id; frame !== undefined; frame = parent.get(frame)) {
      const f = nodes.get(frame)?.callFrame
      if (f === undefined) break
      part ??= partOf(f.url, f.functionName)
      if (innermost === undefined && part !== undefined) innermost = `${f.functionName || '(anonymous)'} (${f.url.replace(/^.*\/(node_modules|src)\//, '')})`
      if (f.url.includes('/src/') && !f.url.includes('node_modules')) outerXenos = `${f.functionName || '(anonymous)'} (${f.url.slice(f.url.indexOf('/src/') + 1)})`
    }
    byPart.set(part ?? 'node internals', (byPart.get(part ?? 'node internals') ?? 0) + ms)
    byFunction.set(innermost ?? 'node internals', (byFunction.get(innermost ?? 'node internals') ?? 0) + ms)
    const key = outerXenos ?? '(no Xenos frame: a library\'s own timer or I/O)'
    byXenos.set(key, (byXenos.get(key) ?? 0) + ms)
  })
  const sorted = (m: Map<string, number>): Array<[string, number]> => [...m].sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, round(v, 0)])
  return { byPart: sorted(byPart), byXenos: sorted(byXenos).slice(0, 15), byFunction: sorted(byFunction).slice(0, 25), totalMs: round(total, 0) }
}

const runs: unknown[] = []
for (const n of SIZES) {
  const profDir = await tempDir('bench-profile')
  const hosts: TestHost[] = [await startHost({ name: 'p0', advertTtl: ADVERT_TTL_S })]
  try {
    while (hosts.length < n - 1) {
      const batch = Math.min(4, n - 1 - hosts.length)
      hosts.push(...await Promise.all(Array.from({ length: batch }, async (_, i) =>
        await startHost({ name: `p${hosts.length + i}`, bootstrap: [...new Set([hosts[0]!, hosts[Math.floor(Math.random() * hosts.length)]!])], advertTtl: ADVERT_TTL_S }))))
    }
    const profiled = await startHost({ name: 'profiled', bootstrap: [hosts[0]!, hosts.at(-1)!], advertTtl: ADVERT_TTL_S, nodeArgs: ['--cpu-prof', '--cpu-prof-dir', profDir] })
    hosts.push(profiled)
    for (let t = 0; ; t++) {
      if ((await getJson(profiled, '/v1/search?kind=host')).results.length >= n) break
      if (t > 600) throw new Error('the hosts did not converge')
      await sleep(200)
    }
    // A minute for the last joins to settle: what is measured is a cloud at rest.
    await sleep(60_000)
    const micros = (): number => Number(process.hrtime.bigint() / 1000n)
    const from = micros()
    const before = await procStat(profiled.info.pid)
    await sleep(IDLE_MS)
    const after = await procStat(profiled.info.pid)
    const to = micros()
    await stopHost(profiled)
    const file = (await readdir(profDir)).find(f => f.endsWith('.cpuprofile'))
    if (file === undefined) throw new Error('no profile was written')
    const profile = JSON.parse(await readFile(join(profDir, file), 'utf8')) as Profile
    const idleCpuPercent = round(100 * (after.cpuSeconds - before.cpuSeconds) / (IDLE_MS / 1000), 2)
    runs.push({ hosts: n, idleMs: IDLE_MS, idleCpuPercent, rssMiB: round(after.rssMiB, 0), ...analyse(profile, from, to) })
    process.stderr.write(`profile-idle: ${n} hosts, the profiled host used ${idleCpuPercent}% of a core at idle\n`)
  } finally {
    await stopHosts(hosts)
    await rm(profDir, { recursive: true, force: true })
  }
}
await writeFile(join(ROOT, 'bench/results/profile-idle-latest.json'), JSON.stringify({ benchmark: 'profile-idle', date: new Date().toISOString(), runs }, null, 2) + '\n')
for (const r of runs as any[]) {
  console.log(`\n${r.hosts} hosts: ${r.idleCpuPercent}% of a core idle, ${r.rssMiB} MiB; ${r.totalMs} ms busy in the profile`)
  console.log('| part | ms | share |\n|---|---|---|')
  for (const [k, v] of r.byPart.slice(0, 12)) console.log(`| ${k} | ${v} | ${round(100 * v / r.totalMs, 1)}% |`)
  console.log('| Xenos function that started it | ms |\n|---|---|')
  for (const [k, v] of r.byXenos) console.log(`| ${k} | ${v} |`)
  console.log('| innermost function | ms |\n|---|---|')
  for (const [k, v] of r.byFunction) console.log(`| ${k} | ${v} |`)
}
