/**
 * A bid as its host keeps it (Tycoon's): the credits paid into it, how many of them are charged
 * and up to when, and when it ends. What is left is charged evenly over the whole seconds left,
 * second by second, in integers: a bid ends with exactly what was paid charged, and what a stop
 * leaves uncharged goes back whole.
 */
export interface BidState {
  paid: number
  charged: number
  /** Up to when (ms) `charged` counts: always a whole number of seconds after the bid began. */
  chargedTo: number
  /** When (ms) the bid ends: by then all it was paid is charged. */
  until: number
}

const SECOND = 1000

/** What of the bid is charged at `now`. */
export function chargedAt (b: BidState, now: number): number {
  if (now >= b.until) return b.paid
  const seconds = Math.max(0, Math.floor((now - b.chargedTo) / SECOND))
  const total = Math.ceil((b.until - b.chargedTo) / SECOND)
  // BigInt: credits times seconds may exceed what a double holds exactly.
  return b.charged + Number(BigInt(b.paid - b.charged) * BigInt(seconds) / BigInt(total))
}

/** The bid with what is charged at `now` written down (from the last whole second on, nothing is lost). */
export function settle (b: BidState, now: number): BidState {
  if (now >= b.until) return { ...b, charged: b.paid, chargedTo: b.until }
  const seconds = Math.max(0, Math.floor((now - b.chargedTo) / SECOND))
  return { ...b, charged: chargedAt(b, now), chargedTo: b.chargedTo + seconds * SECOND }
}

/**
 * The bid changed at `now`: `added` more credits paid into it, and, with `seconds`, all it
 * holds spread over that many seconds from now (Tycoon's Fig. 2: lengthening or shortening a bid
 * changes its rate without a payment).
 */
export function changed (b: BidState, now: number, added: number, seconds?: number): BidState {
  const s = settle(b, now)
  return { ...s, paid: s.paid + added, until: seconds === undefined ? s.until : now + seconds * SECOND }
}

/** A new bid of `amount` credits over `seconds` seconds from `now`. */
export function opened (amount: number, seconds: number, now: number): BidState {
  return { paid: amount, charged: 0, chargedTo: now, until: now + seconds * SECOND }
}

/**
 * Credits per second the bid pays at `now`: what was left at its last change over the time that
 * was left then (charges follow it second by second, so it holds until the next change), 0 once
 * it ended.
 */
export function rateAt (b: BidState, now: number): number {
  if (now >= b.until) return 0
  return (b.paid - b.charged) / ((b.until - b.chargedTo) / SECOND)
}

/**
 * Each instance's share of the CPU its host offers: those with a bid (a rate above zero) share
 * in proportion to their rates what the unbid ones' floor leaves; each unbid one gets the floor
 * (all of them together at most half, so that bids always buy most). Without bids, the unbid
 * share equally.
 */
export function sharesOf (rates: ReadonlyMap<string, number>, unbid: readonly string[], floor: number): Map<string, number> {
  const shares = new Map<string, number>()
  const sum = [...rates.values()].reduce((n, r) => n + r, 0)
  const each = rates.size === 0 ? 1 / Math.max(1, unbid.length) : Math.min(floor, 0.5 / Math.max(1, unbid.length))
  for (const id of unbid) shares.set(id, each)
  const left = 1 - each * unbid.length
  for (const [id, r] of rates) shares.set(id, left * r / sum)
  return shares
}
