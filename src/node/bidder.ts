import type { Logger } from 'pino'
import {
  allowanceId, allowanceSigned, signAction, signSpend, toXenosError, XenosError,
  type Allowance, type BidParams, type BudgetView, type MarketView, type OwnerKey, type Receipt, type RequestAuth,
} from '../core/index.ts'
import { ORDER_VALID_MS, rebid, type BidStep, type HostPrice } from '../market/index.ts'
import type { BudgetPaymentRecord, BudgetRecord, BudgetTable } from '../store/index.ts'
import type { Banking } from './banking.ts'
import type { Bidding, Quote } from './bidding.ts'

export interface BidderInit {
  /** The agent's key: allowances name it, and it signs the payments and bids made under them. */
  key: OwnerKey
  budgets: BudgetTable
  banking: Pick<Banking, 'spend'>
  bidding: Pick<Bidding, 'bid' | 'quote'>
  /** Each host's price as its advert says now: a change sets off a round before its time. */
  advertised: () => ReadonlyMap<string, number>
  log: Logger
}

/** A bid a budget's first round paid for, handed to the deploy that makes its instance. */
export interface HandedBid {
  instance: string
  host: string
  params: Required<BidParams>
  auth: RequestAuth
  allowance: Allowance
}

/** How often budgets are looked at: for unsettled payments, their end, and prices that moved. */
const TICK_MS = 1000
/** A price that moved by more than this since a budget's last round sets off the next one now. */
const PRICE_MOVE = 0.2
/** The least time between two rounds of one budget (a price that moves again and again is followed at this pace). */
const MIN_ROUND_MS = 2000
/** Codes of failures that pass (the bank or a host could not be reached): the same order goes again. */
const PASSING = new Set(['PEER_UNREACHABLE', 'TIMEOUT', 'PEER_PROTOCOL', 'INTERNAL'])

/** A budget's last round: when it was, when the next is due, and the prices it saw. */
interface Round {
  at: number
  next: number
  prices: Map<string, number>
}

/** Codes of a host's refusals of a bid that pass too: its instance is not made yet, or not running yet. */
const NOT_YET = new Set(['INSTANCE_NOT_FOUND', 'INVALID_STATE'])

/** The time between a budget's rounds: a thirtieth of its length, from 5 s to a minute. */
export function roundMsOf (seconds: number): number {
  return Math.min(60_000, Math.max(5000, Math.round(seconds * 1000 / 30)))
}

/**
 * A host's automatic bidder (Tycoon's agent): it spends owners' budgets under the allowances
 * they sign it, round after round, by the best response to what others bid on the hosts that
 * run each budget's instances, until the budget's time ends. Every payment is written before it
 * is sent and sent again until the bank answers, under its own nonce: a crash pays nothing twice.
 */
export class Bidder {
  readonly #init: BidderInit
  /** Per budget: when its next round is due, and the prices its last round saw. */
  readonly #rounds = new Map<string, Round>()
  /** The bids each budget's instances hold, as their hosts last said. */
  readonly #seen = new Map<string, Map<string, MarketView>>()
  #timer: NodeJS.Timeout | undefined
  #ticking = false

  constructor (init: BidderInit) {
    this.#init = init
  }

  /** The key owners name in the allowances they give this host's bidder. */
  get agent (): string {
    return this.#init.key.id
  }

  start (): void {
    this.#timer = setInterval(() => { void this.#tick() }, TICK_MS)
    this.#timer.unref()
  }

