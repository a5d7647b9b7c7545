/**
 * What an idle xenosd carries, part by part: resident memory of a Node process that only waits,
 * of one that has imported each library xenosd loads (alone, then all together), and of one idle
 * xenosd run from the sources (type stripping) and from the compiled build (scripts/build.sh),
 * each measured a while after it started. Writes bench/results/rss-parts-latest.json and prints
 * a table.
 *
 *   node bench/rss-parts.ts
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { XENOSD_NODE_FLAGS } from '../src/cli/local-cloud.ts'
import { NODE, ROOT, tempDir } from '../test/helpers/cluster.ts'
import { procStat, round } from './stats.ts'

const SETTLE_MS = Number(process.env.XENOS_BENCH_SETTLE_MS ?? 30_000)
const LIBRARIES = [
  'libp2p', '@chainsafe/libp2p-noise', '@chainsafe/libp2p-yamux', '@libp2p/tcp', '@libp2p/gossipsub', '@libp2p/kad-dht',
  '@libp2p/mdns', 'fastify', 'fastify-type-provider-zod', '@fastify/swagger', '@fastify/swagger-ui', '@fastify/static',
  '@foxglove/xmlrpc', 'prom-client', 'zod', 'pino', 'yaml', 'commander', 'node:sqlite',
]

interface Row { part: string, rssMiB: number, anonMiB: number }

/** Runs `args` under Node until it settles, and measures it. */
async function measure (part: string, args: string[]): Promise<Row> {
  const proc: ChildProcess = spawn(NODE, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] })
  try {
    await sleep(SETTLE_MS)
    if (proc.exitCode !== null) throw new Error(`${part}: exited with ${proc.exitCode}`)
    const s = await procStat(proc.pid)
    process.stderr.write(`rss-parts: ${part} ${round(s.rssMiB)} MiB (${round(s.anonMiB)} its own)\n`)
    return { part, rssMiB: round(s.rssMiB), anonMiB: round(s.anonMiB) }
  } finally {
    proc.kill('SIGKILL')
  }
}

/** A Node process that imports `modules`, then waits. */
function importing (modules: string[]): string[] {
  const code = `${modules.map(m => `await import(${JSON.stringify(m)})`).join(';')};setInterval(()=>{},1e3)`
  return [...XENOSD_NODE_FLAGS, '--input-type=module', '-e', code]
}

async function xenosd (entry: string): Promise<string[]> {
  const dir = await tempDir('rss-parts')
  return [...XENOSD_NODE_FLAGS, join(ROOT, entry), '--data', dir, '--api', '127.0.0.1:0', '--listen', '/ip4/127.0.0.1/tcp/0', '--log-level', 'warn']
}

try {
  await readFile(join(ROOT, 'dist/.built'))
} catch {
  throw new Error('no compiled build: run npm run build first')
}
const rows: Row[] = []
rows.push(await measure('Node, waiting', importing([])))
for (const m of LIBRARIES) rows.push(await measure(`Node + ${m}`, importing([m])))
rows.push(await measure('Node + all of them', importing(LIBRARIES)))
rows.push(await measure('xenosd from the sources', await xenosd('src/cli/xenosd.ts')))
rows.push(await measure('xenosd compiled', await xenosd('dist/cli/xenosd.js')))

await mkdir(join(ROOT, 'bench/results'), { recursive: true })
await writeFile(join(ROOT, 'bench/results/rss-parts-latest.json'), JSON.stringify({ at: new Date().toISOString(), node: process.version, settleMs: SETTLE_MS, rows }, null, 2) + '\n')
console.log('| process | RSS (MiB) | its own (MiB) |')
console.log('|---|---|---|')
for (const r of rows) console.log(`| ${r.part} | ${r.rssMiB} | ${r.anonMiB} |`)
