/**
 * Live migration of the `counter` VM between two real xenosd processes on loopback, with guests
 * of 128 MiB, 512 MiB and 1 GiB, and both ways of treating the disk: `remote` (it stays on the
 * first host and is served to the second) and `copy` (`--copy-disk`: what the instance wrote is
 * mirrored to the second host first, and the first keeps nothing). For each move: the total time,
 * the downtime QEMU reports, and the downtime clients see: three of them, through `xenos
 * connect` on the source host, on the destination and on a third host, each ask for the count
 * over a fresh connection every 20 ms (a request not answered within a second counts as failed)
 * and record the longest gap between answers, and every
 * failed request. The baseline in the same run is each client's longest gap while nothing moves. Anchors from the papers: Xen
 * live migration 60 ms downtime for a game server (Clark et al. 2005); Goiri et al. 100%
 * availability. Writes bench/results/migration-latest.json.
 *
 *   npm run bench:migration            # 3 moves per size and disk mode
 *   XENOS_BENCH_RUNS=1 XENOS_BENCH_SIZES=128 XENOS_BENCH_DISKS=copy npm run bench:migration
 */
import { cp, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { ApiClient, loadOrCreateUserKey } from '../src/cli/index.ts'
import { cli, ROOT, startHost, stopHosts, tempDir } from '../test/helpers/cluster.ts'
import { countOnce } from '../test/helpers/vm.ts'
import { round, summary } from './stats.ts'

const RUNS = Number(process.env.XENOS_BENCH_RUNS ?? 3)
const SIZES = (process.env.XENOS_BENCH_SIZES ?? '128,512,1024').split(',').map(Number)
const DISKS = (process.env.XENOS_BENCH_DISKS ?? 'remote,copy').split(',') as Array<'remote' | 'copy'>
const HOST_ARGS = ['--cpu', '4', '--memory', '4096']

/** The counter example with `mib` of guest memory, as its own template. */
async function counterOf (mib: number): Promise<string> {
  const dir = join(await tempDir(`counter-${mib}`), 'counter')
  await cp(join(ROOT, 'examples/counter'), dir, { recursive: true })
  const manifest = join(dir, 'template.yaml')
  const text = (await readFile(manifest, 'utf8')).replace(/^name: counter$/m, `name: counter-${mib}`).replace(/^ {2}memory: \d+$/m, `  memory: ${mib}`)
  await writeFile(manifest, text)
  return dir
}

/**
 * A client asking over a fresh connection every few ms: the longest gap between answers, and
 * the failures (a request not answered within a second counts as failed, as for a client with a
 * one-second timeout).
 */
function probe (port: number): { stop: () => Promise<{ maxGapMs: number, answers: number, failures: number }> } {
  let running = true
  let last: number | undefined
  let maxGapMs = 0
  let answers = 0
  let failures = 0
  const loop = (async () => {
    while (running) {
      try {
        await countOnce(port, 1000)
        const now = performance.now()
        if (last !== undefined) maxGapMs = Math.max(maxGapMs, now - last)
        last = now
        answers++
      } catch {
        failures++
      }
      await sleep(20)
    }
  })()
  return { stop: async () => { running = false; await loop; return { maxGapMs: round(maxGapMs), answers, failures } } }
}

/** Where a client runs `xenos connect`: on the host the VM leaves, the one it moves to, or a third. */
const PLACES = ['source', 'destination', 'third'] as const
type Place = typeof PLACES[number]

interface Run {
  totalMs: number
  qemuDowntimeMs: number | null
  /** Per client place: the longest gap between answers while the VM moved, and its failed requests. */
  clients: Record<Place, { maxGapMs: number, failures: number, baselineMaxGapMs: number }>
  transferredBytes: number
  copiedDiskBytes: number
  memoryPath: string
}

/** Opens `xenos connect` to instance `id` on host `h`'s API; resolves with the local port and a way to close it. */
async function connectOn (api: ApiClient, id: string): Promise<{ port: number, close: () => Promise<void> }> {
  const stop = new AbortController()
  const events = api.signedEvents('/v1/connect', 'connect', id, { endpoint: null, address: '127.0.0.1', port: 0 }, { target: id }, stop.signal)
  const listening = (await events.next()).value as { data: { port: number } }
  return { port: listening.data.port, close: async () => { stop.abort(); await events.return(undefined) } }
}

const user = join(await tempDir('bench-keys'), 'user.pem')
const key = (await loadOrCreateUserKey(user)).key
const a = await startHost({ name: 'bench-mig-a', extraArgs: HOST_ARGS })
const b = await startHost({ name: 'bench-mig-b', bootstrap: [a], extraArgs: HOST_ARGS })
const c = await startHost({ name: 'bench-mig-c', bootstrap: [a], extraArgs: HOST_ARGS })
const rows: Array<Record<string, unknown>> = []
try {
  const apis: Record<Place, ApiClient> = { source: new ApiClient({ api: a.api, key }), destination: new ApiClient({ api: b.api, key }), third: new ApiClient({ api: c.api, key }) }
  const api = apis.source
  for (const mib of SIZES) {
    const template = await cli(a, user, ['template', 'build', await counterOf(mib)])
    for (const disk of DISKS) {
      const runs: Run[] = []
      for (let i = 0; i < RUNS; i++) {
        const inst = (await api.deploy(template.id, { hosts: [a.info.peerId], count: 1, spec: { name: null } }, { wait: true })).instances[0]!
        const ports = await Promise.all(PLACES.map(async place => await connectOn(apis[place], inst.id)))
        for (const p of ports) await countOnce(p.port)
        const quiet = ports.map(p => probe(p.port))
        await sleep(3000)
        const baseline = await Promise.all(quiet.map(async q => await q.stop()))
        const moving = ports.map(p => probe(p.port))
        await sleep(500)
        const params = { to: b.info.peerId, copyDisk: disk === 'copy' }
        const r = await api.watched<{ totalMs: number, downtimeMs: number | null, transferredBytes: number, copiedDiskBytes: number, memoryPath: string }>(`/v1/instances/${inst.id}/migrate`, 'migrate', inst.id, params, params, undefined, a.info.peerId)
        await sleep(1000)
        const seen = await Promise.all(moving.map(async m => await m.stop()))
        for (const p of ports) await p.close()
        const clients = Object.fromEntries(PLACES.map((place, n) => [place, { maxGapMs: seen[n]!.maxGapMs, failures: seen[n]!.failures, baselineMaxGapMs: baseline[n]!.maxGapMs }])) as Run['clients']
        runs.push({ totalMs: r.totalMs, qemuDowntimeMs: r.downtimeMs, clients, transferredBytes: r.transferredBytes, copiedDiskBytes: r.copiedDiskBytes, memoryPath: r.memoryPath })
        console.error(`${mib} MiB, ${disk} disk, run ${i + 1}: ${JSON.stringify(runs.at(-1))}`)
        await api.signed('POST', `/v1/instances/${inst.id}/destroy`, 'destroy', inst.id, {}, undefined, b.info.peerId)
      }
      rows.push({
        guestMiB: mib,
        disk,
        totalMs: summary(runs.map(r => r.totalMs)),
        qemuDowntimeMs: summary(runs.map(r => r.qemuDowntimeMs ?? NaN)),
        clients: Object.fromEntries(PLACES.map(place => [place, {
          maxGapMs: summary(runs.map(r => r.clients[place].maxGapMs)),
          baselineMaxGapMs: summary(runs.map(r => r.clients[place].baselineMaxGapMs)),
          failedRequests: runs.reduce((n, r) => n + r.clients[place].failures, 0),
        }])),
        memorySentMiB: summary(runs.map(r => r.transferredBytes / 2 ** 20)),
        diskCopiedMiB: summary(runs.map(r => r.copiedDiskBytes / 2 ** 20)),
        runs,
      })
    }
  }
} finally {
  await stopHosts([a, b, c])
}
const result = { benchmark: 'migration', date: new Date().toISOString(), runsPerSize: RUNS, anchors: { xenDowntimeMs: 60, goiriAvailability: '100%' }, rows }
await writeFile(join(ROOT, 'bench/results/migration-latest.json'), JSON.stringify(result, null, 2) + '\n')
const gap = (r: any, place: Place): string => `${r.clients[place].maxGapMs.p50} / ${r.clients[place].maxGapMs.max} (${r.clients[place].failedRequests})`
console.log('| guest | disk | total p50 / max (s) | QEMU downtime p50 / max (ms) | longest gap p50 / max (ms) (failed requests): client on the source | on the destination | on a third host | longest gap, nothing moving p50 (ms) | memory sent p50 (MiB) | disk copied p50 (MiB) |')
console.log('|---|---|---|---|---|---|---|---|---|---|')
for (const r of rows as any[]) {
  console.log(`| ${r.guestMiB} MiB | ${r.disk} | ${round(r.totalMs.p50 / 1000)} / ${round(r.totalMs.max / 1000)} | ${r.qemuDowntimeMs.p50} / ${r.qemuDowntimeMs.max} | ${gap(r, 'source')} | ${gap(r, 'destination')} | ${gap(r, 'third')} | ${Math.max(...PLACES.map(p => r.clients[p].baselineMaxGapMs.p50))} | ${r.memorySentMiB.p50} | ${r.diskCopiedMiB.p50} |`)
}
