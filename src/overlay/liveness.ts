import type { Logger } from 'pino'
import { z } from 'zod'
import { canonicalJson, MAX_ADVERT_SKEW_MS } from '../core/index.ts'

/** How often this host probes the next host of its round. */
export const PROBE_INTERVAL_MS = 1000
/** How long a direct ping, and then the pings others make for this host, may take. */
const PROBE_TIMEOUT_MS = 1000
/** How many other hosts are asked to ping a host that did not answer this one. */
const INDIRECT_PROBES = 3
/** How long a suspected host has to answer again before it is taken for dead (Serf's lan profile waits 4–6 s at these sizes). */
export const SUSPECT_MS = 4000
/** A notice about a host is checked at most this often: a flood of notices costs one ping each. */
const CONFIRM_EVERY_MS = 5000
/** How long a host that heard a notice gives the dead host to answer its own ping. */
const CONFIRM_TIMEOUT_MS = 2000

export const downNoticeSchema = z.strictObject({
  v: z.literal(1),
  /** The host taken for dead. */
  host: z.string().min(1).max(128),
  /** The newest issue time of its adverts the reporter knew: adverts issued after come back in. */
  upTo: z.number().int().nonnegative(),
  /** The host that took it for dead, whose key signs the notice. */
  by: z.string().min(1).max(128),
  at: z.number().int().nonnegative(),
  sig: z.string().max(200),
})
export type DownNotice = z.infer<typeof downNoticeSchema>

/** The bytes a down notice's signature covers, apart from anything else a host signs. */
export function downNoticeBytes (n: Omit<DownNotice, 'sig'>): Uint8Array {
  return new TextEncoder().encode(`xenos-down-v1\n${canonicalJson(n)}`)
}

export interface LivenessInit {
  self: string
  /**
   * The hosts to probe in rounds: those this host is connected to and has adverts of. Probing
   * only neighbours costs no new connections however large the cloud, and every host is some
   * hosts' neighbour; a host that dies closes its connections, which has them probe it at once.
   */
  hosts: () => string[]
  /** Whether `peer` answers a ping within `timeoutMs`. */
  ping: (peer: string, timeoutMs: number) => Promise<boolean>
  /** Whether `peer` answers a ping that `via` makes for this host. */
  pingVia: (via: string, peer: string, timeoutMs: number) => Promise<boolean>
  /** Hosts this one is connected to, to ask for indirect pings. */
  connected: () => string[]
  /** The newest issue time of `host`'s adverts known here. */
  newestOf: (host: string) => number | undefined
  /** `host` is taken for dead here: its adverts issued until `upTo` go. */
  forget: (host: string, upTo: number) => void
  /** Tells the other hosts, with a notice this host signs. */
  tell: (host: string, upTo: number) => Promise<void>
  /** Hosts taken for dead that this host is still connected to: a false alarm, if they answer. */
  forgotten: () => string[]
  /** A host taken for dead answered this host's ping: take its adverts in again. */
  revive: (host: string) => void
  /** Another host took this one for dead: announce its adverts again, newer than the notice. */
  refute: () => void
  log: Logger
  /** @default Date.now */
  clock?: () => number
}

/**
 * Failure detection kept apart from adverts, as SWIM does it (Serf, memberlist): every second
 * this host pings the next host of a shuffled round over its neighbours. One that
 * answers neither its ping nor the pings of three others is suspected; if it stays silent for
 * SUSPECT_MS it is taken for dead: its adverts leave this host's searches and a signed notice
 * tells the others. Each host that hears the notice pings the dead host itself before it
 * believes it, and only then passes the notice on, so no host can talk a live one out of the
 * overlay. A host that hears itself declared dead announces its adverts again, newer than the
 * notice, which brings it back everywhere. Adverts can then live long and be re-sent only when
 * they change.
 */
export class Liveness {
  readonly #init: LivenessInit
  #round: string[] = []
  readonly #suspects = new Map<string, number>()
  readonly #probing = new Set<string>()
  readonly #confirmed = new Map<string, number>()
  #timer: NodeJS.Timeout | undefined
  readonly #now: () => number

  constructor (init: LivenessInit) {
    this.#init = init
    this.#now = init.clock ?? Date.now
  }

  start (): void {
    this.#timer = setInterval(() => { this.tick() }, PROBE_INTERVAL_MS)
    this.#timer.unref()
  }

