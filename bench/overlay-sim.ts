/**
 * The overlay at sizes this machine cannot run as processes: N real Overlay instances (the same
 * code as xenosd's: libp2p with Noise, Yamux, gossipsub, the DHT, probes and anti-entropy) in one
 * process, over libp2p's in-memory transport, on a virtual clock (virtual-clock.ts). Every link
 * has the same one-way latency; computing takes no virtual time, so the times are those of N
 * machines on such a network, whatever this machine's two cores take to compute them.
 *
 * For each N it counts, per host, what the host writes: frames (writes to a connection, which
 * become packets) and messages by protocol (writes to a stream). It reports:
 *  - join: the time until every host lists every other, hosts starting 20 ms apart;
 *  - idle: frames, KiB and messages per host per minute, once every host has probed each of its
 *    neighbours twice (a minute at least) after the last join;
 *  - propagation: trials of one new advert from a random host: the time to reach each host and
 *    all hosts, the gossip hops it took, and how many copies of it were sent in all;
 *  - failure: the time until no host lists a host that stopped (its connections close) and one
 *    that went silent (it sends nothing more: a cut link or lost power).
 *
 *   npm run bench:overlay-sim -- [N ...] [--latency MS] [--trials T]     (default 64 128 256)
 *
 * Each N runs in a process of its own; results go to bench/results/overlay-sim-latest.json. The
 * wall time grows faster than N (every connection's handshakes and streams are computed): about
 * 2 minutes at 64 hosts, 9 at 128 on this machine.
 */
import { spawnSync } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { cpus, totalmem } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import type { GossipsubMessage } from '@libp2p/gossipsub'
import type { MessageStream, Stream, StreamMuxerFactory } from '@libp2p/interface'
import type { Advert, HostBody } from '../src/core/index.ts'
import type { Overlay as OverlayType } from '../src/overlay/index.ts'
import { ROOT } from '../test/helpers/cluster.ts'
import { round, summary } from './stats.ts'
import { VirtualClock } from './virtual-clock.ts'

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    latency: { type: 'string', default: '10' },
    trials: { type: 'string', default: '5' },
    one: { type: 'boolean', default: false },
  },
})
const LATENCY_MS = Number(opts.latency)
const TRIALS = Number(opts.trials)
const JOIN_GAP_MS = 20
const SETTLE_MS = 60_000
const IDLE_MS = 60_000
const GOSSIP_PREFIX = '/meshsub/'
const DHT_PROTOCOL = '/xenos/kad/'

/** What one host wrote. */
interface Sent { frames: number, bytes: number, messages: Map<string, number>, copies: Map<string, number> }

if (opts.one) {
  const n = Number(positionals[0])
  process.stdout.write(JSON.stringify(await simulate(n)) + '\n')
  process.exit(0)
}

const sizes = positionals.length > 0 ? positionals.map(Number) : [64, 128, 256]
const runs: unknown[] = []
const outFile = join(ROOT, 'bench', 'results', 'overlay-sim-latest.json')
for (const n of sizes) {
  process.stderr.write(`overlay-sim: ${n} hosts\n`)
  const heapMiB = Math.floor(totalmem() / 2 ** 20 * 0.85)
  const child = spawnSync(process.execPath, [`--max-old-space-size=${heapMiB}`, '--disable-warning=ExperimentalWarning', import.meta.filename, '--one', String(n), '--latency', String(LATENCY_MS), '--trials', String(TRIALS)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 * 2 ** 20 })
  const last = child.stdout.trim().split('\n').at(-1) ?? ''
  if (child.status !== 0 || !last.startsWith('{')) {
    // Say where it stopped: a size that does not fit in memory is a result too.
    runs.push({ hosts: n, failed: child.signal ?? `exit ${child.status}` })
    process.stderr.write(`overlay-sim: ${n} hosts did not finish (${child.signal ?? `exit ${child.status}`})\n`)
    break
  }
  runs.push(JSON.parse(last))
  await writeFile(outFile, JSON.stringify({ benchmark: 'overlay-sim', date: new Date().toISOString(), machine: { cpus: cpus().length, memMiB: Math.round(totalmem() / 2 ** 20) }, latencyMs: LATENCY_MS, trials: TRIALS, runs }, null, 2) + '\n')
}
printTable(runs as Run[])

