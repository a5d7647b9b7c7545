import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmod, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import { addressOf, ns } from './netns.ts'

/**
 * HashiCorp's Serf (Debian's `serf`: SWIM membership and gossip, the layer under Consul and
 * Nomad) in the benchmark's namespaces: the baseline the overlay is measured against. Each
 * agent runs an event handler that writes when a user event or a member's failure reached it.
 */
const run = promisify(execFile)
const RPC_PORT = 7373

export interface SerfCloud {
  dir: string
  agents: ChildProcess[]
}

const rpcOf = (i: number): string => `${addressOf(i)}:${RPC_PORT}`

/** Starts agents 1..n, each joining agent 1 and one started before it; resolves once agent 1 sees all alive. */
export async function startSerf (n: number, dir: string): Promise<SerfCloud> {
  const handler = join(dir, 'handler.sh')
  await writeFile(handler, `#!/bin/sh
now=$(date +%s%N)
case "$SERF_EVENT" in
  user) echo "$SERF_USER_EVENT $now" >> "${dir}/user-$SERF_SELF_NAME" ;;
  member-failed) while read -r name rest; do echo "$name $now" >> "${dir}/failed-$SERF_SELF_NAME"; done ;;
esac
cat > /dev/null
`)
  await chmod(handler, 0o755)
  // Encrypted, as the overlay's traffic is (Noise): Serf's shared-key AES-GCM.
  const key = randomBytes(32).toString('base64')
  const agents: ChildProcess[] = []
  const start = (i: number, join: number[]): ChildProcess => spawn('ip', ['netns', 'exec', ns(i), 'serf', 'agent', `-node=n${i}`,
    `-bind=${addressOf(i)}:7946`, `-rpc-addr=${rpcOf(i)}`, `-encrypt=${key}`, `-event-handler=${handler}`, '-log-level=err',
    ...join.map(j => `-join=${addressOf(j)}:7946`)], { stdio: ['ignore', 'ignore', 'inherit'] })
  agents.push(start(1, []))
  // A join to an agent not listening yet fails, and the agent exits: the first one comes up first.
  await until(async () => (await alive(1)) >= 1, 10_000, 'serf agent 1 did not start')
  for (let i = 2; i <= n; i++) agents.push(start(i, [...new Set([1, 1 + Math.floor(Math.random() * (i - 1))])]))
  await until(async () => (await alive(1)) >= n, 60_000, `serf agents did not all join (${n})`)
  return { dir, agents }
}

/** How many members agent `i` sees alive. */
async function alive (i: number): Promise<number> {
  try {
    const { stdout } = await run('serf', ['members', `-rpc-addr=${rpcOf(i)}`, '-status=alive'])
    return stdout.split('\n').filter(l => l.trim() !== '').length
  } catch {
    return 0
  }
}

async function until (check: () => Promise<boolean>, ms: number, message: string): Promise<void> {
  const deadline = Date.now() + ms
  while (!await check()) {
    if (Date.now() > deadline) throw new Error(message)
    await sleep(100)
  }
}

/** Epoch milliseconds at which each agent but `except` logged `what` in its `kind` file, once all have. */
async function arrivals (cloud: SerfCloud, kind: 'user' | 'failed', what: string, except: number[], ms: number): Promise<number[]> {
  const deadline = Date.now() + ms
  for (;;) {
    const times = await Promise.all(cloud.agents.map(async (_, k) => {
      if (except.includes(k + 1)) return undefined
      const text = await readFile(join(cloud.dir, `${kind}-n${k + 1}`), 'utf8').catch(() => '')
      const line = text.split('\n').find(l => l.startsWith(`${what} `))
      return line === undefined ? Number.NaN : Number(BigInt(line.split(' ')[1] ?? '0') / 1_000_000n)
    }))
    const got = times.filter((t): t is number => t !== undefined)
    if (got.every(t => !Number.isNaN(t))) return got
    if (Date.now() > deadline) throw new Error(`${what} reached ${got.filter(t => !Number.isNaN(t)).length} of ${got.length} serf agents`)
    await sleep(50)
  }
}

/** Milliseconds from sending a user event at agent `origin` until each other agent's handler ran. */
export async function serfEvent (cloud: SerfCloud, origin: number, name: string): Promise<number[]> {
  const t0 = Date.now()
  await run('serf', ['event', `-rpc-addr=${rpcOf(origin)}`, '-coalesce=false', name, 'x'])
  return (await arrivals(cloud, 'user', name, [origin], 30_000)).map(t => t - t0)
}

/** Milliseconds from the end of agent `victim` (`end` kills it or cuts its link) until every other agent but those in `except` has declared it failed. */
export async function serfFailure (cloud: SerfCloud, victim: number, end: () => void, except: number[] = []): Promise<number> {
  const t0 = Date.now()
  end()
  return Math.max(...await arrivals(cloud, 'failed', `n${victim}`, [victim, ...except], 120_000)) - t0
}

export async function stopSerf (cloud: SerfCloud): Promise<void> {
  for (const a of cloud.agents) a.kill('SIGKILL')
  await sleep(200)
}
