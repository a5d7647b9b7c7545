/**
 * Discovery and the overlay's cost, against Serf in the same run: N hosts (default 8, 16, 32),
 * each a network namespace on one bridge, so every packet a host sends or receives is counted on
 * its link. For Xenos (real xenosd) and for Serf (Debian's agents, encrypted):
 *  - idle cost: CPU, RSS, and packets and bytes per host per minute over a quiet window, a
 *    minute after the last host joined;
 *  - propagation: time from publishing on one host until every other host has it (Xenos: a
 *    template imported while every other host holds a waiting search; Serf: a user event with
 *    -coalesce=false, timed by each agent's event handler);
 *  - failure: time from a kill -9 of one host, and from cutting another's link (a machine that
 *    lost power: nothing tells its peers), until no other host's search lists it (Serf: until
 *    every agent has declared it failed);
 *  - Xenos's lookups: by name through the DHT only and from the gossip-fed cache, against one HTTP
 *    query to a central list of the same adverts.
 * Needs root (namespaces). Writes bench/results/discovery-latest.json and prints a table.
 *
 *   npm run bench -- 8 16 32
 */
import type { ChildProcess } from 'node:child_process'
import { createServer } from 'node:http'
import { rm, writeFile } from 'node:fs/promises'
import { cpus } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { ApiClient, loadOrCreateUserKey } from '../src/cli/index.ts'
import type { OwnerKey } from '../src/core/index.ts'
import { ROOT, tempDir } from '../test/helpers/cluster.ts'
import { apiOf, cutLink, healLink, linkCounters, netnsDown, netnsUp, startXenosdIn } from './netns.ts'
import { serfEvent, serfFailure, startSerf, stopSerf } from './serf.ts'
import { procStat, round, summary } from './stats.ts'

const sizes = process.argv.slice(2).map(Number).filter(n => n > 1)
const SIZES = sizes.length > 0 ? sizes : [8, 16, 32]
const TRIALS = 10
const LOOKUPS = 30
const IDLE_MS = Number(process.env.XENOS_BENCH_IDLE_MS ?? 30_000)
/** How long a cloud that has just come together is left before its idle cost is measured (the last hosts' joins settle). */
const SETTLE_MS = Number(process.env.XENOS_BENCH_SETTLE_MS ?? 60_000)

type Summary = ReturnType<typeof summary>
interface Idle { cpuPercent: Summary, rssMiB: Summary, anonMiB: Summary, packetsPerMin: Summary, kibPerMin: Summary }
/** Milliseconds until every other host stopped listing a host that was killed (-9), and one whose link was cut. */
interface Failure { killedMs: number, cutMs: number }
interface Measured { idle: Idle, propagationMs: { perHost: Summary, allHostsReached: Summary }, failureMs: Failure }

async function getJson (i: number, path: string): Promise<any> {
  const res = await fetch(`${apiOf(i)}${path}`, { signal: AbortSignal.timeout(60_000) })
  if (!res.ok) throw new Error(`${path} on host ${i}: ${res.status}`)
  return await res.json()
}

/** CPU and memory of each host's process, and what crossed its link, over a quiet window. */
async function idleCost (procs: ChildProcess[]): Promise<Idle> {
  const hosts = procs.map((_, k) => k + 1)
  const before = await Promise.all(procs.map(async p => await procStat(p.pid)))
  const linksBefore = await Promise.all(hosts.map(linkCounters))
  await sleep(IDLE_MS)
  const after = await Promise.all(procs.map(async p => await procStat(p.pid)))
  const linksAfter = await Promise.all(hosts.map(linkCounters))
  const perMin = (v: number): number => v / (IDLE_MS / 60_000)
  return {
    cpuPercent: summary(after.map((a, k) => 100 * (a.cpuSeconds - (before[k]?.cpuSeconds ?? 0)) / (IDLE_MS / 1000))),
    rssMiB: summary(after.map(a => a.rssMiB)),
    anonMiB: summary(after.map(a => a.anonMiB)),
    packetsPerMin: summary(linksAfter.map((l, k) => perMin(l.packets - (linksBefore[k]?.packets ?? 0)))),
    kibPerMin: summary(linksAfter.map((l, k) => perMin(l.bytes - (linksBefore[k]?.bytes ?? 0)) / 1024)),
  }
}