interface Run {
  hosts: number
  joinMs: number
  converged: boolean
  idle: { framesPerMin: Summary, kibPerMin: Summary, messagesPerMinByProtocol: Record<string, number>, connections: Summary }
  propagation: { perHostMs: Summary, allReachedMs: Summary, hops: Summary, maxHops: Summary, gossipCopiesPerAdvert: Summary, dhtCopiesPerAdvert: Summary, gossipMessagesPerAdvertAboveIdle: Summary }
  failure: { stoppedMs: number, silentMs: number }
  memory: { rssMiBPerHost: number, heapMiBPerHost: number }
  wallSeconds: number
}
type Summary = ReturnType<typeof summary>

async function simulate (n: number): Promise<Run> {
  const wall0 = process.hrtime.bigint()
  const clock = new VirtualClock()
  clock.install()
  // Loaded only now, so that every timer they make is the virtual clock's.
  const [{ Overlay }, { xenosMuxer }, { PROBE_INTERVAL_MS }, { memory }, { generateKeyPair }, { pino }] = await Promise.all([
    import('../src/overlay/index.ts'), import('../src/overlay/libp2p.ts'), import('../src/overlay/liveness.ts'), import('@libp2p/memory'), import('@libp2p/crypto/keys'), import('pino'),
  ])
  type Host = { k: number, overlay: OverlayType, sent: Sent, silent: boolean, stopped: boolean }
  const log = pino({ level: 'silent' })
  const hosts: Host[] = []
  const byPeer = new Map<string, Host>()
  let marker: Buffer | undefined
  /** Each watched stream's way to count its negotiation so far under the protocol it chose. */
  const unattributed = new Set<() => void>()
  const attributeNegotiation = (): void => { for (const a of unattributed) a() }
  const wallSeconds = (): number => round(Number(process.hrtime.bigint() - wall0) / 1e9, 0)

  /** Waits for `p`, running the clock meanwhile (whatever `p` waits for is on it). */
  async function run<T> (p: Promise<T>, limitMs = 120_000): Promise<T> {
    let settled = false
    p.then(() => { settled = true }, () => { settled = true })
    if (!await clock.until(() => settled, limitMs)) throw new Error(`still waiting after ${limitMs} virtual ms`)
    return await p
  }

  /** The overlay's muxer over a connection that delays every write by the link's latency and counts it. */
  function linkFor (host: Host): () => StreamMuxerFactory {
    const inner = xenosMuxer()
    return () => {
      const factory = inner()
      return {
        protocol: factory.protocol,
        createStreamMuxer (conn: MessageStream) {
          const send = conn.send.bind(conn)
          conn.send = data => {
            if (host.silent) return true
            host.sent.frames++
            host.sent.bytes += data.byteLength
            setTimeout(() => { try { send(data) } catch {} }, LATENCY_MS)
            return true
          }
          const close = conn.close.bind(conn)
          conn.close = async options => {
            await new Promise(resolve => setTimeout(resolve, LATENCY_MS))
            await close(options)
          }
          const muxer = factory.createStreamMuxer(conn)
          const watch = (s: Pick<Stream, 'protocol' | 'send' | 'addEventListener'>): void => {
            const sendOn = s.send.bind(s)
            // Negotiation is counted under the protocol it chose, once known (at the stream's next message, its close, or the count).
            let negotiation = 0
            const attribute = (): void => {
              if (negotiation === 0) return
              const p = `negotiation (${s.protocol || 'none chosen'})`
              host.sent.messages.set(p, (host.sent.messages.get(p) ?? 0) + negotiation)
              negotiation = 0
            }
            unattributed.add(attribute)
            s.addEventListener('close', () => { attribute(); unattributed.delete(attribute) })
            s.send = data => {
              const p = s.protocol
              if (p === undefined || p === '') {
                negotiation++
                return sendOn(data)
              }
              attribute()
              host.sent.messages.set(p, (host.sent.messages.get(p) ?? 0) + 1)
              if (marker !== undefined) {
                const bytes = data.subarray()
                if (Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).includes(marker)) host.sent.copies.set(p, (host.sent.copies.get(p) ?? 0) + 1)
              }
              return sendOn(data)
            }
          }
          muxer.addEventListener('stream', e => { watch(e.detail) })
          const create = muxer.createStream.bind(muxer)
          muxer.createStream = async options => {
            const s = await create(options)
            watch(s)
            return s
          }
          return muxer
        },
      }
    }
  }

  const addrOf = (h: Host): string => `/memory/sim-${h.k}/p2p/${h.overlay.peerId}`
  const t0 = clock.elapsed
  for (let k = 1; k <= n; k++) {
    const host = { k, sent: { frames: 0, bytes: 0, messages: new Map(), copies: new Map() }, silent: false, stopped: false } as Host
    // Each host joins the first and one other, as operators would point a new machine at two they know.
    const other = hosts[Math.floor(Math.random() * hosts.length)]
    const bootstrap = hosts.length === 0 ? [] : [...new Set([addrOf(hosts[0] as Host), addrOf(other as Host)])]
    host.overlay = await Overlay.create({
      privateKey: await generateKeyPair('Ed25519'),
      listen: [`/memory/sim-${k}`],
      bootstrap,
      mdns: false,
      advertTtlMs: 30 * 60_000,
      network: { transports: [memory()], streamMuxers: [linkFor(host)] },
      log,
    })
    hosts.push(host)
    byPeer.set(host.overlay.peerId, host)
    await run(host.overlay.start())
    void host.overlay.publish('host', host.overlay.peerId, hostBody(k))
    await clock.advance(JOIN_GAP_MS)
    if (k % 25 === 0) process.stderr.write(`  ${k} started (virtual ${round(clock.elapsed / 1000, 1)} s, wall ${wallSeconds()} s)\n`)
  }
  const live = (): Host[] => hosts.filter(h => !h.stopped && !h.silent)
  const lists = (h: Host, peer: string): boolean => h.overlay.cache.search({ kind: 'host', host: peer }).length > 0
  const converged = await clock.until(() => live().every(h => h.overlay.cache.search({ kind: 'host' }).length >= n - 1), 600_000, 100)
  const joinMs = clock.elapsed - t0
  process.stderr.write(`  joined: ${converged ? 'every host lists every other' : 'NOT converged'} after ${round(joinMs / 1000, 1)} virtual s (wall ${wallSeconds()} s)\n`)

  // At rest means after every host has probed each of its neighbours once (the first probe opens the stream the later ones reuse): two rounds.
  const settleMs = Math.max(SETTLE_MS, 2 * PROBE_INTERVAL_MS * Math.max(...hosts.map(h => h.overlay.node.getConnections().length)))
  await clock.advance(settleMs)
  attributeNegotiation()
  const before = hosts.map(h => ({ frames: h.sent.frames, bytes: h.sent.bytes, messages: new Map(h.sent.messages) }))
  await clock.advance(IDLE_MS)
  attributeNegotiation()
  const perMin = (v: number): number => v / (IDLE_MS / 60_000)
  const idleMessages = new Map<string, number>()
  for (const [k, h] of hosts.entries()) {
    for (const [p, c] of h.sent.messages) idleMessages.set(p, (idleMessages.get(p) ?? 0) + c - (before[k]?.messages.get(p) ?? 0))
  }
  const idle = {
    framesPerMin: summary(hosts.map((h, k) => perMin(h.sent.frames - (before[k]?.frames ?? 0)))),
    kibPerMin: summary(hosts.map((h, k) => perMin(h.sent.bytes - (before[k]?.bytes ?? 0)) / 1024)),
    messagesPerMinByProtocol: Object.fromEntries([...idleMessages].sort((a, b) => b[1] - a[1]).map(([p, c]) => [p, round(perMin(c) / n, 1)])),
    connections: summary(hosts.map(h => h.overlay.node.getConnections().length)),
  }
  process.stderr.write(`  idle: ${idle.framesPerMin.mean} frames/min per host, ${idle.connections.mean} connections (wall ${wallSeconds()} s)\n`)

  const trials: Array<{ reachMs: number[], hops: number[], copies: { gossip: number, dht: number }, gossipMessages: number }> = []
  for (let t = 0; t < TRIALS; t++) {
    const origin = hosts[Math.floor(Math.random() * n)] as Host
    const name = `sim-${n}-${t}-${Math.random().toString(36).slice(2, 10)}`
    const reached = new Map<Host, number>()
    const hop = new Map<string, number>([[origin.overlay.peerId, 0]])
    const unwatch = hosts.filter(h => h !== origin).map(h => {
      const onMessage = (e: CustomEvent<GossipsubMessage>): void => {
        if (hop.has(h.overlay.peerId) || !Buffer.from(e.detail.msg.data).includes(marker ?? '')) return
        const from = hop.get(e.detail.propagationSource.toString())
        if (from !== undefined) hop.set(h.overlay.peerId, from + 1)
      }
      h.overlay.node.services.pubsub.addEventListener('gossipsub:message', onMessage)
      const stop = h.overlay.cache.watch((a: Advert) => { if (a.kind === 'template' && a.body.name === name && !reached.has(h)) reached.set(h, clock.elapsed) })
      return () => { stop(); h.overlay.node.services.pubsub.removeEventListener('gossipsub:message', onMessage) }
    })
    const copies0 = copiesOf(hosts)
    const gossip0 = hosts.reduce((s, h) => s + sumOver(h.sent.messages, GOSSIP_PREFIX), 0)
    marker = Buffer.from(name)
    const start = clock.elapsed
    void origin.overlay.publish('template', `t-${name}`, { name, version: '1', driver: 'process', tags: {}, resources: { cpu: 0.1, memory: 64 }, ports: [] })
    const all = await clock.until(() => reached.size >= n - 1, 60_000, 5)
    await clock.advance(3000) // late duplicates and gossip about it
    marker = undefined
    for (const u of unwatch) u()
    const windowMs = clock.elapsed - start
    const gossipAtIdle = sumOver(idleMessages, GOSSIP_PREFIX) * windowMs / IDLE_MS
    trials.push({
      reachMs: [...reached.values()].map(v => v - start),
      hops: [...hop.values()].filter(h => h > 0),
      copies: { gossip: copiesOf(hosts).gossip - copies0.gossip, dht: copiesOf(hosts).dht - copies0.dht },
      gossipMessages: Math.round(hosts.reduce((s, h) => s + sumOver(h.sent.messages, GOSSIP_PREFIX), 0) - gossip0 - gossipAtIdle),
    })
    if (!all) process.stderr.write(`  trial ${t}: reached ${reached.size} of ${n - 1} in 60 s\n`)
    await clock.advance(2000)
  }
  const propagation = {
    perHostMs: summary(trials.flatMap(t => t.reachMs)),
    allReachedMs: summary(trials.map(t => t.reachMs.length >= n - 1 ? Math.max(...t.reachMs) : Infinity)),
    hops: summary(trials.flatMap(t => t.hops)),
    maxHops: summary(trials.map(t => Math.max(...t.hops))),
    gossipCopiesPerAdvert: summary(trials.map(t => t.copies.gossip)),
    dhtCopiesPerAdvert: summary(trials.map(t => t.copies.dht)),
    gossipMessagesPerAdvertAboveIdle: summary(trials.map(t => t.gossipMessages)),
  }
  process.stderr.write(`  propagation: all reached p50 ${propagation.allReachedMs.p50} ms, ${propagation.gossipCopiesPerAdvert.mean} gossip copies (wall ${wallSeconds()} s)\n`)

  async function gone (victim: Host, end: () => Promise<void>): Promise<number> {
    const peer = victim.overlay.peerId
    const startAt = clock.elapsed
    await end()
    const ok = await clock.until(() => !live().some(h => lists(h, peer)), 120_000, 100)
    return ok ? clock.elapsed - startAt : Infinity
  }
  const stopped = hosts[n - 1] as Host
  const silenced = hosts[n - 2] as Host
  const failure = {
    stoppedMs: await gone(stopped, async () => { stopped.stopped = true; await run(stopped.overlay.stop()) }),
    silentMs: await gone(silenced, async () => { silenced.silent = true }),
  }
  process.stderr.write(`  failure: stopped gone in ${failure.stoppedMs} ms, silent in ${failure.silentMs} ms (wall ${wallSeconds()} s)\n`)
  const mem = process.memoryUsage()
  const result = {
    hosts: n,
    joinMs,
    converged,
    idle,
    propagation,
    failure,
    memory: { rssMiBPerHost: round(mem.rss / 2 ** 20 / n, 1), heapMiBPerHost: round(mem.heapUsed / 2 ** 20 / n, 1) },
    wallSeconds: wallSeconds(),
  }
  // The hosts are not stopped: the process that ran them ends (stopping each on the virtual clock takes longer than the run).
  return result
}


