/**
 * Distributing a template from one host to many over shaped links, in the same run:
 *   (a) Xenos: every receiving host pulls the template at once (swarm: chunks from the source and
 *       from each other),
 *   (b) sequential copies from the source (HTTP downloads one host after another, as a central
 *       repository would serve them),
 *   (c) the physical limit: one copy over one link.
 * Each host is a network namespace whose link is limited with tc tbf in both directions. Needs
 * root. Writes bench/results/swarm-RATE-latest.json.
 *
 *   sudo npm run bench:swarm                       # 8 receivers, 1 GiB, 200mbit links
 *   XENOS_BENCH_HOSTS=4 XENOS_BENCH_MIB=256 XENOS_BENCH_RATE=100mbit npm run bench:swarm
 */
import { execFileSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { open, readFile, rm, writeFile } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { BlobStore } from '../src/images/index.ts'
import { ROOT, tempDir } from '../test/helpers/cluster.ts'
import { apiOf, netnsDown, netnsUp, ns, startXenosdIn } from './netns.ts'
import { procStat, round, summary } from './stats.ts'

const RECEIVERS = Number(process.env.XENOS_BENCH_HOSTS ?? 8)
const MIB = Number(process.env.XENOS_BENCH_MIB ?? 1024)
const RATE = process.env.XENOS_BENCH_RATE ?? '200mbit'
const HOSTS = RECEIVERS + 1

async function randomFile (path: string, mib: number): Promise<void> {
  const fh = await open(path, 'w')
  for (let i = 0; i < mib; i++) await fh.write(randomBytes(1 << 20))
  await fh.close()
}

async function post (i: number, path: string, body: unknown): Promise<any> {
  const res = await fetch(`${apiOf(i)}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(3_600_000) })
  const json = await res.json()
  if (!res.ok) throw new Error(`${path} on ${ns(i)}: ${JSON.stringify(json)}`)
  return json
}

/** Seconds one HTTP download of `blob` from the source takes over host `i`'s link. */
function httpCopy (i: number, blob: string): number {
  const t0 = performance.now()
  execFileSync('ip', ['netns', 'exec', ns(i), 'curl', '-sf', '-o', '/dev/null', `${apiOf(1)}/v1/blobs/${blob}`])
  return (performance.now() - t0) / 1000
}

async function cpuOf (ps: ChildProcess[]): Promise<number> {
  return (await Promise.all(ps.map(async p => (await procStat(p.pid)).cpuSeconds))).reduce((a, b) => a + b, 0)
}

const procs: ChildProcess[] = []
const dirs: string[] = []
let result: Record<string, unknown> | undefined
try {
  netnsUp(HOSTS, RATE)
  // The source holds the template before it starts: its image files go straight into its store.
  const sourceDir = await tempDir('bench-swarm-h1')
  dirs.push(sourceDir)
  const store = new BlobStore(join(sourceDir, 'blobs'))
  const scratch = await tempDir('bench-swarm-files')
  dirs.push(scratch)
  const ids: string[] = []
  for (const [name, mib] of [['kernel', 1], ['initrd', 1], ['disk', MIB]] as const) {
    await randomFile(join(scratch, name), mib)
    ids.push(await store.putFile(join(scratch, name)))
  }
  await rm(scratch, { recursive: true, force: true })
  const [kernel = '', initrd = '', disk = ''] = ids
  procs.push((await startXenosdIn(1, sourceDir, [])).proc)
  const source = JSON.parse(await readFile(join(sourceDir, 'host.json'), 'utf8')) as { multiaddrs: string[] }
  const manifest = { name: 'big', version: '1', driver: 'qemu', resources: { cpu: 1, memory: 64 }, image: { kernel, initrd, disk, diskBytes: MIB << 20 } }
  const template = (await post(1, '/v1/templates', { manifest })).id as string
  for (let i = 2; i <= HOSTS; i++) {
    const dir = await tempDir(`bench-swarm-h${i}`)
    dirs.push(dir)
    procs.push((await startXenosdIn(i, dir, source.multiaddrs.slice(0, 1))).proc)
  }
  // Let every host hear the template's advert and fill its DHT routing table.
  await sleep(5000)

  const singleLink = httpCopy(2, disk)
  process.stderr.write(`one copy over one link: ${singleLink.toFixed(1)} s\n`)
  const sequential: number[] = []
  for (let i = 2; i <= HOSTS; i++) sequential.push(httpCopy(i, disk))
  const sequentialTotal = sequential.reduce((a, b) => a + b, 0)
  process.stderr.write(`sequential copies to ${RECEIVERS} hosts: ${sequentialTotal.toFixed(1)} s\n`)

  const cpuBefore = await cpuOf(procs)
  const t0 = performance.now()
  const swarm = await Promise.all(Array.from({ length: RECEIVERS }, async (_, k) => {
    await post(k + 2, `/v1/templates/${template}/pull`, {})
    return (performance.now() - t0) / 1000
  }))
  const swarmTotal = Math.max(...swarm)
  // How many of the machine's cores the hosts kept busy: near all of them means the CPU, not the links, set the pace.
  const coresBusy = (await cpuOf(procs) - cpuBefore) / swarmTotal
  process.stderr.write(`Xenos swarm to ${RECEIVERS} hosts: ${swarmTotal.toFixed(1)} s, ${coresBusy.toFixed(2)} of ${availableParallelism()} cores busy\n`)
  result = {
    benchmark: 'swarm',
    date: new Date().toISOString(),
    receivers: RECEIVERS,
    templateMiB: MIB,
    rate: RATE,
    singleLinkS: round(singleLink, 2),
    sequentialS: round(sequentialTotal, 2),
    swarmS: summary(swarm),
    swarmOverSingleLink: round(swarmTotal / singleLink, 2),
    swarmCoresBusy: round(coresBusy, 2),
    cores: availableParallelism(),
    sequentialOverSwarm: round(sequentialTotal / swarmTotal, 1),
  }
} finally {
  for (const p of procs) p.kill('SIGTERM')
  await sleep(1000)
  for (const p of procs) p.kill('SIGKILL')
  netnsDown(HOSTS)
  for (const d of dirs) await rm(d, { recursive: true, force: true })
}
await writeFile(join(ROOT, `bench/results/swarm-${RATE}-latest.json`), JSON.stringify(result, null, 2) + '\n')
const r = result as any
console.log(`| ${r.receivers} hosts, ${r.templateMiB} MiB, ${r.rate} links | time (s) | vs one link |`)
console.log('|---|---|---|')
console.log(`| (c) one copy over one link (physical limit) | ${r.singleLinkS} | 1.0× |`)
console.log(`| (b) sequential copies from the source | ${r.sequentialS} | ${round(r.sequentialS / r.singleLinkS, 1)}× |`)
console.log(`| (a) Xenos swarm, all hosts at once: last host done (p50 host) | ${r.swarmS.max} (${r.swarmS.p50}) | ${r.swarmOverSingleLink}× |`)
console.log(`\nDuring the swarm the hosts kept ${r.swarmCoresBusy} of ${r.cores} cores busy.`)
