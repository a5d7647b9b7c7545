/**
 * A VM master whose host dies, made anew from its template (the baseline) or resumed from its
 * latest checkpoint (`checkpoint: 10s`), with 4 and 8 hosts:
 * - time from the host's death (SIGKILL of its xenosd and of everything it ran) until the new
 *   master serves its count;
 * - work lost: how far back the count is then from the last count read before the death (a
 *   master booted afresh counts from 0);
 * - what a checkpoint costs while all is well: the bytes a keeper fetches for each (chunks it
 *   already holds from the one before are not fetched again) and the longest gap a client
 *   polling the counter every 50 ms sees (the VM pauses while its memory is written).
 * The `counter` example (96 MiB of RAM) under QEMU (TCG where KVM does not work); adverts live
 * 6 s, liveness every 2 s, three misses (a VM's health check under TCG on a busy machine can miss
 * once). Writes bench/results/checkpoints-latest.json.
 *
 *   node --disable-warning=ExperimentalWarning bench/checkpoints.ts
 *   XENOS_BENCH_RUNS=1 node --disable-warning=ExperimentalWarning bench/checkpoints.ts
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { apiOf, cli, eventually, getJson, ROOT, startHost, stopHosts, tempDir, type TestHost } from '../test/helpers/cluster.ts'
import { count } from '../test/helpers/vm.ts'
import { round, summary } from './stats.ts'

const RUNS = Number(process.env.XENOS_BENCH_RUNS ?? 2)
const INTERVAL_S = 10
const HOST_ARGS = ['--cpu', '2', '--memory', '1024']

const description = (name: string, checkpoint: boolean): string => [
  `name: ${name}`,
  'components:',
  '  master:',
  '    template: counter',
  '    onFailure: replace',
  ...checkpoint ? [`    checkpoint: ${INTERVAL_S}s`] : [],
  '    liveness: { every: 2s, failAfter: 3 }',
  '    placement: { tags: { tier: master } }',
  '',
].join('\n')

async function fetchedBytes (h: TestHost): Promise<number> {
  const text = await (await fetch(`${h.api}/metrics`)).text()
  return Number(/^xenos_blob_fetched_bytes_total (\d+)$/m.exec(text)?.[1] ?? 0)
}

/** The longest time between two answers of the counter at `url`, polled every 50 ms until `stop` resolves. */
async function longestGap (url: string, stop: Promise<unknown>): Promise<number> {
  let done = false
  void stop.finally(() => { done = true })
  let last = Date.now()
  let gap = 0
  while (!done) {
    if (await count(url) !== undefined) {
      gap = Math.max(gap, Date.now() - last)
      last = Date.now()
    }
    await sleep(50)
  }
  return gap
}