  stop (): void {
    clearInterval(this.#timer)
  }

  /**
   * Takes on the budget `allowance` gives (its instances on `hosts`, which are to be deployed):
   * pays its first round, and answers each instance's bid, for the deploy to open. Asked again,
   * it pays nothing more and answers the same bids.
   */
  async open (allowance: Allowance, hosts: Record<string, string>, now = Date.now()): Promise<HandedBid[]> {
    const id = this.#check(allowance, hosts, now)
    if (this.#init.budgets.get(id) === undefined) await this.#firstRound(id, allowance, hosts, now)
    const handed: HandedBid[] = []
    for (const p of this.#init.budgets.payments(id)) {
      if (p.state !== 'pending' && p.state !== 'handed') continue
      const receipt = p.receipt ?? await this.#pay(p)
      if (receipt === undefined) continue
      this.#init.budgets.settle(p.nonce, 'handed', receipt)
      const host = hosts[p.instanceId] ?? ''
      const params = { receipt, seconds: p.seconds }
      handed.push({ instance: p.instanceId, host, params, auth: this.#sign('bid', p.instanceId, params, host), allowance })
    }
    return handed
  }

  /** Writes budget `id` with the payments of its first round (by the best response to what the hosts' prices are now). */
  async #firstRound (id: string, allowance: Allowance, hosts: Record<string, string>, now: number): Promise<void> {
    const quotes = await this.#quotes(allowance, new Set(Object.values(hosts)))
    const silent = Object.values(hosts).find(h => !quotes.has(h))
    if (silent !== undefined) throw new XenosError('PEER_UNREACHABLE', `host ${silent} did not say what it asks for its CPU: try again, or deploy elsewhere`)
    const unpaid = [...quotes].find(([, q]) => !allowance.payees.includes(q.escrow))
    if (unpaid !== undefined) throw new XenosError('INVALID_ARGUMENT', `the allowance does not name host ${unpaid[0]}'s escrow (${unpaid[1].escrow}) among its payees: its bids could not be paid`)
    const instances = allowance.instances.map(i => ({ id: i, host: hosts[i] ?? '', bid: {} }))
    const horizon = this.#horizon(allowance, now)
    const steps = rebid({ now, until: allowance.until, left: allowance.max, horizon, prices: quotes, instances }).filter(s => s.pay > 0)
    // Every instance is deployed with a bid (a market-only host takes none without): the smallest one, where the best response leaves it out.
    for (const i of instances) if (!steps.some(s => s.instance === i.id)) steps.push({ instance: i.id, host: i.host, pay: 1, seconds: horizon })
    const payments = steps.map(s => this.#payment(id, allowance, s, quotes.get(s.host)?.escrow ?? '', now))
    const record: BudgetRecord = { id, owner: allowance.owner, allowance, hosts, state: 'active', createdAt: now, updatedAt: now }
    if (this.#init.budgets.open(record, payments)) this.#init.log.info({ id, owner: allowance.owner, max: allowance.max, instances: allowance.instances.length }, 'budget opened')
    this.#rounds.set(id, roundOf(allowance, quotes, now))
  }

  /** Budget `id` as its owner (`owner`) sees it, each bid as its host says now (or said last, when it does not answer). */
  async view (id: string, owner: string): Promise<BudgetView> {
    const b = this.#owned(id, owner)
    const quotes = await this.#quotes(b.allowance, new Set(Object.values(b.hosts)))
    const seen = new Map([...this.#seen.get(id) ?? [], ...[...quotes.values()].flatMap(q => Object.entries(q.instances))])
    const payments = this.#init.budgets.payments(id)
    return {
      id,
      owner: b.owner,
      state: b.state,
      max: b.allowance.max,
      paid: payments.reduce((n, p) => n + p.amount, 0),
      until: b.allowance.until,
      nextRound: this.#rounds.get(id)?.next ?? null,
      instances: Object.entries(b.hosts).map(([instance, host]) => ({ id: instance, host, ...seen.get(instance) ?? {} })),
      stranded: payments.filter(p => p.state === 'stranded').flatMap(p => p.receipt === null ? [] : [p.receipt]),
    }
  }

  /** Stops spending budget `id` at its owner's word: its bids run out (and pay back what they hold) by themselves. */
  async stopBudget (id: string, owner: string): Promise<BudgetView> {
    if (this.#owned(id, owner).state === 'active') this.#init.budgets.setState(id, 'stopped')
    this.#rounds.delete(id)
    return await this.view(id, owner)
  }

  #owned (id: string, owner: string): BudgetRecord {
    const b = this.#init.budgets.get(id)
    if (b === undefined) throw new XenosError('BUDGET_NOT_FOUND', `this host's bidder spends no budget ${id}`)
    if (b.owner !== owner) throw new XenosError('FORBIDDEN', `budget ${id} is another owner's`)
    return b
  }

  /** Throws unless `allowance` is its owner's, for this agent, not ended, and names the hosts of its instances; answers its id. */
  #check (allowance: Allowance, hosts: Record<string, string>, now: number): string {
    if (!allowanceSigned(allowance)) throw new XenosError('UNAUTHENTICATED', `this allowance is not signed by the owner it names (${allowance.owner})`)
    if (allowance.agent !== this.agent) throw new XenosError('FORBIDDEN', `this allowance is for agent ${allowance.agent}, not for this host's bidder (${this.agent}): sign it for the host you ask`)
    if (allowance.until <= now + 1000) throw new XenosError('INVALID_ARGUMENT', `this allowance ended at ${new Date(allowance.until).toISOString()}`)
    const named = Object.keys(hosts)
    if (named.length !== allowance.instances.length || allowance.instances.some(i => hosts[i] === undefined)) {
      throw new XenosError('INVALID_ARGUMENT', 'name the host of each of the allowance\'s instances, and of no other')
    }
    return allowanceId(allowance)
  }

  /** How far ahead a round pays: two rounds, so that a bid outlasts one late round. */
  #horizon (allowance: Allowance, now: number): number {
    return Math.ceil(2 * roundMsOf((allowance.until - now) / 1000) / 1000)
  }

  #payment (budget: string, allowance: Allowance, step: BidStep, escrow: string, now: number): BudgetPaymentRecord {
    const spend = signSpend(this.#init.key, { allowance, to: escrow, amount: step.pay, memo: `bid on ${step.instance}` }, now)
    return { nonce: spend.nonce, budget, instanceId: step.instance, amount: step.pay, seconds: step.seconds, spend, receipt: null, state: 'pending', createdAt: now }
  }

  #sign (action: string, target: string, params: unknown, host: string): RequestAuth {
    return signAction(this.#init.key, { action, target, params, host })
  }

  /** Each of `hosts`' price, offered CPU and escrow, and the bids it holds of `allowance`'s instances; a host that does not answer is left out. */
  async #quotes (allowance: Allowance, hosts: ReadonlySet<string>): Promise<Map<string, Quote & HostPrice>> {
    const id = allowanceId(allowance)
    const answers = await Promise.all([...hosts].map(async host => {
      try {
        return [host, await this.#init.bidding.quote(allowance, this.#sign('quote', id, {}, host))] as const
      } catch (err) {
        this.#init.log.debug({ err: toXenosError(err), host }, 'host gave no quote')
        return undefined
      }
    }))
    return new Map(answers.filter(a => a !== undefined))
  }

  /** Sends payment `p` to the bank (signed again, under its nonce, once it grew old); its receipt, or nothing while the bank does not answer. */
  async #pay (p: BudgetPaymentRecord): Promise<Receipt | undefined> {
    const { allowance, to, amount, memo } = p.spend
    const spend = Date.now() - p.spend.issuedAt < ORDER_VALID_MS / 2 ? p.spend : signSpend(this.#init.key, { allowance, to, amount, memo }, Date.now(), p.nonce)
    try {
      const receipt = await this.#init.banking.spend(spend)
      this.#init.budgets.settle(p.nonce, 'paid', receipt)
      return receipt
    } catch (err) {
      const e = toXenosError(err)
      if (PASSING.has(e.code)) {
        this.#init.log.debug({ err: e, nonce: p.nonce }, 'payment waits for the bank')
        return undefined
      }
      // Refused (the allowance is spent, the owner's account empty): it never happened.
      this.#init.budgets.drop(p.nonce)
      this.#init.log.warn({ err: e, budget: p.budget, amount: p.amount }, 'payment refused')
      return undefined
    }
  }

  async #tick (): Promise<void> {
    if (this.#ticking) return
    this.#ticking = true
    try {
      for (const b of this.#init.budgets.active()) {
        await this.#round(b).catch((err: unknown) => { this.#init.log.warn({ err: toXenosError(err), budget: b.id }, 'budget round failed') })
      }
    } finally {
      this.#ticking = false
    }
  }

  /** Settles what is unsettled of budget `b`; then, when its round is due, bids again. */
  async #round (b: BudgetRecord, now = Date.now()): Promise<void> {
    if (now >= b.allowance.until) {
      // What was paid and never taken by a bid is the owner's to ask back; what the bank never answered never happened.
      for (const p of this.#init.budgets.unsettled(b.id)) {
        if (p.receipt === null) this.#init.budgets.drop(p.nonce)
        else this.#init.budgets.settle(p.nonce, 'stranded')
      }
      this.#init.budgets.setState(b.id, 'ended')
      this.#rounds.delete(b.id)
      this.#init.log.info({ id: b.id }, 'budget ended')
      return
    }
    for (const p of this.#init.budgets.unsettled(b.id)) await this.#settle(b, p)
    const round = this.#rounds.get(b.id)
    if (round !== undefined && now < round.next && !this.#pricesMoved(round, now)) return
    const quotes = await this.#quotes(b.allowance, new Set(Object.values(b.hosts)))
    this.#seen.set(b.id, new Map([...quotes.values()].flatMap(q => Object.entries(q.instances))))
    const instances = Object.entries(b.hosts).flatMap(([id, host]) => {
      const bid = quotes.get(host)?.instances[id]
      return bid === undefined ? [] : [{ id, host, bid }]
    })
    const left = b.allowance.max - this.#init.budgets.paid(b.id)
    const steps = rebid({ now, until: b.allowance.until, left, horizon: this.#horizon(b.allowance, now), prices: quotes, instances })
    this.#rounds.set(b.id, roundOf(b.allowance, quotes, now))
    for (const s of steps) {
      if (s.pay === 0) {
        await this.#bid(b, s.instance, { seconds: s.seconds })
        continue
      }
      const p = this.#payment(b.id, b.allowance, s, quotes.get(s.host)?.escrow ?? '', now)
      this.#init.budgets.addPayment(p)
      await this.#settle(b, p)
    }
  }

  /** Whether a host's advertised price moved enough since round `round` to bid again now. */
  #pricesMoved (round: Round, now: number): boolean {
    if (now - round.at < MIN_ROUND_MS) return false
    const advertised = this.#init.advertised()
    return [...round.prices].some(([host, was]) => {
      const is = advertised.get(host)
      return is !== undefined && Math.abs(is - was) > PRICE_MOVE * Math.max(is, was)
    })
  }

  /** Carries payment `p` on: to the bank until it answers, then to the instance's host until its bid takes it (or will not). */
  async #settle (b: BudgetRecord, p: BudgetPaymentRecord): Promise<void> {
    const receipt = p.receipt ?? await this.#pay(p)
    if (receipt === undefined) return
    // A bid under the allowance ends within it.
    const seconds = Math.min(p.seconds, Math.floor((b.allowance.until - Date.now()) / 1000))
    if (seconds < 1) return
    try {
      await this.#bid(b, p.instanceId, { receipt, seconds }, true)
      this.#init.budgets.settle(p.nonce, 'bid')
    } catch (err) {
      const e = toXenosError(err)
      if (e.code === 'RECEIPT_SPENT') this.#init.budgets.settle(p.nonce, 'bid')
      else if (!PASSING.has(e.code) && !NOT_YET.has(e.code)) {
        // Its host will not take the bid: the receipt is the owner's to ask back (xenos budget shows it). An instance not made yet is waited for until the budget ends.
        this.#init.budgets.settle(p.nonce, 'stranded')
        this.#init.log.warn({ err: e, budget: b.id, instance: p.instanceId, seq: receipt.seq }, 'payment stranded')
      }
    }
  }

  async #bid (b: BudgetRecord, instance: string, params: BidParams, rethrow = false): Promise<void> {
    const host = b.hosts[instance] ?? ''
    try {
      const view = await this.#init.bidding.bid(instance, params, this.#sign('bid', instance, params, host), b.allowance)
      this.#seen.get(b.id)?.set(instance, view)
    } catch (err) {
      if (rethrow) throw err
      this.#init.log.debug({ err: toXenosError(err), instance }, 'bid change refused')
    }
  }
}

function roundOf (allowance: Allowance, quotes: ReadonlyMap<string, HostPrice>, now: number): Round {
  return { at: now, next: now + roundMsOf((allowance.until - now) / 1000), prices: new Map([...quotes].map(([h, q]) => [h, q.price])) }
}
