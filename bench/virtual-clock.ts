/**
 * A virtual clock for simulating many hosts in one process. Once installed, setTimeout,
 * setInterval, Date.now, performance.now and AbortSignal.timeout follow it instead of the wall
 * clock, and advance() jumps from one due timer to the next after the event loop has run what
 * the last ones started. Computing costs no virtual time, so a thousand hosts on two cores keep
 * the timing a thousand machines would have (links get their latency from the caller, as timers).
 * setImmediate and microtasks stay real: they are how the loop is let run between timers.
 */
const realSetImmediate = setImmediate

class VirtualTimer {
  /** The heap entry that is this timer's current one; older entries are skipped. */
  entry = 0
  cleared = false
  #referenced = true

  readonly clock: VirtualClock
  readonly fn: (...args: unknown[]) => void
  readonly args: unknown[]
  readonly delay: number
  readonly repeats: boolean

  constructor (clock: VirtualClock, fn: (...args: unknown[]) => void, args: unknown[], delay: number, repeats: boolean) {
    this.clock = clock
    this.fn = fn
    this.args = args
    this.delay = delay
    this.repeats = repeats
  }

  ref (): this { this.#referenced = true; return this }
  unref (): this { this.#referenced = false; return this }
  hasRef (): boolean { return this.#referenced }
  refresh (): this { this.clock.schedule(this); return this }
  close (): this { this.cleared = true; return this }
  [Symbol.toPrimitive] (): number { return this.entry }
  [Symbol.dispose] (): void { this.cleared = true }
}

interface Entry { at: number, seq: number, timer: VirtualTimer }

export class VirtualClock {
  #now: number
  readonly #start: number
  #seq = 0
  readonly #heap: Entry[] = []
  /** Timers by their number, for code that clears a timer by what it coerces to. */
  readonly #byNumber = new Map<number, VirtualTimer>()

  constructor (start = Date.now()) {
    this.#now = start
    this.#start = start
  }

  /** Virtual milliseconds since the epoch. */
  get now (): number {
    return this.#now
  }

  /** Virtual milliseconds since the clock was made. */
  get elapsed (): number {
    return this.#now - this.#start
  }

  /** Replaces the global timers and clocks with this one's. Call before loading what uses them. */
  install (): void {
    const g = globalThis as Record<string, unknown>
    g.setTimeout = (fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => this.#add(fn, ms, args, false)
    g.setInterval = (fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => this.#add(fn, ms, args, true)
    g.clearTimeout = g.clearInterval = (t: unknown) => { this.#clear(t) }
    Date.now = () => Math.floor(this.#now)
    performance.now = () => this.#now - this.#start
    AbortSignal.timeout = (ms: number) => {
      const controller = new AbortController()
      this.#add(() => { controller.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError')) }, ms, [], false)
      return controller.signal
    }
  }

  /** Runs every timer due in the next `ms` virtual milliseconds, letting the event loop run between instants. */
  async advance (ms: number): Promise<void> {
    const end = this.#now + ms
    for (;;) {
      await settle()
      const next = this.#peekLive()
      if (next === undefined || next.at > end) break
      this.#now = Math.max(this.#now, next.at)
      const errors: unknown[] = []
      for (let e = this.#peekLive(); e !== undefined && e.at <= this.#now; e = this.#peekLive()) {
        this.#pop()
        const t = e.timer
        if (t.repeats) this.schedule(t)
        else this.#byNumber.delete(t.entry)
        try {
          t.fn(...t.args)
        } catch (err) {
          errors.push(err)
        }
      }
      if (errors.length > 0) throw errors[0]
    }
    this.#now = end
    await settle()
  }

  /** Advances until `done()` holds, checking every `stepMs`; false if `limitMs` passed first. */
  async until (done: () => boolean, limitMs: number, stepMs = 10): Promise<boolean> {
    const end = this.#now + limitMs
    while (!done()) {
      if (this.#now >= end) return false
      await this.advance(stepMs)
    }
    return true
  }

  /** (Re)places `t` on the heap, `t.delay` from now. */
  schedule (t: VirtualTimer): void {
    this.#byNumber.delete(t.entry)
    const entry = { at: this.#now + t.delay, seq: ++this.#seq, timer: t }
    t.entry = entry.seq
    this.#byNumber.set(entry.seq, t)
    this.#push(entry)
  }

  #add (fn: (...a: unknown[]) => void, ms: number | undefined, args: unknown[], repeats: boolean): VirtualTimer {
    // As Node does: a delay that is not a number from 1 to 2^31 - 1 is 1.
    const delay = typeof ms === 'number' && ms >= 1 && ms <= 2 ** 31 - 1 ? ms : 1
    const t = new VirtualTimer(this, fn, args, delay, repeats)
    this.schedule(t)
    return t
  }

  #clear (t: unknown): void {
    const timer = t instanceof VirtualTimer ? t : typeof t === 'number' ? this.#byNumber.get(t) : undefined
    if (timer === undefined) return
    timer.cleared = true
    this.#byNumber.delete(timer.entry)
  }

  #peekLive (): Entry | undefined {
    for (let top = this.#heap[0]; top !== undefined; top = this.#heap[0]) {
      if (!top.timer.cleared && top.timer.entry === top.seq) return top
      this.#pop()
    }
    return undefined
  }

  #push (e: Entry): void {
    const h = this.#heap
    h.push(e)
    for (let i = h.length - 1; i > 0;) {
      const parent = (i - 1) >> 1
      if (!before(h[i] as Entry, h[parent] as Entry)) break
      ;[h[i], h[parent]] = [h[parent] as Entry, h[i] as Entry]
      i = parent
    }
  }

  #pop (): void {
    const h = this.#heap
    const last = h.pop()
    if (last === undefined || h.length === 0) return
    h[0] = last
    for (let i = 0; ;) {
      const l = 2 * i + 1
      const r = l + 1
      let m = i
      if (l < h.length && before(h[l] as Entry, h[m] as Entry)) m = l
      if (r < h.length && before(h[r] as Entry, h[m] as Entry)) m = r
      if (m === i) break
      ;[h[i], h[m]] = [h[m] as Entry, h[i] as Entry]
      i = m
    }
  }
}

function before (a: Entry, b: Entry): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq)
}

/** Lets the event loop run what is ready: promise chains, and work that yields with setImmediate. */
async function settle (): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise(resolve => realSetImmediate(resolve))
}
