/**
 * Discovery benchmark: N real xenosd processes on loopback (default 8, 16, 32).
 *  - propagation: time from importing a template on one host until every other host's search
 *    returns it (each host holds a waiting search, so there is no polling delay);
 *  - lookup: search by name through the DHT only (`from=dht`), against a baseline of one HTTP
 *    query to a central list holding the same adverts, served from this process;
 *  - idle cost: RSS and CPU of each xenosd over a quiet window.
 * Writes bench/results/discovery-latest.json (and a dated copy) and prints a table.
 *
 *   npm run bench -- 8 16 32
 */
import { createServer } from 'node:http'
import { readFile, writeFile } from 'node:fs/promises'
import { cpus } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { getJson, ROOT, startHost, stopHosts, type TestHost } from '../test/helpers/cluster.ts'
import { round, summary } from './stats.ts'

const sizes = process.argv.slice(2).map(Number).filter(n => n > 1)
const SIZES = sizes.length > 0 ? sizes : [8, 16, 32]
const TRIALS = 10
const LOOKUPS = 30
const IDLE_MS = 10_000

async function procStat (pid: number): Promise<{ ticks: number, rssMiB: number }> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return { ticks: Number(f[11]) + Number(f[12]), rssMiB: Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024 }
}

async function startCloud (n: number): Promise<TestHost[]> {
  const hosts = [await startHost({ name: 'h0', advertTtl: 30 })]
  while (hosts.length < n) {
    const batch = Math.min(4, n - hosts.length)
    const started = await Promise.all(Array.from({ length: batch }, async (_, i) => {
      const peers = [hosts[0]!, hosts[Math.floor(Math.random() * hosts.length)]!]
      return await startHost({ name: `h${hosts.length + i}`, bootstrap: [...new Set(peers)], advertTtl: 30 })
    }))
    hosts.push(...started)
  }
  return hosts
}

async function converge (hosts: TestHost[]): Promise<number> {
  const t0 = performance.now()
  for (;;) {
    const seen = await Promise.all(hosts.map(async h => (await getJson(h, '/v1/search?kind=host')).results.length as number))
    if (seen.every(s => s >= hosts.length)) return performance.now() - t0
    if (performance.now() - t0 > 120_000) throw new Error(`hosts did not converge: ${seen.join(',')}`)
    await sleep(200)
  }
}

async function idleCost (hosts: TestHost[]): Promise<{ rssMiB: ReturnType<typeof summary>, cpuPercent: ReturnType<typeof summary> }> {
  const before = await Promise.all(hosts.map(async h => await procStat(h.info.pid)))
  await sleep(IDLE_MS)
  const after = await Promise.all(hosts.map(async h => await procStat(h.info.pid)))
  return {
    rssMiB: summary(after.map(a => a.rssMiB)),
    cpuPercent: summary(after.map((a, i) => (a.ticks - (before[i]?.ticks ?? 0)) / (IDLE_MS / 1000))), // ticks are 1/100 s
  }
}

async function propagation (hosts: TestHost[], n: number): Promise<{ perHost: number[], allReached: number[], names: string[] }> {
  const perHost: number[] = []
  const allReached: number[] = []
  const names: string[] = []
  for (let trial = 0; trial < TRIALS; trial++) {
    const name = `bench-${n}-${trial}-${Date.now() % 100000}`
    names.push(name)
    const origin = hosts[trial % hosts.length]!
    const others = hosts.filter(h => h !== origin)
    let t0 = 0
    const waits = others.map(async h => {
      const r = await getJson(h, `/v1/search?kind=template&q=${name}&waitMs=20000`)
      if (r.results.length === 0) throw new Error(`${name} never reached ${h.name}`)
      return performance.now() - t0
    })
    await sleep(200) // let every waiting search register
    t0 = performance.now()
    await fetch(`${origin.api}/v1/templates`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ manifest: { name, version: '1', driver: 'process', command: 'true', tags: { bench: 'discovery' } } }),
    })
    const delays = await Promise.all(waits)
    perHost.push(...delays)
    allReached.push(Math.max(...delays))
    await sleep(300)
  }
  return { perHost, allReached, names }
}

