import { randomBytes } from 'node:crypto'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { z } from 'zod'
import {
  checkDataPath, instanceEnvSchema, resourcesSchema, instanceIdSchema, instanceViewSchema, linkSchema, migrateAction, migrationResultSchema, peerIdSchema,
  placementSchema, REQUEST_MAX_SKEW_MS, requestAuthSchema, templateIdSchema, verifyPlacement, XenosError,
  type InstanceView, type MigrationChannel, type MigrationProgress, type MigrationResult, type MigrationStatus, type Placement, type RequestAuth,
} from '../../core/index.ts'
import type { TemplateFetcher } from '../../images/index.ts'
import { verifyHostSignature, type Overlay } from '../../overlay/index.ts'
import type { Store } from '../../store/index.ts'
import type { TunnelListener, Tunnels } from '../../transfer/index.ts'
import { STAGED_SERIALS, type InstanceSupervisor, type RemoteDisks } from '../instances/index.ts'
import type { RequestVerifier } from '../replay.ts'
import { callHost } from '../remote.ts'
import { Arrivals, type ArrivingDisk } from './arrival.ts'
import { Departure, type DiskPlan } from './departure.ts'
import type { DiskExports } from './disk-exports.ts'

/** A move away from this host under way: whose instance, where to, since when, how far. */
export interface MoveInProgress {
  id: string
  name: string
  owner: string
  to: string
  startedAt: number
  status: MigrationStatus
}

export interface MigrationsInit {
  overlay: Pick<Overlay, 'peerId' | 'rpc' | 'learnHost' | 'search' | 'directAddress' | 'sign'>
  tunnels: Tunnels
  supervisor: Pick<InstanceSupervisor, 'moves' | 'moving' | 'view' | 'placementOf' | 'remoteDiskOf' | 'tcpEndpoints' | 'linksOf' | 'envOf' | 'arrivingFrom'>
  store: Pick<Store, 'diskExports' | 'tasks' | 'transaction'>
  remoteDisks: RemoteDisks
  exports: DiskExports
  fetcher: TemplateFetcher
  verifier: RequestVerifier
  /** Told as soon as another host has taken over an instance. */
  onTakenOver: (id: string, to: string) => void
  /** Told once an instance has left this host, with the endpoints it had here. */
  onLeft: (id: string, endpoints: Array<{ name: string, address: string, port: number }>) => Promise<void>
  /** Told once an instance that arrived here runs here (to announce the task it runs, if any). */
  onArrived: (id: string) => Promise<void>
  /** Told when a move away from this host ends, how long it took, and how long the instance was paused (when it moved). */
  onMoved: (result: 'ok' | 'failed', seconds: number, downtimeSeconds: number | null) => void
  /** Short directory for the sockets tunnels listen on. */
  runDir: string
  /**
   * The IP on which VMs arriving here wait for their memory, for their sources to connect to
   * directly; null to receive it only through a tunnel (the VM then waits on loopback).
   */
  incomingAddress: string | null
  log: Logger
}