function propagationOf (trials: number[][]): Measured['propagationMs'] {
  return { perHost: summary(trials.flat()), allHostsReached: summary(trials.map(t => Math.max(...t))) }
}

async function measureSerf (n: number): Promise<Measured> {
  const dir = await tempDir(`bench-serf-${n}`)
  const cloud = await startSerf(n, dir)
  try {
    await sleep(SETTLE_MS)
    const idle = await idleCost(cloud.agents)
    const trials: number[][] = []
    for (let t = 0; t < TRIALS; t++) {
      trials.push(await serfEvent(cloud, 1 + (t % n), `bench-${n}-${t}`))
      await sleep(300)
    }
    const failureMs = {
      killedMs: await serfFailure(cloud, n, () => { cloud.agents[n - 1]?.kill('SIGKILL') }),
      cutMs: await serfFailure(cloud, n - 1, () => { cutLink(n - 1) }, [n]),
    }
    healLink(n - 1)
    return { idle, propagationMs: propagationOf(trials), failureMs }
  } finally {
    await stopSerf(cloud)
    await rm(dir, { recursive: true, force: true })
  }
}

interface XenosCloud { procs: ChildProcess[], peers: string[], dirs: string[] }

async function startXenos (n: number): Promise<XenosCloud> {
  const cloud: XenosCloud = { procs: [], peers: [], dirs: [] }
  const addrs: string[] = []
  const start = async (i: number, bootstrap: string[]): Promise<void> => {
    const dir = await tempDir(`bench-discovery-h${i}`)
    cloud.dirs[i - 1] = dir
    const h = await startXenosdIn(i, dir, bootstrap)
    cloud.procs[i - 1] = h.proc
    cloud.peers[i - 1] = h.peerId
    addrs[i - 1] = h.multiaddr
  }
  await start(1, [])
  for (let i = 2; i <= n; i += 4) {
    const started = Math.min(4, n - i + 1)
    await Promise.all(Array.from({ length: started }, async (_, k) => {
      const other = addrs[Math.floor(Math.random() * (i - 1))] ?? ''
      await start(i + k, [...new Set([addrs[0] ?? '', other])])
    }))
  }
  const t0 = performance.now()
  for (;;) {
    const seen = await Promise.all(cloud.procs.map(async (_, k) => (await getJson(k + 1, '/v1/search?kind=host')).results.length as number))
    if (seen.every(s => s >= n)) break
    if (performance.now() - t0 > 120_000) throw new Error(`hosts did not converge: ${seen.join(',')}`)
    await sleep(200)
  }
  return cloud
}

async function xenosPropagation (n: number, userKey: OwnerKey): Promise<{ trials: number[][], names: string[] }> {
  const clients = Array.from({ length: n }, (_, k) => new ApiClient({ api: apiOf(k + 1), key: userKey }))
  for (const c of clients) await c.hostId() // the host each request is signed for, asked before the clock runs
  const trials: number[][] = []
  const names: string[] = []
  for (let t = 0; t < TRIALS; t++) {
    const name = `bench-${n}-${t}-${Date.now() % 100000}`
    names.push(name)
    const origin = 1 + (t % n)
    let t0 = 0
    const waits = Array.from({ length: n }, (_, k) => k + 1).filter(i => i !== origin).map(async i => {
      const r = await getJson(i, `/v1/search?kind=template&q=${name}&waitMs=20000`)
      if (r.results.length === 0) throw new Error(`${name} never reached host ${i}`)
      return performance.now() - t0
    })
    await sleep(200) // let every waiting search register
    const body = { manifest: { name, version: '1', driver: 'process', command: 'true', tags: { bench: 'discovery' } } }
    t0 = performance.now()
    await clients[origin - 1]?.signed('POST', '/v1/templates', 'template.import', 'templates', body, body)
    trials.push(await Promise.all(waits))
    await sleep(300)
  }
  return { trials, names }
}