function sumOver (counts: Map<string, number>, prefix: string): number {
  let c = 0
  for (const [p, m] of counts) if (p.startsWith(prefix)) c += m
  return c
}

/** Copies of the advert being timed sent so far, by gossip and to (and back from) the DHT. */
function copiesOf (hosts: Array<{ sent: Sent }>): { gossip: number, dht: number } {
  return {
    gossip: hosts.reduce((s, h) => s + sumOver(h.sent.copies, GOSSIP_PREFIX), 0),
    dht: hosts.reduce((s, h) => s + sumOver(h.sent.copies, DHT_PROTOCOL), 0),
  }
}

function hostBody (k: number): HostBody {
  return { name: `sim-${k}`, api: `http://10.0.${k >> 8}.${k & 255}:7380/`, addrs: [], drivers: ['qemu'], capacity: { cpu: 4, memory: 8192 }, free: { cpu: 4, memory: 8192 }, instances: 0, version: '0.1.0', operators: [], tags: {} }
}

function printTable (rs: Run[]): void {
  console.log(`Link latency ${LATENCY_MS} ms one way; ${TRIALS} adverts per size.\n`)
  console.log('| hosts | join (s) | connections per host | idle frames / min per host | idle KiB / min | reaches a host p50 / p95 (ms) | reaches all p50 / max (ms) | hops mean / max | copies sent per advert: gossip / DHT | gone: stopped / silent (s) | RSS per host (MiB) | wall time (s) |')
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|')
  for (const r of rs) {
    if ('failed' in r) { console.log(`| ${(r as { hosts: number }).hosts} | did not finish: ${String((r as { failed: unknown }).failed)} |`); continue }
    const p = r.propagation
    console.log(`| ${r.hosts} | ${round(r.joinMs / 1000, 1)}${r.converged ? '' : ' (not all)'} | ${r.idle.connections.mean} | ${round(r.idle.framesPerMin.mean, 0)} | ${round(r.idle.kibPerMin.mean, 0)} | ${p.perHostMs.p50} / ${p.perHostMs.p95} | ${p.allReachedMs.p50} / ${p.allReachedMs.max} | ${p.hops.mean} / ${p.maxHops.max} | ${round(p.gossipCopiesPerAdvert.mean, 0)} / ${round(p.dhtCopiesPerAdvert.mean, 0)} | ${round(r.failure.stoppedMs / 1000, 1)} / ${round(r.failure.silentMs / 1000, 1)} | ${r.memory.rssMiBPerHost} | ${r.wallSeconds} |`)
  }
  console.log('\nIdle messages per host per minute, by protocol:\n')
  for (const r of rs) if (!('failed' in r)) console.log(`- ${r.hosts} hosts: ${Object.entries(r.idle.messagesPerMinByProtocol).map(([p, c]) => `${p} ${c}`).join(', ')}`)
}