const tokenSchema = z.string().regex(/^[0-9a-f]{64}$/)
const prepareSchema = z.strictObject({
  instance: z.strictObject({ id: instanceIdSchema, name: z.string().min(1).max(256), owner: requestAuthSchema.shape.owner, createdAt: z.number().int().nonnegative() }),
  template: templateIdSchema,
  /** Why the instance may run on the destination: its placement so far, and this move, signed. */
  placement: placementSchema,
  /** The services it reaches at addresses its host sets up; the destination sets up its own (none from a source that sends none). */
  links: z.array(linkSchema).max(8).default([]),
  /** The environment its deploy gave it. */
  env: instanceEnvSchema.default({}),
  /** What it holds, when not what its template asks for. */
  resources: resourcesSchema.optional(),
  /** The ticket to the disk the source keeps serving; absent when the disk is copied to the destination. */
  diskToken: tokenSchema.optional(),
  /**
   * The host that serves the disk, when not the source (the instance moves on from where it
   * moved to): with `diskToken`, the ticket to it there; without, the destination itself, to
   * which the instance comes back.
   */
  diskHost: peerIdSchema.optional(),
  /** The instance's staged disks, served with its disk by the host that serves that. */
  staged: z.array(z.strictObject({ serial: z.enum(STAGED_SERIALS), readOnly: z.boolean(), bytes: z.number().int().min(0).max(2 ** 40).optional() })).max(STAGED_SERIALS.length).optional(),
  /** The task the instance runs, which the destination finishes. */
  task: z.strictObject({
    inputs: z.array(z.string().min(1).max(2048)).max(64),
    outputsPrefix: z.string().min(1).max(1024),
    keep: z.boolean(),
    createdAt: z.number().int().nonnegative(),
  }).optional(),
})
const prepareReplySchema = z.strictObject({
  /** The ticket to the port the VM's memory goes to, through a tunnel. */
  token: tokenSchema,
  /** The key of the TLS the memory travels in. */
  key: tokenSchema,
  /** That port, when the source may connect to it directly. */
  port: z.number().int().min(1).max(65535).optional(),
  /** The ticket to the destination's own disk of the instance, when the disk is copied. */
  diskToken: tokenSchema.optional(),
})
const instanceOnlySchema = z.strictObject({ id: instanceIdSchema })
const migrateSchema = z.strictObject({ id: instanceIdSchema, to: peerIdSchema, copyDisk: z.boolean(), auth: requestAuthSchema })
/** A pull of a large template may come first. */
const PREPARE_TIMEOUT_MS = 30 * 60_000
const TAKEOVER_TIMEOUT_MS = 60_000

/**
 * Live migration between hosts. The source asks the destination to prepare (admission, the
 * template, a paused VM waiting for the memory), sends the memory through a tunnel while the VM
 * runs, and once it has all arrived asks the destination to take over; only then does it end its
 * own VM. By default the disk does not move: the source keeps serving it, through a tunnel only
 * the destination may use, until the destination releases it. With `copyDisk` the source first
 * mirrors what the instance wrote into a disk of the destination's own, and keeps nothing.
 */
export class Migrations {
  readonly #init: MigrationsInit
  readonly #departure: Departure
  readonly #arrivals: Arrivals
  /** Tickets issued to the sources of instances arriving here, revoked once they took over or gave up. */
  readonly #arrivalTickets = new Map<string, string[]>()
  /** Moves away from this host under way, as their progress views show them. */
  readonly #moving = new Map<string, MoveInProgress>()

  constructor (init: MigrationsInit) {
    this.#init = init
    const { moves } = init.supervisor
    this.#departure = new Departure({ moves, store: init.store, remoteDisks: init.remoteDisks, log: init.log })
    this.#arrivals = new Arrivals({ moves, store: init.store })
  }

