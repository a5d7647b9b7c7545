import { mkdir, rm } from 'node:fs/promises'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Connection, Stream } from '@libp2p/interface'
import type { Logger } from 'pino'
import { z } from 'zod'
import { ACTIVE_STATES, INSTANCE_ID_PATTERN, instanceIdSchema, XenosError, type AdvertOf, type RequestAuth, type TaskLink } from '../core/index.ts'
import type { Overlay } from '../overlay/index.ts'
import type { ForwardRecord, InstanceRecord, Store } from '../store/index.ts'
import { dialWithHeader, HandshakeRefused, readHeader, SocketStream, splice } from '../transfer/index.ts'
import type { InstanceSupervisor } from './instances/index.ts'
import type { RequestVerifier } from './replay.ts'

/**
 * Stable addresses for services: a client's connection reaches an instance's endpoint through
 * the overlay, on whichever host runs it now. Each connection is placed anew (following a move,
 * or spread over the running instances of a name); a connection that a move cut before the
 * service answered a byte is sent again to the instance's new host.
 */
export const CONNECT_PROTOCOL = '/xenos/connect/1.0.0'

const headerSchema = z.strictObject({ instance: instanceIdSchema, endpoint: z.string().min(1).max(31).optional() })
/** How long a connection keeps trying to reach its service (a move's switch-over is within this). */
const REACH_DEADLINE_MS = 30_000
/** A connection that took longer than this to reach its service is logged, with why. */
const SLOW_REACH_MS = 500
/** Connections open longer than this are logged (debug) with how often they had to reach their service. */
const SLOW_CONNECTION_MS = 2000
/** How long a connection to an endpoint on this host may take before it is tried again, and how often. */
const CONNECT_ATTEMPT_MS = 150
const CONNECT_ATTEMPTS = 40

export interface ServiceProxyInit {
  /** Where the unix sockets of VMs' links are (a short directory of this host's). */
  linksDir: string
  overlay: Pick<Overlay, 'peerId' | 'node' | 'lookup' | 'search' | 'learnHost' | 'cache'>
  supervisor: Pick<InstanceSupervisor, 'has' | 'isMoving' | 'tcpEndpoints' | 'list' | 'view' | 'arrivingFrom'>
  verifier: Pick<RequestVerifier, 'verify' | 'isOperator'>
  /** Where what this host forwards is kept, so that a restart goes on forwarding. */
  store: Pick<Store, 'forwards'>
  log: Logger
  /** How long a host that moved an instance away keeps pointing at, and forwarding to, its new host. */
  forwardGraceMs: number
}

/** What `xenos connect` names: an instance id, or an instance name (any running instance of it). */
export interface ConnectTarget {
  target: string
  endpoint?: string | undefined
  /** Reach only instances of this owner (the one who asked); undefined: any (asked by the operator, or forwarding a moved instance). */
  owner?: string | undefined
}

/** A local port whose connections reach a service. */
export interface ServiceListener {
  address: string
  port: number
  /** Connections made, and where the latest one went. */
  stats: () => { connections: number, failed: number, lastHost: string | undefined, lastInstance: string | undefined }
  close: () => Promise<void>
}

interface Moved {
  to: string
  /** The end of the grace period. */
  until: number
  forwards: ServiceListener[]
}

export class ServiceProxy {
  readonly #init: ServiceProxyInit
  readonly #moved = new Map<string, Moved>()
  /** The listeners of instances' links, by instance and link name. */
  readonly #links = new Map<string, Map<string, ServiceListener>>()
  /** Connections to the endpoints of this host's instances that have had no answer yet, by instance. */
  readonly #unanswered = new Map<string, Set<Socket>>()
  #turn = 0

  constructor (init: ServiceProxyInit) {
    this.#init = init
  }