const rows: unknown[] = []
for (const n of [4, 8]) {
  const dir = await tempDir(`bench-checkpoints-${n}`)
  const user = join(dir, 'user.pem')
  const a = await startHost({ name: 'bench-c-a', extraArgs: HOST_ARGS })
  const hosts: TestHost[] = [a]
  try {
    const tagged = (i: number): string[] => i < 3 ? ['--tag', 'tier=master'] : []
    hosts.push(...await Promise.all(Array.from({ length: n - 1 }, async (_, i) => await startHost({ name: `bench-c-${i + 1}`, bootstrap: [a], extraArgs: [...HOST_ARGS, ...tagged(i)] }))))
    await cli(a, user, ['template', 'build', join(ROOT, 'examples/counter')])
    await eventually(async () => (await getJson(a, '/v1/peers')).hosts.length >= n || undefined, 30_000, 'every host to be advertised')
    const api = await apiOf(a, user)
    const show = async (name: string): Promise<any> => (await api.signed<any>('GET', `/v1/deployments/${name}`, 'deployment.get', name, {})).components[0]
    for (const checkpoint of [false, true]) {
      const backMs: number[] = []
      const lost: number[] = []
      const perCheckpoint: number[] = []
      const gaps: number[] = []
      for (let run = 0; run < RUNS; run++) {
        const name = `c${checkpoint ? 'k' : 't'}${run}`
        const file = join(dir, `${name}.yaml`)
        await writeFile(file, description(name, checkpoint))
        const master = (await cli(a, user, ['apply', file])).components[0].instances[0]
        const url = (await api.signed<any>('GET', `/v1/instances/${master.id as string}`, 'get', master.id, {}, undefined, master.host)).endpoints[0].url as string
        if (checkpoint) {
          // Two checkpoints in a row, the second fetched beside the first; a client polls meanwhile.
          const first = await eventually(async () => (await show(name)).checkpoints[0], 120_000, 'a first checkpoint', 200)
          const keeper = hosts.find(h => h.info.peerId === first.host) as TestHost
          const before = await fetchedBytes(keeper)
          const second = eventually(async () => (await show(name)).checkpoints.find((cp: any) => cp.at > first.at), 120_000, 'a second checkpoint', 200)
          gaps.push(await longestGap(url, second))
          await eventually(async () => (await fetchedBytes(keeper)) > before || undefined, 10_000, 'the keeper\'s fetch to be counted')
          perCheckpoint.push(await fetchedBytes(keeper) - before)
        } else {
          await sleep(2 * INTERVAL_S * 1000)
        }
        const last = await eventually(async () => await count(url), 10_000, 'the counter')
        const dead = hosts.find(h => h.info.peerId === master.host) as TestHost
        const t0 = Date.now()
        await stopHosts([dead], 'SIGKILL')
        const replaced = await eventually(async () => {
          const m = await show(name)
          return m.state === 'running' && m.instances[0].id !== master.id ? m.instances[0] : undefined
        }, 300_000, 'the master to be made anew', 100)
        const newUrl = (await api.signed<any>('GET', `/v1/instances/${replaced.id as string}`, 'get', replaced.id, {}, undefined, replaced.host)).endpoints[0].url as string
        const resumed = await eventually(async () => await count(newUrl), 60_000, 'the new master to count', 50)
        backMs.push(Date.now() - t0)
        lost.push(Math.max(0, last - resumed))
        console.error(`${n} hosts, ${checkpoint ? 'checkpoint' : 'template'} run ${run + 1}: serving again after ${backMs.at(-1)} ms; count ${last} before, ${resumed} after`)
        await cli(a, user, ['terminate', name])
        hosts[hosts.indexOf(dead)] = await startHost({ name: dead.name, dataDir: dead.dataDir, bootstrap: [a], extraArgs: [...HOST_ARGS, '--tag', 'tier=master'] })
        await eventually(async () => (await getJson(a, '/v1/peers')).hosts.length >= n || undefined, 30_000, 'the host to be back')
      }
      rows.push({
        hosts: n,
        from: checkpoint ? 'checkpoint' : 'template',
        servingAgainMs: summary(backMs),
        countsLost: summary(lost),
        ...checkpoint ? { fetchedPerCheckpointMiB: summary(perCheckpoint.map(b => round(b / 2 ** 20))), longestClientGapMs: summary(gaps) } : {},
      })
    }
  } finally {
    await stopHosts(hosts, 'SIGKILL')
  }
}
const result = { benchmark: 'checkpoints', date: new Date().toISOString(), runs: RUNS, intervalS: INTERVAL_S, advertTtlS: 6, rows }
await writeFile(join(ROOT, 'bench/results/checkpoints-latest.json'), JSON.stringify(result, null, 2) + '\n')
console.log('| hosts | master made anew from | host dead → serving again, p50 / max (ms) | counts lost (10 a second), p50 / max | fetched per checkpoint, p50 (MiB) | longest client gap while checkpointing, p50 / max (ms) |')
console.log('|---|---|---|---|---|---|')
for (const r of rows as any[]) {
  const extra = r.from === 'checkpoint' ? `${r.fetchedPerCheckpointMiB.p50} | ${r.longestClientGapMs.p50} / ${r.longestClientGapMs.max}` : '— | —'
  console.log(`| ${r.hosts} | ${r.from} | ${r.servingAgainMs.p50} / ${r.servingAgainMs.max} | ${r.countsLost.p50} / ${r.countsLost.max} | ${extra} |`)
}