  get #self (): string {
    return this.#init.overlay.peerId
  }

  /** Registers the RPC methods the two sides of a migration use, and those of the disks this host serves to others. */
  serve (): void {
    const { rpc } = this.#init.overlay
    rpc.handle('instance.migrate', migrateSchema, async req => await this.#migrateHere(req.id, req.to, req.copyDisk, req.auth))
    rpc.handle('migrate.prepare', prepareSchema, async (req, from) => await this.#prepare(req, from.toString()))
    rpc.handle('migrate.takeover', instanceOnlySchema, async ({ id }, from) => {
      this.#expectSource(id, from.toString())
      const { view, endedExports } = await this.#arrivals.takeOver(id)
      this.#revokeArrivalTickets(id)
      for (const token of endedExports) this.#init.tunnels.revoke(token)
      void this.#init.onArrived(id).catch((err: unknown) => { this.#init.log.warn({ err, instance: id }, 'could not announce an instance that arrived') })
      return view
    })
    rpc.handle('migrate.abandon', instanceOnlySchema, async ({ id }, from) => {
      this.#expectSource(id, from.toString())
      this.#revokeArrivalTickets(id)
      await this.#arrivals.abandon(id)
      return null
    })
    this.#init.exports.serve(rpc)
  }

  /**
   * Moves running instance `id` from the host that runs it to host `to`, signed by its owner;
   * with `copyDisk` its disk moves too. Progress is reported when the instance runs here; from
   * another host only the result comes.
   */
  async migrate (id: string, to: string, copyDisk: boolean, auth: RequestAuth, onStatus: (s: MigrationStatus) => void = () => {}): Promise<MigrationResult> {
    // The owner signed the move for the host the instance runs on: that host carries it out.
    if (auth.host === this.#self) return await this.#migrateHere(id, to, copyDisk, auth, onStatus)
    return migrationResultSchema.parse(await callHost(this.#init.overlay, auth.host, 'instance.migrate', { id, to, copyDisk, auth }, PREPARE_TIMEOUT_MS + 10 * 60_000))
  }

  async #migrateHere (id: string, to: string, copyDisk: boolean, auth: RequestAuth, onStatus: (s: MigrationStatus) => void = () => {}): Promise<MigrationResult> {
    const { action, target, params } = migrateAction(id, this.#self, to, copyDisk)
    this.#init.verifier.verify(auth, { action, target, params })
    const view = this.#init.supervisor.view(id)
    if (view.owner !== auth.owner) throw new XenosError('FORBIDDEN', `instance ${id} belongs to another owner; only its owner may migrate it`)
    if (to === this.#self) throw new XenosError('INVALID_ARGUMENT', `instance ${id} already runs on host ${to}`)
    const current = this.placementOf(id)
    const placement: Placement = { root: current.root, moved: { auth, to, copyDisk }, drains: [] }
    return await this.move(view, to, copyDisk, placement, onStatus)
  }

  /** Why instance `id` runs here, which a move extends; an instance from before placements cannot move. */
  placementOf (id: string): Placement {
    const p = this.#init.supervisor.placementOf(id)
    if (p === null) throw new XenosError('INVALID_STATE', `instance ${id} was made before placements were signed: it cannot move; deploy another instance of the service and destroy this one`)
    return p
  }

  /**
   * Moves running instance `view` to host `to` with `placement`, the signed reason it may run
   * there; with `copyDisk` its disk moves too. Other actions on it are refused meanwhile.
   */
  async move (view: InstanceView, to: string, copyDisk: boolean, placement: Placement, onStatus: (s: MigrationStatus) => void = () => {}): Promise<MigrationResult> {
    const move: MoveInProgress = { id: view.id, name: view.name, owner: view.owner, to, startedAt: Date.now(), status: { phase: 'preparing' } }
    this.#moving.set(view.id, move)
    const watched = (s: MigrationStatus): void => {
      move.status = s
      onStatus(s)
    }
    try {
      const result = await this.#init.supervisor.moving(view.id, async () => await this.#send(view, to, copyDisk, placement, watched))
      this.#init.onMoved('ok', (Date.now() - move.startedAt) / 1000, result.downtimeMs === null ? null : result.downtimeMs / 1000)
      return result
    } catch (err) {
      this.#init.onMoved('failed', (Date.now() - move.startedAt) / 1000, null)
      throw err
    } finally {
      this.#moving.delete(view.id)
    }
  }

  /** The moves away from this host under way: those of `owner`'s instances, or all of them. */
  inProgress (owner?: string): MoveInProgress[] {
    return [...this.#moving.values()].filter(m => owner === undefined || m.owner === owner).map(m => ({ ...m, status: { ...m.status } }))
  }

  async #send (view: InstanceView, to: string, copyDisk: boolean, placement: Placement, onStatus: (s: MigrationStatus) => void): Promise<MigrationResult> {
    const id = view.id
    const t0 = Date.now()
    onStatus({ phase: 'preparing' })
    const endpoints = this.#init.supervisor.tcpEndpoints(id)
    // A disk another host serves stays there: that host serves it to the destination too.
    const served = this.#init.supervisor.remoteDiskOf(id)
    if (served !== null && copyDisk) throw new XenosError('INVALID_STATE', `instance ${id}'s disk is served by host ${served.host}, where it first ran, and can only be copied from there: move it on without --copy-disk (its disk stays on ${served.host})`)
    const back = served?.host === to
    const staged = this.#departure.stagedDisks(id)
    const task = this.#departure.movingTask(id)
    let diskToken: string | undefined
    if (served === null) {
      if (!copyDisk) diskToken = this.#init.tunnels.issue(to, await this.#departure.diskSocket(id))
    } else if (!back) {
      diskToken = z.strictObject({ token: tokenSchema }).parse(await callHost(this.#init.overlay, served.host, 'disk.handover', { id, peer: to })).token
    }
    const listeners: TunnelListener[] = []
    let last: MigrationProgress | undefined
    let copied = 0
    let used: MigrationChannel
    try {
      await this.#init.overlay.learnHost(to)
      const reply = prepareReplySchema.parse(await this.#init.overlay.rpc.call(to, 'migrate.prepare', {
        instance: { id, name: view.name, owner: view.owner, createdAt: view.createdAt },
        template: view.template,
        placement,
        links: this.#init.supervisor.linksOf(id),
        env: this.#init.supervisor.envOf(id),
        resources: view.resources,
        ...(diskToken === undefined ? {} : { diskToken }),
        ...(served === null ? {} : { diskHost: served.host }),
        ...(staged.length === 0 ? {} : { staged }),
        ...(task === undefined ? {} : { task }),
      }, { timeoutMs: PREPARE_TIMEOUT_MS }))
      await mkdir(this.#init.runDir, { recursive: true })
      const memory = await this.#init.tunnels.listen(join(this.#init.runDir, `${id}.out.sock`), to, reply.token)
      listeners.push(memory)
      // Straight to the destination's port when this host reaches it directly, else through the tunnel.
      const direct = reply.port === undefined ? undefined : this.#init.overlay.directAddress(to)
      const channels: MigrationChannel[] = [
        ...direct === undefined || reply.port === undefined ? [] : [{ to: { host: direct, port: reply.port }, key: reply.key }],
        { to: { path: memory.path }, key: reply.key },
      ]
      let plan: DiskPlan
      if (back) {
        plan = { backTo: to }
      } else if (served !== null) {
        plan = { servedBy: served.host }
      } else if (diskToken !== undefined) {
        plan = { serveTo: { peer: to, token: diskToken } }
      } else {
        if (reply.diskToken === undefined) throw new XenosError('PEER_PROTOCOL', `host ${to} offered no disk to copy instance ${id} into`)
        const disk = await this.#init.tunnels.listen(join(this.#init.runDir, `${id}.copy.sock`), to, reply.diskToken)
        listeners.push(disk)
        plan = { copyTo: disk.path, onCopy: p => { copied = p.copiedBytes; onStatus({ phase: 'copying disk', disk: p }) } }
      }
      used = await this.#departure.migrateOut(id, channels, plan, p => {
        last = p
        onStatus({ phase: 'copying', ...p })
      }, async () => {
        onStatus({ phase: 'switching', ...last })
        instanceViewSchema.parse(await this.#init.overlay.rpc.call(to, 'migrate.takeover', { id }, { timeoutMs: TAKEOVER_TIMEOUT_MS }))
        this.#init.onTakenOver(id, to)
      })
    } catch (err) {
      if (served !== null && !back) await callHost(this.#init.overlay, served.host, 'disk.recall', { id, peer: to }).catch((e: unknown) => { this.#init.log.warn({ err: e, instance: id, host: served.host }, 'could not tell the host serving the disk to stop serving it to the destination of a failed move') })
      else if (diskToken !== undefined) this.#init.tunnels.revoke(diskToken)
      // The destination may hold a paused VM waiting for memory that will not come.
      await this.#init.overlay.rpc.call(to, 'migrate.abandon', { id }).catch(() => {})
      throw err
    } finally {
      await Promise.all(listeners.map(async l => { await l.close() }))
    }
    await this.#init.onLeft(id, endpoints)
    const result = { id, from: this.#self, to, totalMs: Date.now() - t0, downtimeMs: last?.downtimeMs ?? null, transferredBytes: last?.transferredBytes ?? 0, copiedDiskBytes: copied, memoryPath: 'path' in used.to ? 'overlay' as const : 'direct' as const }
    onStatus({ phase: 'done', ...last })
    this.#init.log.info(result, 'instance migrated')
    return result
  }

  async #prepare (req: z.infer<typeof prepareSchema>, from: string): Promise<z.infer<typeof prepareReplySchema>> {
    const back = req.diskHost === this.#self
    const copyDisk = req.diskToken === undefined && !back
    const staged = req.staged ?? []
    if (new Set(staged.map(s => s.serial)).size !== staged.length) throw new XenosError('PEER_PROTOCOL', `instance ${req.instance.id}'s staged disks are named twice`)
    const sizes = staged.flatMap(s => s.bytes === undefined ? [] : [{ serial: s.serial, bytes: s.bytes }])
    if (copyDisk && sizes.length !== staged.length) throw new XenosError('PEER_PROTOCOL', `instance ${req.instance.id}'s staged disks come without their sizes: they cannot be copied`)
    if (req.task !== undefined) checkDataPath(req.task.outputsPrefix)
    await this.#checkArrival(req, from)
    const { template } = await this.#init.fetcher.ensure(req.template)
    const id = req.instance.id
    const key = randomBytes(32).toString('hex')
    const address = this.#init.incomingAddress ?? '127.0.0.1'
    let disk: ArrivingDisk = { copied: true, staged: sizes }
    if (back) disk = { home: true }
    else if (req.diskToken !== undefined) disk = { servedBy: { host: req.diskHost ?? from, token: req.diskToken, ...staged.length === 0 ? {} : { staged: staged.map(({ serial, readOnly }) => ({ serial, readOnly })) } } }
    const port = await this.#arrivals.receive(template, { ...req.instance, placement: req.placement, links: req.links, env: req.env, resources: req.resources }, from, disk, { address, key }, req.task)
    const tickets = [this.#init.tunnels.issue(from, { host: localTo(address), port })]
    // The source writes the disk it copies straight into the new VM's own disk server.
    if (copyDisk) tickets.push(this.#init.tunnels.issue(from, await this.#departure.diskSocket(id)))
    this.#arrivalTickets.set(id, tickets)
    const [token = '', diskToken] = tickets
    return { token, key, ...this.#init.incomingAddress === null ? {} : { port }, ...diskToken === undefined ? {} : { diskToken } }
  }

  /**
   * Checks that the instance may come here from `from`: its placement names this host, by a move
   * `from` carried out just now (its owner's, or its own under its operator's drain), used once.
   */
  async #checkArrival (req: z.infer<typeof prepareSchema>, from: string): Promise<void> {
    const { id, owner } = req.instance
    const placed = await verifyPlacement(req.placement, { id, owner, template: req.template }, verifyHostSignature)
    if (placed.host !== this.#self) throw new XenosError('FORBIDDEN', `the placement of instance ${id} names host ${placed.host}, not this one`)
    const link = req.placement.drains.at(-1)
    const moved = req.placement.moved
    const by = link?.from ?? moved?.auth.host
    if (by !== from) throw new XenosError('FORBIDDEN', `instance ${id} was not moved here by host ${from}: moving it needs its owner's signed request, or its host's operator's drain`)
    if (Math.abs(Date.now() - placed.at) > REQUEST_MAX_SKEW_MS) throw new XenosError('UNAUTHENTICATED', `the move of instance ${id} was signed too long ago: move it again`)
    this.#init.verifier.claimOnce(owner, link?.sig ?? moved?.auth.sig ?? '', placed.at)
  }

  #revokeArrivalTickets (id: string): void {
    for (const t of this.#arrivalTickets.get(id) ?? []) this.#init.tunnels.revoke(t)
    this.#arrivalTickets.delete(id)
  }

  /** Only the host an instance is arriving from may hand it over or call it off. */
  #expectSource (id: string, from: string): void {
    if (this.#init.supervisor.arrivingFrom(id) !== from) throw new XenosError('FORBIDDEN', `instance ${id} is not arriving from host ${from}`)
  }
}

/** The address by which this host reaches a port it listens on at `address`. */
function localTo (address: string): string {
  if (address === '0.0.0.0') return '127.0.0.1'
  return address === '::' ? '::1' : address
}


