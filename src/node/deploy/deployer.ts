import { rm } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import { z } from 'zod'
import {
  deployPartSchema, deployReplySchema, deploySpecDigest, deploySpecSchema, deployStatusSchema, deployTokenSchema, deployTokenValid, instanceIdsOf, instanceNameOf, OWNER_ID_PATTERN,
  REQUEST_MAX_SKEW_MS, templateIdSchema, XenosError,
  type AdvertOf, type DeployPart, type DeployReply, type DeployResult, type DeploySpec, type DeployStatus, type DeployTiming, type DeployToken,
  type HostRollout, type InstanceView, type Placement, type PlacementPlan,
} from '../../core/index.ts'
import type { TemplateFetcher } from '../../images/index.ts'
import type { Overlay } from '../../overlay/index.ts'
import type { InstanceRecord, SnapshotRecord, Store, TaskRecord } from '../../store/index.ts'
import { callHost } from '../remote.ts'
import type { RequestVerifier } from '../replay.ts'
import type { InputStager } from './inputs.ts'
import { bootPhase, Rollout, untilHealthy } from './rollout.ts'
import type { InstanceSupervisor } from '../instances/index.ts'
import { checkTaskSpec } from '../tasks.ts'
import type { HostTrust } from '../trust.ts'
import type { Bidding } from '../bidding.ts'

export interface DeployerInit {
  overlay: Pick<Overlay, 'peerId' | 'rpc' | 'search' | 'learnHost'>
  fetcher: Pick<TemplateFetcher, 'ensure' | 'progressOf'>
  supervisor: Pick<InstanceSupervisor, 'create' | 'admission' | 'view' | 'has'>
  store: Pick<Store, 'snapshots' | 'tasks' | 'instances'>
  verifier: RequestVerifier
  trust: HostTrust
  inputs: Pick<InputStager, 'stage'>
  /** The task record of a new instance of a task deploy (kept with the instance's); told once the instance exists. */
  tasks: { recordFor: (instance: InstanceRecord, spec: DeploySpec) => TaskRecord | undefined, announce: (id: string) => Promise<void> }
  /** The host's market: whether a part's bids pay for its instances (or it may go without), and opening them once the instances are made. */
  market: Pick<Bidding, 'checkDeploy' | 'openDeployed'>
  /** Told when a deploy asked of this host ends: every part made its instances (ok), some did (partial), none did (failed). */
  onDeployed: (result: 'ok' | 'partial' | 'failed', seconds: number) => void
  log: Logger
}

/** A host's part of a deploy, sent by the host the client asked. */
const deployRequestSchema = z.strictObject({
  template: templateIdSchema,
  spec: deploySpecSchema,
  part: deployPartSchema,
  /** Answer once the instances have booted and passed their health checks, or after this long. */
  wait: z.strictObject({ waitMs: z.number().int().min(1000).max(3_600_000) }).optional(),
})

/** Asks a host where it is with the owner's deploy of this key. */
const deployStatusRequestSchema = z.strictObject({
  owner: z.string().regex(OWNER_ID_PATTERN),
  key: deployTokenSchema.shape.key,
})

export interface DeployOptions {
  /** Wait until the instances boot and pass their health checks. */
  wait?: boolean
  waitMs?: number
  /** Sees every host's part as it changes: phase, and progress while fetching. */
  onProgress?: (parts: HostRollout[]) => void
}

/** A host's part of a deploy may include pulling a large template. */
const DEPLOY_TIMEOUT_MS = 30 * 60_000
const DEFAULT_WAIT_MS = 5 * 60_000
/** How often a deploy under way asks each host where it is. */
const STATUS_EVERY_MS = 300

/** A deploy asked of this host under way: whose, of what, and every host's part. */
export interface DeployInProgress {
  key: string
  owner: string
  template: string
  name: string | null
  startedAt: number
  hosts: HostRollout[]
}

/**
 * Deploys: a plan of where instances fit, then each host's part, run by that host under its
 * owner's token (which names the host, the template, the parameters and the instances' ids, so
 * that a token captured on the way makes nothing anywhere else, and a retry of the same deploy
 * makes nothing twice).
 */