  stop (): void {
    clearInterval(this.#timer)
  }

  /** Hosts suspected now, and since when. */
  get suspects (): ReadonlyMap<string, number> {
    return this.#suspects
  }

  /** One period: the next host of the round, every suspect again, and any host taken for dead that is still connected. */
  tick (): void {
    const next = this.#next()
    if (next !== undefined) void this.check(next)
    for (const host of this.#suspects.keys()) if (host !== next) void this.check(host)
    for (const host of this.#init.forgotten()) void this.#revive(host)
  }

  async #revive (host: string): Promise<void> {
    if (this.#probing.has(host)) return
    this.#probing.add(host)
    try {
      if (await this.#init.ping(host, PROBE_TIMEOUT_MS)) this.#takeBack(host)
    } finally {
      this.#probing.delete(host)
    }
  }

  /** A connection to `host` closed: ask now whether it is still there. */
  disconnected (host: string): void {
    if (this.#init.newestOf(host) !== undefined) void this.check(host)
  }

  #next (): string | undefined {
    if (this.#round.length === 0) {
      this.#round = this.#init.hosts().filter(h => h !== this.#init.self)
      for (let i = this.#round.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1))
        ;[this.#round[i], this.#round[j]] = [this.#round[j] ?? '', this.#round[i] ?? '']
      }
    }
    return this.#round.pop()
  }

  /** Probes `host` (directly, then through others) and moves it on: cleared, suspected, or dead. */
  async check (host: string): Promise<void> {
    if (host === this.#init.self || this.#probing.has(host)) return
    this.#probing.add(host)
    try {
      if (await this.#answers(host)) {
        if (this.#suspects.delete(host)) this.#init.log.info({ host }, 'a suspected host answers again')
        if (this.#init.forgotten().includes(host)) this.#takeBack(host)
        return
      }
      const since = this.#suspects.get(host)
      if (since === undefined) {
        this.#suspects.set(host, this.#now())
        this.#init.log.info({ host }, 'a host does not answer: suspected')
      } else if (this.#now() - since >= SUSPECT_MS) {
        this.#suspects.delete(host)
        const upTo = this.#init.newestOf(host)
        if (upTo === undefined) return
        this.#init.log.warn({ host }, 'a host has not answered for a while: taken for dead')
        this.#init.forget(host, upTo)
        this.#confirmed.set(host, this.#now())
        await this.#init.tell(host, upTo)
      }
    } finally {
      this.#probing.delete(host)
    }
  }

  async #answers (host: string): Promise<boolean> {
    if (await this.#init.ping(host, PROBE_TIMEOUT_MS)) return true
    const helpers = this.#init.connected().filter(h => h !== host && h !== this.#init.self).sort(() => Math.random() - 0.5).slice(0, INDIRECT_PROBES)
    if (helpers.length === 0) return false
    const answers = await Promise.all(helpers.map(async via => await this.#init.pingVia(via, host, PROBE_TIMEOUT_MS).catch(() => false)))
    return answers.some(Boolean)
  }

  #takeBack (host: string): void {
    this.#init.log.info({ host }, 'a host taken for dead answers: taken back')
    this.#init.revive(host)
  }

  /**
   * A notice (signature checked) that another host took `notice.host` for dead. Believed only
   * after this host's own ping goes unanswered; true when it was, so the notice goes on.
   */
  async heard (notice: Pick<DownNotice, 'host' | 'upTo' | 'at'>): Promise<boolean> {
    const now = this.#now()
    if (Math.abs(now - notice.at) > MAX_ADVERT_SKEW_MS) return false
    if (notice.host === this.#init.self) {
      this.#init.refute()
      return false
    }
    const newest = this.#init.newestOf(notice.host)
    // Nothing of it here, or something newer than the notice: it spoke since.
    if (newest === undefined || newest > notice.upTo) return false
    const last = this.#confirmed.get(notice.host)
    if (last !== undefined && now - last < CONFIRM_EVERY_MS) return false
    this.#confirmed.set(notice.host, now)
    for (const [h, at] of this.#confirmed) if (now - at >= CONFIRM_EVERY_MS) this.#confirmed.delete(h)
    if (await this.#init.ping(notice.host, CONFIRM_TIMEOUT_MS)) return false
    this.#init.forget(notice.host, notice.upTo)
    return true
  }
}