  get #self (): string {
    return this.#init.overlay.peerId
  }

  async start (): Promise<void> {
    await this.#init.overlay.node.handle(CONNECT_PROTOCOL, async (stream: Stream, connection: Connection) => { await this.#serve(stream, connection) }, { maxInboundStreams: 256 })
    // What this host forwarded when it stopped, for the rest of each grace period.
    for (const f of this.#init.store.forwards.list()) {
      if (f.until <= Date.now()) {
        this.#init.store.forwards.remove(f.instanceId)
        continue
      }
      this.#remember(f.instanceId, f.to, f.until)
      await this.forward(f.instanceId, f.ports)
    }
  }

  /** Closes the forwards; what they forward stays recorded for the next start. */
  async stop (): Promise<void> {
    const entries = [...this.#moved.values()]
    this.#moved.clear()
    await Promise.all(entries.map(async e => { await closeAll(e) }))
  }

  /**
   * Listens on `address`:`port` (0 for any free port) for the signer of `auth` (signed `connect`
   * on the target, params `{endpoint, address, port}`); every connection made there reaches
   * `target`, which must be reachable now and the signer's own, unless the signer is the
   * operator. Only the operator may open a port on other addresses than loopback: that exposes
   * the service to whoever reaches this host.
   */
  async listen (target: Omit<ConnectTarget, 'owner'>, address: string, port: number, auth: RequestAuth): Promise<ServiceListener> {
    const who = this.#init.verifier.verify(auth, { action: 'connect', target: target.target, params: { endpoint: target.endpoint ?? null, address, port } })
    const operator = this.#init.verifier.isOperator(who)
    if (!operator && !isLoopback(address)) throw new XenosError('FORBIDDEN', `only the operator of this host may open a port on ${address}, which others can reach: listen on 127.0.0.1, or ask the operator`)
    const reaching = { ...target, owner: operator ? undefined : who }
    await this.#reach(reaching, 1).then(r => { r.stream.abort(new Error('only a check')) })
    return await this.#listen(reaching, { address, port })
  }

  /**
   * Sets up the host's end of instance `r`'s links (see `TaskLink`): for each, a listener whose
   * connections reach the linked service of the instance's owner wherever it runs, on a unix
   * socket in this host's run directory, or on its loopback port. Listeners already open stay.
   */
  async openLinks (r: Pick<InstanceRecord, 'id' | 'owner' | 'links'>): Promise<TaskLink[]> {
    const open = this.#links.get(r.id) ?? new Map<string, ServiceListener>()
    this.#links.set(r.id, open)
    const out: TaskLink[] = []
    for (const [i, link] of r.links.entries()) {
      const where: Where = link.port === undefined ? { path: join(this.#init.linksDir, `${r.id}-${i}.sock`) } : { address: '127.0.0.1', port: link.port }
      if (!open.has(link.name)) open.set(link.name, await this.#listen({ target: link.target, endpoint: link.endpoint, owner: r.owner }, where))
      out.push({ name: link.name, to: 'path' in where ? where : { host: where.address, port: where.port } })
    }
    return out
  }

  /** Instance `id` changed: while it holds no resources, or once it is gone, its links close. */
  instanceChanged (id: string, record: Pick<InstanceRecord, 'state'> | undefined): void {
    if (record !== undefined && ACTIVE_STATES.has(record.state)) return
    const open = this.#links.get(id)
    this.#links.delete(id)
    for (const l of open?.values() ?? []) void l.close()
  }

  async #listen (target: ConnectTarget, where: Where): Promise<ServiceListener> {
    let connections = 0
    let failed = 0
    let last: { host: string, id: string } | undefined
    const sockets = new Set<Socket>()
    const server = createServer({ allowHalfOpen: true }, socket => {
      connections++
      sockets.add(socket)
      const opened = performance.now()
      let reaches = 0
      socket.once('close', () => {
        sockets.delete(socket)
        const ms = Math.round(performance.now() - opened)
        if (ms > SLOW_CONNECTION_MS) this.#init.log.debug({ target: target.target, ms, reaches }, 'a long connection ended')
      })
      socket.on('error', () => {})
      let reached: string | undefined
      const reach = async (): Promise<Stream> => {
        const t0 = performance.now()
        reaches++
        const r = await this.#reach(target)
        last = { host: r.host, id: r.id }
        const ms = Math.round(performance.now() - t0)
        // A connection that waits is what a client notices of a move: say why.
        if (ms > SLOW_REACH_MS) this.#init.log.info({ target: target.target, host: r.host, again: reached !== undefined, ms, failures: r.failures }, 'a connection waited to reach its service')
        reached = r.id
        return r.stream
      }
      reach().then(stream => {
        splice(stream, socket, {
          reopen: async () => await reach().catch(() => undefined),
          // An answer from an instance that is moving away from this host may be cut by the switch-over.
          holdAnswer: () => reached !== undefined && this.#init.supervisor.isMoving(reached),
        })
      }, (err: unknown) => {
        failed++
        this.#init.log.info({ err, target: target.target }, 'a connection could not reach its service')
        socket.destroy()
      })
    })
    await listenOn(server, where)
    const bound = server.address()
    return {
      address: 'path' in where ? where.path : where.address,
      port: typeof bound === 'object' && bound !== null ? bound.port : 0,
      stats: () => ({ connections, failed, lastHost: last?.host, lastInstance: last?.id }),
      close: async () => {
        for (const s of sockets) s.destroy()
        await new Promise<void>(resolve => server.close(() => { resolve() }))
      },
    }
  }

  /** Records that instance `id` now runs on host `to`: for a grace period, connections asked of this host go there. */
  moved (id: string, to: string): void {
    this.#remember(id, to, Date.now() + this.#init.forwardGraceMs)
    // Its VM here is paused for good and its connections end when it quits: ending those it has
    // not answered now has them sent again to the new host sooner. (One that had an answer is
    // left to end as it will: cutting it could lose the end of the answer.)
    for (const socket of this.#unanswered.get(id) ?? []) socket.destroy(new Error(`instance ${id} moved to host ${to}`))
  }

  #remember (id: string, to: string, until: number): void {
    void this.#forget(id)
    const entry: Moved = { to, until, forwards: [] }
    this.#moved.set(id, entry)
    this.#record(id, entry, [])
    // A later move of the same instance has its own grace period.
    setTimeout(() => { if (this.#moved.get(id) === entry) void this.#forget(id) }, until - Date.now()).unref()
  }

  #record (id: string, entry: Moved, ports: ForwardRecord['ports']): void {
    this.#init.store.forwards.put({ instanceId: id, to: entry.to, ports, until: entry.until })
  }

  /** Keeps the old endpoints (`ports`) of instance `id`, which moved away, forwarding to it for the grace period. */
  async forward (id: string, ports: Array<{ name: string, address: string, port: number }>): Promise<void> {
    const entry = this.#moved.get(id)
    if (entry === undefined) return
    for (const p of ports) {
      const forward = await this.#listen({ target: id, endpoint: p.name }, { address: p.address, port: p.port }).catch((err: unknown) => {
        this.#init.log.warn({ err, instance: id, port: p.port }, 'could not keep forwarding an old endpoint of a moved instance')
        return undefined
      })
      if (forward !== undefined) entry.forwards.push(forward)
    }
    this.#record(id, entry, ports)
  }

  async #forget (id: string): Promise<void> {
    const entry = this.#moved.get(id)
    if (entry === undefined) return
    this.#moved.delete(id)
    this.#init.store.forwards.remove(id)
    await closeAll(entry)
  }

  /** Opens a stream to `target`, trying its possible hosts until one accepts or the deadline passes. */
  async #reach (target: ConnectTarget, rounds = Infinity): Promise<{ stream: Stream, host: string, id: string, failures: string[] }> {
    const deadline = Date.now() + REACH_DEADLINE_MS
    let lastError: unknown
    const failures: string[] = []
    for (let round = 0; round < rounds && Date.now() < deadline; round++) {
      // Soon after a first failure (a move's switch-over takes tens of ms), then less and less often.
      if (round > 0) await sleep(Math.min(50 * 2 ** (round - 1), 1000))
      const candidates = await this.#candidates(target)
      if (candidates.length === 0) failures.push(`round ${round}: no host`)
      for (const c of candidates) {
        let host: string | undefined = c.host
        // A host that moved the instance says where to; follow that once.
        for (let hop = 0; hop < 2 && host !== undefined; hop++) {
          try {
            return { stream: await this.#open(c.id, host, target.endpoint), host, id: c.id, failures }
          } catch (err) {
            lastError = err
            failures.push(`round ${round} host ${host.slice(-8)}: ${(err as Error).message}`)
            if (err instanceof XenosError && err.code === 'INVALID_ARGUMENT') throw err
            host = err instanceof HandshakeRefused ? err.movedTo : undefined
          }
        }
      }
    }
    if (lastError instanceof Error) throw new XenosError('PEER_UNREACHABLE', `could not reach ${target.target}: ${lastError.message}`)
    throw new XenosError('INSTANCE_NOT_FOUND', `no running instance is advertised as ${target.target}: check it with "xenos instance list --all"`)
  }

  /** Where `target` may run: an instance id's host, or every running instance of a name, in turn (only `owner`'s, when given). */
  async #candidates ({ target, owner }: ConnectTarget): Promise<Array<{ id: string, host: string }>> {
    const mine = (o: string): boolean => owner === undefined || o === owner
    if (INSTANCE_ID_PATTERN.test(target)) {
      const movedTo = this.#movedTo(target)
      if (movedTo !== undefined && owner === undefined) return [{ id: target, host: movedTo }]
      if (this.#runsHere(target)) return mine(this.#init.supervisor.view(target).owner) ? [{ id: target, host: this.#self }] : []
      // The host it was placed on last, even if that host withdrew it just now: if it moved on,
      // that host says where to (before the new host's advert has come), and if it is gone, says so.
      const advert = (this.#init.overlay.cache.standing('instance', target) as AdvertOf<'instance'> | undefined) ?? await this.#init.overlay.lookup('instance', target)
      return advert === undefined || !mine(advert.body.owner) || (advert.withdrawn === true && advert.host === this.#self) ? [] : [{ id: target, host: advert.host }]
    }
    const local = this.#init.supervisor.list().filter(v => v.name === target && v.state === 'running' && mine(v.owner)).map(v => ({ id: v.id, host: this.#self }))
    const remote = this.#init.overlay.search({ kind: 'instance' })
      .filter(a => a.kind === 'instance' && a.withdrawn !== true && a.host !== this.#self && a.body.name === target && a.body.state === 'running' && mine(a.body.owner))
      .map(a => ({ id: a.id, host: a.host }))
    const all = [...local, ...remote]
    const start = all.length === 0 ? 0 : this.#turn++ % all.length
    return [...all.slice(start), ...all.slice(0, start)]
  }

  async #open (id: string, host: string, endpoint: string | undefined): Promise<Stream> {
    if (host !== this.#self) {
      await this.#init.overlay.learnHost(host)
      return await dialWithHeader(this.#init.overlay.node, host, CONNECT_PROTOCOL, { instance: id, ...(endpoint === undefined ? {} : { endpoint }) })
    }
    const movedTo = this.#movedTo(id)
    if (movedTo !== undefined) throw new HandshakeRefused(`instance ${id} moved to host ${movedTo}`, movedTo)
    return new SocketStream(await this.#connectToInstance(id, endpoint), { endIsFailure: () => this.#leaving(id) })
  }

  /** Where on this host endpoint `name` (the first when undefined) of instance `id` is reached. */
  #endpoint (id: string, name: string | undefined): { address: string, port: number } {
    const endpoints = this.#init.supervisor.tcpEndpoints(id)
    const found = name === undefined ? endpoints[0] : endpoints.find(e => e.name === name)
    if (found !== undefined) return found
    const names = endpoints.map(e => e.name).join(', ')
    throw new XenosError('INVALID_ARGUMENT', name === undefined ? `instance ${id} has no TCP endpoint` : `instance ${id} has no TCP endpoint "${name}" (it has: ${names === '' ? 'none' : names})`)
  }

  async #connectToInstance (id: string, endpoint: string | undefined): Promise<Socket> {
    const socket = await connectTo(this.#endpoint(id, endpoint))
    const waiting = this.#unanswered.get(id) ?? new Set<Socket>()
    this.#unanswered.set(id, waiting)
    waiting.add(socket)
    const answered = (): void => {
      waiting.delete(socket)
      if (waiting.size === 0 && this.#unanswered.get(id) === waiting) this.#unanswered.delete(id)
    }
    socket.once('data', answered)
    socket.once('end', answered)
    socket.once('close', answered)
    // Destroyed with an error when the instance moves (see `moved`), maybe before anyone else listens.
    socket.on('error', () => {})
    return socket
  }

  /** Another host's client wants an endpoint of an instance here. */
  async #serve (stream: Stream, connection: Connection): Promise<void> {
    const incoming = await readHeader(stream, connection, headerSchema).catch(() => undefined)
    if (incoming === undefined) return
    const { instance: id, endpoint } = incoming.header
    let socket: Socket
    try {
      const movedTo = this.#movedTo(id)
      if (movedTo !== undefined || !this.#init.supervisor.has(id)) {
        await incoming.refuse(movedTo === undefined ? `instance ${id} does not run on this host` : `instance ${id} moved to host ${movedTo}`, movedTo)
        return
      }
      socket = await this.#connectToInstance(id, endpoint)
    } catch (err) {
      await incoming.refuse((err as Error).message).catch(() => {})
      return
    }
    const spliced = await incoming.accept().catch(() => undefined)
    if (spliced === undefined) {
      socket.destroy()
      return
    }
    // When the service's connection ends because the instance left, the client must hear a
    // failure (and try its new host), not an answer.
    splice(spliced, socket, { endIsFailure: () => this.#leaving(id) })
  }

  /** Whether instance `id` runs here (not only arriving: until it takes over, it runs where it comes from). */
  #runsHere (id: string): boolean {
    return this.#init.supervisor.has(id) && this.#init.supervisor.arrivingFrom(id) === undefined
  }

  /** The host instance `id` moved to, unless it has come back and runs here again. */
  #movedTo (id: string): string | undefined {
    const to = this.#moved.get(id)?.to
    return to !== undefined && this.#init.supervisor.has(id) && !this.#init.supervisor.isMoving(id) ? undefined : to
  }

  /**
   * Whether instance `id` has been taken over by another host, or has left: its connections here
   * then end because its VM here ends, not because the service answered. Before the takeover a
   * moving instance still answers here, and a connection it closes is answered.
   */
  #leaving (id: string): boolean {
    return this.#movedTo(id) !== undefined || !this.#init.supervisor.has(id)
  }
}

function isLoopback (address: string): boolean {
  return /^127\./.test(address) || address === '::1'
}

async function closeAll (entry: Moved): Promise<void> {
  await Promise.all(entry.forwards.map(async f => { await f.close() }))
}

/**
 * Connects to an instance's endpoint on this host, trying again at once when a connection is not
 * made within CONNECT_ATTEMPT_MS: QEMU's port forwards listen with a backlog of one, so a SYN
 * that arrives while QEMU is busy (a move's last round) is dropped, and the kernel would send it
 * again only a second later.
 */
async function connectTo (to: { address: string, port: number }): Promise<Socket> {
  for (let attempt = 1; ; attempt++) {
    const socket = connect({ host: to.address, port: to.port, allowHalfOpen: true })
    const made = await new Promise<boolean>((resolve, reject) => {
      const timer = setTimeout(() => { resolve(false) }, CONNECT_ATTEMPT_MS)
      socket.once('connect', () => { clearTimeout(timer); resolve(true) })
      socket.once('error', err => { clearTimeout(timer); reject(err) })
    })
    if (made) return socket
    socket.destroy()
    if (attempt >= CONNECT_ATTEMPTS) throw new XenosError('TIMEOUT', `the endpoint ${to.address}:${to.port} did not accept a connection within ${CONNECT_ATTEMPTS * CONNECT_ATTEMPT_MS} ms`)
  }
}

/** Where a listener listens: an address and port, or a unix socket. */
type Where = { address: string, port: number } | { path: string }

async function listenOn (server: Server, where: Where): Promise<void> {
  if ('path' in where) {
    // One a host that stopped left behind: nothing listens on it any more.
    await mkdir(dirname(where.path), { recursive: true, mode: 0o700 })
    await rm(where.path, { force: true })
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(err.code === 'EADDRINUSE' && !('path' in where) ? new XenosError('INVALID_ARGUMENT', `port ${where.port} on ${where.address} is already in use: choose another with --port`) : err)
    })
    if ('path' in where) server.listen(where.path, () => { resolve() })
    else server.listen(where.port, where.address, () => { resolve() })
  })
}