/** Milliseconds from the end of host `victim` (`end` kills it or cuts its link) until no other host's search (but those in `except`) lists it. */
async function xenosFailure (cloud: XenosCloud, victim: number, end: () => void, except: number[] = []): Promise<number> {
  const peer = cloud.peers[victim - 1] ?? ''
  const t0 = performance.now()
  end()
  const others = cloud.procs.map((_, k) => k + 1).filter(i => i !== victim && !except.includes(i))
  for (;;) {
    const listed = await Promise.all(others.map(async i => (await getJson(i, `/v1/search?kind=host&host=${peer}`)).results.length > 0))
    if (!listed.some(Boolean)) return performance.now() - t0
    if (performance.now() - t0 > 300_000) throw new Error(`host ${victim} still listed after 5 minutes`)
    await sleep(250)
  }
}

async function lookups (n: number, names: string[]): Promise<Record<string, unknown>> {
  // The central baseline: every advert the cloud holds, in one list, one HTTP query away.
  const all = (await getJson(1, '/v1/search')).results as Array<{ kind: string, body: { name?: string } }>
  const server = createServer((req, res) => {
    const q = new URL(req.url ?? '/', 'http://x').searchParams.get('q')
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ results: all.filter(a => a.kind === 'template' && a.body.name === q) }))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  const central = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`
  const dht: number[] = []
  let dhtMisses = 0
  const cache: number[] = []
  const base: number[] = []
  for (let k = 0; k < LOOKUPS; k++) {
    const name = names[k % names.length] ?? ''
    const from = 1 + ((k * 7 + 1) % n)
    let t = performance.now()
    // A lookup that finds nothing within its 5 s budget counts as a miss, not as a latency.
    if ((await getJson(from, `/v1/search?from=dht&kind=template&q=${name}`)).results.length === 0) dhtMisses++
    else dht.push(performance.now() - t)
    t = performance.now()
    await getJson(from, `/v1/search?from=cache&kind=template&q=${name}`)
    cache.push(performance.now() - t)
    t = performance.now()
    const c = await (await fetch(`${central}/?q=${name}`)).json() as { results: unknown[] }
    if (c.results.length === 0) throw new Error(`central list lacks ${name}`)
    base.push(performance.now() - t)
  }
  server.close()
  const [d, c, b] = [summary(dht), summary(cache), summary(base)]
  return { dht: d, dhtMisses, cache: c, central: b, dhtRatioP50: round(d.p50 / b.p50, 2), cacheRatioP50: round(c.p50 / b.p50, 2) }
}

async function measureXenos (n: number): Promise<Measured & { lookupMs: Record<string, unknown> }> {
  const cloud = await startXenos(n)
  try {
    await sleep(SETTLE_MS)
    const idle = await idleCost(cloud.procs)
    const prop = await xenosPropagation(n, (await loadOrCreateUserKey(join(cloud.dirs[0] ?? '', 'bench-user.pem'))).key)
    const lookupMs = await lookups(n, prop.names)
    const failureMs = {
      killedMs: await xenosFailure(cloud, n, () => { cloud.procs[n - 1]?.kill('SIGKILL') }),
      cutMs: await xenosFailure(cloud, n - 1, () => { cutLink(n - 1) }, [n]),
    }
    healLink(n - 1)
    return { idle, propagationMs: propagationOf(prop.trials), failureMs, lookupMs }
  } finally {
    for (const p of cloud.procs) p.kill('SIGKILL')
    await sleep(500)
    for (const d of cloud.dirs) await rm(d, { recursive: true, force: true })
  }
}

const ratio = (a: number, b: number): number => round(a / Math.max(b, 1e-9), 1)
const runs: any[] = []
const outFile = process.env.XENOS_BENCH_OUT ?? join(ROOT, 'bench/results/discovery-latest.json')
for (const n of SIZES) {
  netnsUp(n)
  try {
    process.stderr.write(`discovery: ${n} serf agents\n`)
    const serf = await measureSerf(n)
    process.stderr.write(`discovery: ${n} xenosd\n`)
    const xenos = await measureXenos(n)
    runs.push({
      hosts: n,
      serf,
      xenos,
      xenosOverSerf: {
        idleCpu: ratio(xenos.idle.cpuPercent.mean, serf.idle.cpuPercent.mean),
        rss: ratio(xenos.idle.rssMiB.mean, serf.idle.rssMiB.mean),
        anon: ratio(xenos.idle.anonMiB.mean, serf.idle.anonMiB.mean),
        packets: ratio(xenos.idle.packetsPerMin.mean, serf.idle.packetsPerMin.mean),
        bytes: ratio(xenos.idle.kibPerMin.mean, serf.idle.kibPerMin.mean),
        propagationP50: ratio(xenos.propagationMs.perHost.p50, serf.propagationMs.perHost.p50),
        killed: ratio(xenos.failureMs.killedMs, serf.failureMs.killedMs),
        cut: ratio(xenos.failureMs.cutMs, serf.failureMs.cutMs),
      },
    })
  } finally {
    netnsDown(n)
  }
  // Written after each size, so a failure at a larger one keeps the smaller ones' numbers.
  await writeFile(outFile, JSON.stringify({ benchmark: 'discovery', date: new Date().toISOString(), machine: { cpus: cpus().length }, trials: TRIALS, lookups: LOOKUPS, idleMs: IDLE_MS, runs }, null, 2) + '\n')
}

const row = (r: any, who: 'serf' | 'xenos'): string => {
  const m = r[who] as Measured
  const p = m.propagationMs
  return `| ${r.hosts} | ${who === 'serf' ? 'Serf' : 'Xenos'} | ${m.idle.cpuPercent.mean} | ${round(m.idle.rssMiB.mean, 0)} / ${round(m.idle.anonMiB.mean, 0)} | ${round(m.idle.packetsPerMin.mean, 0)} | ${round(m.idle.kibPerMin.mean, 0)} | ${p.perHost.p50} / ${p.perHost.p95} / ${p.perHost.max} | ${p.allHostsReached.p50} / ${p.allHostsReached.max} | ${round(m.failureMs.killedMs / 1000, 1)} / ${round(m.failureMs.cutMs / 1000, 1)} |`
}
console.log('| hosts | | idle CPU (% of a core) | RSS / its own (MiB) | packets / min | KiB / min | reaches a host p50 / p95 / max (ms) | reaches all p50 / max (ms) | host gone from every search: killed / link cut (s) |')
console.log('|---|---|---|---|---|---|---|---|---|')
for (const r of runs) {
  console.log(row(r, 'serf'))
  console.log(row(r, 'xenos'))
  const x = r.xenosOverSerf
  console.log(`| ${r.hosts} | Xenos / Serf | ${x.idleCpu}× | ${x.rss}× / ${x.anon}× | ${x.packets}× | ${x.bytes}× | ${x.propagationP50}× | | ${x.killed}× / ${x.cut}× |`)
}
console.log('\n| hosts | search, DHT only p50 (ms) | search, cache p50 (ms) | central HTTP p50 (ms) | DHT / central | cache / central |')
console.log('|---|---|---|---|---|---|')
for (const r of runs) {
  const l = r.xenos.lookupMs
  console.log(`| ${r.hosts} | ${l.dht.p50}${l.dhtMisses > 0 ? ` (${l.dhtMisses}/${LOOKUPS} missed)` : ''} | ${l.cache.p50} | ${l.central.p50} | ${l.dhtRatioP50}× | ${l.cacheRatioP50}× |`)
}