async function lookups (hosts: TestHost[], names: string[]): Promise<{ dht: number[], dhtMisses: number, cache: number[], central: number[] }> {
  // The central baseline: every advert the cloud holds, in one list, one HTTP query away.
  const all = (await getJson(hosts[0]!, '/v1/search')).results as Array<{ kind: string, body: { name?: string } }>
  const server = createServer((req, res) => {
    const q = new URL(req.url ?? '/', 'http://x').searchParams.get('q')
    const results = all.filter(a => a.kind === 'template' && a.body.name === q)
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ results }))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  const central = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`
  const dht: number[] = []
  let dhtMisses = 0
  const cache: number[] = []
  const base: number[] = []
  for (let i = 0; i < LOOKUPS; i++) {
    const name = names[i % names.length]!
    const from = hosts[(i * 7 + 1) % hosts.length]!
    let t = performance.now()
    const r = await getJson(from, `/v1/search?from=dht&kind=template&q=${name}`)
    // A lookup that finds nothing within its 5 s budget counts as a miss, not as a latency.
    if (r.results.length === 0) dhtMisses++
    else dht.push(performance.now() - t)
    t = performance.now()
    await getJson(from, `/v1/search?from=cache&kind=template&q=${name}`)
    cache.push(performance.now() - t)
    t = performance.now()
    const c = await (await fetch(`${central}/?q=${name}`)).json() as { results: unknown[] }
    if (c.results.length === 0) throw new Error(`central list lacks ${name}: it holds ${all.filter(a => a.kind === 'template').map(a => a.body.name).join(', ')}`)
    base.push(performance.now() - t)
  }
  server.close()
  return { dht, dhtMisses, cache, central: base }
}

const runs: unknown[] = []
const outFile = process.env.XENOS_BENCH_OUT ?? join(ROOT, 'bench/results/discovery-latest.json')
for (const n of SIZES) {
  process.stderr.write(`discovery: starting ${n} hosts\n`)
  const t0 = performance.now()
  const hosts = await startCloud(n)
  const startMs = performance.now() - t0
  try {
    const convergeMs = await converge(hosts)
    process.stderr.write(`discovery: ${n} hosts up in ${round(startMs / 1000)} s, converged ${round(convergeMs)} ms later\n`)
    await sleep(3000)
    const idle = await idleCost(hosts)
    const prop = await propagation(hosts, n)
    const look = await lookups(hosts, prop.names)
    const dht = summary(look.dht)
    const central = summary(look.central)
    const cache = summary(look.cache)
    runs.push({
      hosts: n,
      startSeconds: round(startMs / 1000),
      convergeMs: round(convergeMs),
      propagationMs: { perHost: summary(prop.perHost), allHostsReached: summary(prop.allReached) },
      lookupMs: { dht, dhtMisses: look.dhtMisses, cache, central, dhtRatioP50: round(dht.p50 / central.p50, 2), cacheRatioP50: round(cache.p50 / central.p50, 2) },
      idle,
    })
  } finally {
    await stopHosts(hosts)
  }
  // Written after each size, so a failure at a larger one keeps the smaller ones' numbers.
  await writeFile(outFile, JSON.stringify({ benchmark: 'discovery', date: new Date().toISOString(), machine: { cpus: cpus().length }, trials: TRIALS, lookups: LOOKUPS, runs }, null, 2) + '\n')
}

console.log('| hosts | advert reaches a host p50 / p95 / max (ms) | reaches all hosts p50 / max (ms) | search, DHT only p50 (ms) | search, cache p50 (ms) | central HTTP p50 (ms) | DHT / central | cache / central | xenosd RSS mean (MiB) | idle CPU mean (% of a core) |')
console.log('|---|---|---|---|---|---|---|---|---|---|')
for (const r of runs as any[]) {
  const p = r.propagationMs
  console.log(`| ${r.hosts} | ${p.perHost.p50} / ${p.perHost.p95} / ${p.perHost.max} | ${p.allHostsReached.p50} / ${p.allHostsReached.max} | ${r.lookupMs.dht.p50}${r.lookupMs.dhtMisses > 0 ? ` (${r.lookupMs.dhtMisses}/${LOOKUPS} missed)` : ''} | ${r.lookupMs.cache.p50} | ${r.lookupMs.central.p50} | ${r.lookupMs.dhtRatioP50}× | ${r.lookupMs.cacheRatioP50}× | ${round(r.idle.rssMiB.mean, 0)} | ${r.idle.cpuPercent.mean} |`)
}
