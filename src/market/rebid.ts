import type { MarketView } from '../core/index.ts'
import { bestResponse } from './best-response.ts'

/** What a host asks now: its price (credits per second of all bids, per CPU offered) and the CPUs it offers. */
export interface HostPrice {
  price: number
  cpu: number
}

/** One of a budget's instances, on its host, with its bid as the host last said. */
export interface BudgetInstance {
  id: string
  host: string
  bid: MarketView
}

export interface RebidInput {
  now: number
  /** When the budget ends (ms). */
  until: number
  /** Credits the allowance may still pay. */
  left: number
  /** How far ahead (s) each round of bids pays for: bids are set again before they run out. */
  horizon: number
  prices: ReadonlyMap<string, HostPrice>
  /** The budget's instances that run now, each on a host in `prices`. */
  instances: readonly BudgetInstance[]
}

/** One bid to make: pay `pay` credits more (0: none) and make all the bid holds last `seconds` from now. */
export interface BidStep {
  instance: string
  host: string
  pay: number
  seconds: number
}

/** Rates that differ by less than this are left as they are: a new bid for nothing is churn. */
const RATE_TOLERANCE = 0.05

/** What bid `v` holds still unspent (nothing once it ran out). */
function holding (v: MarketView, now: number): number {
  return (v.bidUntil ?? 0) > now ? Math.max(0, (v.bid ?? 0) - (v.spent ?? 0)) : 0
}

/** The rate bid `v` pays now. */
function rateOf (v: MarketView, now: number): number {
  return (v.bidUntil ?? 0) > now ? v.rate ?? 0 : 0
}

/**
 * A round of an automatic bidder (Tycoon's best-response agent): what the budget has left (the
 * allowance's rest and what its bids hold unspent), spread evenly over the time to its end, is
 * split over the hosts by the best response to what the others bid there (a host's bid sum less
 * the budget's own), each host's part evenly over the budget's instances on it; each bid is then
 * paid up to its part for the next `horizon` seconds, or stretched (a longer time, a lower rate)
 * when it holds more than its part.
 */
export function rebid (input: RebidInput): BidStep[] {
  const { now, until, instances, prices } = input
  const rest = Math.floor((until - now) / 1000)
  if (rest < 1 || instances.length === 0) return []
  const horizon = Math.min(rest, input.horizon)
  const held = instances.reduce((n, i) => n + holding(i.bid, now), 0)
  const budget = (input.left + held) * horizon / rest
  const byHost = new Map<string, BudgetInstance[]>()
  for (const i of instances) byHost.set(i.host, [...byHost.get(i.host) ?? [], i])
  const hosts = [...byHost]
  const markets = hosts.map(([h, here]) => {
    const p = prices.get(h) ?? { price: 0, cpu: 1 }
    const own = here.reduce((n, i) => n + rateOf(i.bid, now), 0)
    return { others: Math.max(0, p.price * p.cpu - own) * horizon, weight: p.cpu }
  })
  const split = bestResponse(budget, markets)
  let left = input.left
  const steps: BidStep[] = []
  for (const [j, [host, here]] of hosts.entries()) {
    const part = (split[j] ?? 0) / here.length
    for (const i of here) {
      const has = holding(i.bid, now)
      const pay = Math.max(0, Math.min(left, Math.ceil(part - has)))
      left -= pay
      const holds = has + pay
      if (holds === 0) continue
      const seconds = part <= 0 ? rest : Math.min(rest, Math.max(1, Math.round(holds * horizon / part)))
      const rate = rateOf(i.bid, now)
      if (pay === 0 && Math.abs(holds / seconds - rate) <= RATE_TOLERANCE * Math.max(rate, holds / seconds)) continue
      steps.push({ instance: i.id, host, pay, seconds })
    }
  }
  return steps
}