export class Deployer {
  readonly #init: DeployerInit
  /** This host's parts of deploys under way, by owner and deploy key. */
  readonly #deploying = new Map<string, { template: string, phase: NonNullable<DeployStatus['phase']> }>()
  /** Deploys asked of this host under way, by deploy key: every host's part as it changes. */
  readonly #rollouts = new Map<string, DeployInProgress>()

  constructor (init: DeployerInit) {
    this.#init = init
  }

  get #self (): string {
    return this.#init.overlay.peerId
  }

  serve (): void {
    const { rpc } = this.#init.overlay
    rpc.handle('instance.deploy', deployRequestSchema, async req => await this.deployHere(req.template, req.spec, req.part, req.wait ?? null))
    rpc.handle('deploy.status', deployStatusRequestSchema, async req => this.#statusHere(req.owner, req.key))
  }

  /** Spreads `count` instances of a template needing `resources` and `driver` over the advertised hosts with most room that are trusted. */
  plan (t: { name: string, driver: string, resources: { cpu: number, memory: number } }, count: number): PlacementPlan {
    const hosts = (this.#init.overlay.search({ kind: 'host' }) as Array<AdvertOf<'host'>>)
      .filter(h => h.body.drivers.includes(t.driver) && this.#init.trust.distrusted(h.host) === undefined)
      // This host's own room is known exactly; others' comes from their latest advert.
      .map(h => ({ id: h.host, free: h.host === this.#self ? this.#init.supervisor.admission.free() : { ...h.body.free } }))
    const out = new Map<string, number>()
    for (let i = 0; i < count; i++) {
      const fits = hosts.filter(h => h.free.cpu + 1e-9 >= t.resources.cpu && h.free.memory >= t.resources.memory)
      fits.sort((a, b) => b.free.memory / Math.max(1, t.resources.memory) + b.free.cpu - (a.free.memory / Math.max(1, t.resources.memory) + a.free.cpu))
      const best = fits[0]
      if (best === undefined) {
        throw new XenosError('NO_HOST_AVAILABLE', `no advertised host with the "${t.driver}" driver has room for ${count - i} more instance(s) of ${t.name} (${t.resources.cpu} CPU, ${t.resources.memory} MiB each)`)
      }
      best.free.cpu -= t.resources.cpu
      best.free.memory -= t.resources.memory
      out.set(best.id, (out.get(best.id) ?? 0) + 1)
    }
    return { hosts: [...out].map(([host, n]) => ({ host, count: n })) }
  }

  /**
   * Runs every host's part of a deploy at once. Each part reports how long fetching and creating
   * took there; with `wait`, also how long until its instances booted and passed their checks.
   */
  async deploy (template: string, spec: DeploySpec, parts: DeployPart[], options: DeployOptions = {}): Promise<DeployResult> {
    const first = checkParts(template, spec, parts)
    const rollout = new Rollout(parts.map(p => p.token.host), options.onProgress)
    // GET /v1/deploys reads the rollout's parts as they change, watched or not.
    this.#rollouts.set(first.key, { key: first.key, owner: first.owner, template, name: spec.name, startedAt: Date.now(), hosts: rollout.parts })
    try {
      return await this.#rollOut(template, spec, parts, options, rollout)
    } finally {
      this.#rollouts.delete(first.key)
    }
  }

  /** The deploys asked of this host under way: those of `owner`, or all of them. */
  inProgress (owner?: string): DeployInProgress[] {
    return [...this.#rollouts.values()].filter(d => owner === undefined || d.owner === owner).map(d => structuredClone(d))
  }

  async #rollOut (template: string, spec: DeploySpec, parts: DeployPart[], options: DeployOptions, rollout: Rollout): Promise<DeployResult> {
    const started = performance.now()
    const result: DeployResult = { instances: [], failures: [], hosts: rollout.parts }
    const wait = options.wait === true ? { waitMs: options.waitMs ?? DEFAULT_WAIT_MS } : null
    await Promise.all(parts.map(async part => {
      const host = part.token.host
      const planned = instanceIdsOf(part.token)
      rollout.update(host, { instances: planned })
      try {
        const here = await this.#watching(part.token, rollout, async () => host === this.#self
          ? await this.deployHere(template, spec, part, wait)
          : await this.#deployThere(template, spec, part, wait))
        this.#init.trust.vouch(host)
        result.instances.push(...here.instances)
        rollout.update(host, { phase: here.error === null ? 'done' : 'failed', fetching: null, instances: here.instances.map(v => v.id), ...here.timing, error: here.error })
      } catch (err) {
        const e = err instanceof XenosError ? err : new XenosError('PEER_PROTOCOL', `host ${host} answered the deploy with something malformed`)
        this.#judge(host, e)
        rollout.update(host, { phase: 'failed', fetching: null, error: { code: e.code, message: e.message } })
        result.failures.push({ host, code: e.code, message: e.message, instances: planned })
      }
    }))
    rollout.close()
    // A part that failed, whole or in part, says so in its error.
    const failed = rollout.parts.some(p => p.error !== null)
    this.#init.onDeployed(!failed ? 'ok' : result.instances.length === 0 ? 'failed' : 'partial', (performance.now() - started) / 1000)
    if (result.instances.length === 0 && result.failures.length === 1 && result.failures[0] !== undefined) {
      const f = result.failures[0]
      throw new XenosError(f.code as XenosError['code'], f.message, { instances: f.instances })
    }
    return result
  }

  async #deployThere (template: string, spec: DeploySpec, part: DeployPart, wait: { waitMs: number } | null): Promise<DeployReply> {
    return deployReplySchema.parse(await callHost(this.#init.overlay, part.token.host, 'instance.deploy', { template, spec, part, ...wait === null ? {} : { wait } }, DEPLOY_TIMEOUT_MS + (wait?.waitMs ?? 0)))
  }

  /** A host that turned a deploy down in a way its advert did not let expect is trusted less. */
  #judge (host: string, e: XenosError): void {
    if (host === this.#self) return
    if (e.code === 'ADMISSION_REFUSED' || e.code === 'PEER_UNREACHABLE' || e.code === 'PEER_PROTOCOL' || e.code === 'TIMEOUT' || e.code === 'DRIVER_UNAVAILABLE') {
      this.#init.trust.distrust(host, `${e.code}: ${e.message}`)
      this.#init.log.info({ host, code: e.code }, 'a host failed a deploy its advert said it could take: left out of placement for a while')
    }
  }

  /**
   * Runs `work` (a host's part of a deploy); while it runs, asks the host every STATUS_EVERY_MS
   * where it is, for the rollout (GET /v1/deploys, and a watcher if there is one). The status is
   * only news: a lost answer is asked again next time.
   */
  async #watching<T>(token: DeployToken, rollout: Rollout, work: () => Promise<T>): Promise<T> {
    const done = new AbortController()
    const watch = (async () => {
      while (!done.signal.aborted) {
        const status = await this.#statusOf(token).catch(() => undefined)
        if (status?.phase != null && !done.signal.aborted) rollout.update(token.host, { phase: status.phase, fetching: status.fetching })
        await sleep(STATUS_EVERY_MS, undefined, { signal: done.signal }).catch(() => {})
      }
    })()
    try {
      return await work()
    } finally {
      done.abort()
      await watch
    }
  }

  async #statusOf (t: DeployToken): Promise<DeployStatus> {
    if (t.host === this.#self) return this.#statusHere(t.owner, t.key)
    return deployStatusSchema.parse(await callHost(this.#init.overlay, t.host, 'deploy.status', { owner: t.owner, key: t.key }, STATUS_EVERY_MS * 10))
  }

  #statusHere (owner: string, key: string): DeployStatus {
    const d = this.#deploying.get(`${owner}/${key}`)
    if (d === undefined) return { phase: null, fetching: null }
    return { phase: d.phase, fetching: d.phase === 'fetching' ? this.#init.fetcher.progressOf(d.template) : null }
  }

  /**
   * Runs this host's part of a deploy, as its owner's token says: the instances it names, those
   * not made yet (a retry of the same deploy makes none twice). With `wait`, until they are healthy.
   */
  async deployHere (template: string, spec: DeploySpec, part: DeployPart, wait: { waitMs: number } | null): Promise<DeployReply> {
    const { token } = part
    this.#checkToken(template, spec, part)
    this.#init.market.checkDeploy(token.owner, instanceIdsOf(token), part.bids)
    const key = `${token.owner}/${token.key}`
    const status = { template, phase: 'fetching' as NonNullable<DeployStatus['phase']> }
    this.#deploying.set(key, status)
    try {
      const t0 = performance.now()
      const made = await this.#make(template, spec, part, status)
      if (part.bids !== undefined) {
        await this.#init.market.openDeployed(token.owner, part.bids)
        made.instances = made.instances.map(v => this.#init.supervisor.view(v.id))
      }
      const timing: DeployTiming = { fetchMs: made.fetchMs, fetchedBytes: made.fetched, createMs: Math.round(performance.now() - t0 - made.fetchMs), bootMs: null, healthyMs: null }
      if (wait === null) return { instances: made.instances, timing, error: null }
      status.phase = 'booting'
      try {
        const times = await untilHealthy(made.instances, timing.createMs, async id => this.#init.supervisor.view(id), wait.waitMs, views => { status.phase = bootPhase(views) })
        return { instances: made.instances.map(v => this.#init.supervisor.view(v.id)), timing: { ...timing, ...times }, error: null }
      } catch (err) {
        const e = err instanceof XenosError ? err : new XenosError('INTERNAL', (err as Error).message)
        return { instances: made.instances.map(v => this.#init.supervisor.has(v.id) ? this.#init.supervisor.view(v.id) : v), timing, error: { code: e.code, message: e.message } }
      }
    } finally {
      this.#deploying.delete(key)
    }
  }

  #checkToken (template: string, spec: DeploySpec, part: DeployPart): void {
    const { token } = part
    if (token.host !== this.#self) throw new XenosError('UNAUTHENTICATED', `this deploy token is for host ${token.host}, not for host ${this.#self}: sign one for this host`)
    if (token.template !== template) throw new XenosError('UNAUTHENTICATED', `this deploy token is for template ${token.template}, not ${template}`)
    if (token.spec !== deploySpecDigest(spec)) throw new XenosError('UNAUTHENTICATED', 'this deploy token was signed for other parameters')
    if (Math.abs(Date.now() - token.issuedAt) > REQUEST_MAX_SKEW_MS) throw new XenosError('UNAUTHENTICATED', 'this deploy token is too old, or from a clock far from this host\'s: sign a new one')
    if (!deployTokenValid(token)) throw new XenosError('UNAUTHENTICATED', 'this deploy token is not signed by the owner it names')
    if ((part.inputs?.length ?? 0) !== (spec.inputs?.length ?? 0)) throw new XenosError('INVALID_ARGUMENT', 'a deploy part must carry one signature for each input')
    checkTaskSpec(spec, token.count)
    // The token is used once; a retry signs another with the same key, which makes the same instances.
    this.#init.verifier.claimOnce(token.owner, token.sig, token.issuedAt)
  }

  async #make (template: string, spec: DeploySpec, part: DeployPart, status: { phase: NonNullable<DeployStatus['phase']> }): Promise<{ instances: InstanceView[], fetchMs: number, fetched: number }> {
    const { token } = part
    const ids = instanceIdsOf(token)
    const existing = ids.filter(id => this.#init.supervisor.has(id))
    for (const id of existing) {
      const r = this.#init.store.instances.get(id)
      if (r?.owner !== token.owner || r.templateId !== template) throw new XenosError('INVALID_ARGUMENT', `instance id ${id} is taken on host ${this.#self}: deploy with another key`)
    }
    const missing = ids.map((id, index) => ({ id, index })).filter(i => !existing.includes(i.id))
    const t0 = performance.now()
    if (missing.length === 0) return { instances: ids.map(id => this.#init.supervisor.view(id)), fetchMs: 0, fetched: 0 }
    const inputs = spec.inputs?.map((input, i) => ({ ...input, authority: { auth: part.inputs?.[i] ?? failNoAuth() } }))
    // Inputs are read while the template comes: their signatures are fresh now, not after a long pull.
    const staging = inputs === undefined ? undefined : this.#init.inputs.stage(token.owner, inputs)
    staging?.catch(() => {})
    let fetched = 0
    let fetchMs = 0
    let image: string | undefined
    try {
      const pulled = await this.#init.fetcher.ensure(template)
      fetched = pulled.fetched
      fetchMs = Math.round(performance.now() - t0)
      const snapshot = this.#snapshot(spec, token, template)
      if (staging !== undefined) status.phase = 'staging'
      image = await staging
      status.phase = 'creating'
      const base = spec.name ?? pulled.template.manifest.name
      const named = missing.map(m => ({
        id: m.id,
        name: spec.name === null ? `${base}-${m.id.slice(2, 8)}` : instanceNameOf(token, base, m.index),
        placement: rootPlacement(token, m.index),
        links: spec.links ?? [],
        env: spec.env ?? {},
      }))
      await this.#init.supervisor.create(pulled.template, token.owner, named, {
        snapshot,
        inputs: image,
        outputBytes: spec.outputBytes,
        alongside: r => {
          const task = this.#init.tasks.recordFor(r, spec)
          if (task !== undefined) this.#init.store.tasks.insert(task)
        },
      })
    } finally {
      if (image !== undefined) await rm(image, { force: true })
      else if (staging !== undefined) await staging.then(async path => { await rm(path, { force: true }) }, () => {})
    }
    if (spec.task !== undefined) for (const m of missing) void this.#init.tasks.announce(m.id)
    return { instances: ids.map(id => this.#init.supervisor.view(id)), fetchMs, fetched }
  }

  #snapshot (spec: DeploySpec, token: DeployToken, template: string): SnapshotRecord | undefined {
    if (spec.snapshot === undefined) return undefined
    const snapshot = this.#init.store.snapshots.get(spec.snapshot)
    if (snapshot === undefined) throw new XenosError('SNAPSHOT_NOT_FOUND', `host ${this.#self} holds no snapshot ${spec.snapshot}: deploy with --host set to the host that took it`)
    if (snapshot.owner !== token.owner) throw new XenosError('FORBIDDEN', `snapshot ${snapshot.id} belongs to another owner`)
    if (snapshot.templateId !== template) throw new XenosError('INVALID_ARGUMENT', `snapshot ${snapshot.id} is of template ${snapshot.templateId}, not ${template}`)
    if (spec.inputs !== undefined) throw new XenosError('INVALID_ARGUMENT', 'instances started from a snapshot cannot have inputs staged: their memory was saved without them')
    return snapshot
  }
}

function failNoAuth (): never {
  throw new XenosError('INVALID_ARGUMENT', 'a deploy part must carry one signature for each input')
}

/** The placement of instance `index` of a token: the token itself, nothing moved yet. */
function rootPlacement (token: DeployToken, index: number): Placement {
  return { root: { token, index }, drains: [] }
}

/** Throws unless the parts of a deploy agree: one owner, one key, one template, the same parameters, each host once. Returns the first part's token. */
function checkParts (template: string, spec: DeploySpec, parts: DeployPart[]): DeployToken {
  const first = parts[0]?.token
  if (first === undefined) throw new XenosError('INVALID_ARGUMENT', 'a deploy needs a token for at least one host')
  const digest = deploySpecDigest(spec)
  for (const { token } of parts) {
    if (token.owner !== first.owner || token.key !== first.key) throw new XenosError('INVALID_ARGUMENT', 'every token of a deploy must come from one owner with one key')
    if (token.template !== template || token.spec !== digest) throw new XenosError('UNAUTHENTICATED', `the token for host ${token.host} was signed for another template or other parameters`)
    if (!deployTokenValid(token)) throw new XenosError('UNAUTHENTICATED', `the token for host ${token.host} is not signed by the owner it names`)
  }
  if (new Set(parts.map(p => p.token.host)).size !== parts.length) throw new XenosError('INVALID_ARGUMENT', 'a deploy names a host twice')
  checkTaskSpec(spec, parts.reduce((n, p) => n + p.token.count, 0))
  return first
}
