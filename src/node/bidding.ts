import type { Logger } from 'pino'
import { z } from 'zod'
import {
  allowanceId, allowanceSchema, allowanceSigned, bidParamsSchema, instanceIdSchema, marketViewSchema, receiptSchema, requestAuthSchema, signTransfer, toXenosError, XenosError,
  type Allowance, type BidParams, type DeployPart, type MarketView, type OwnerKey, type Receipt, type RequestAuth,
} from '../core/index.ts'
import { MAX_CPU_WEIGHT, type Cgroups } from '../hypervisor/index.ts'
import { ORDER_VALID_MS, type Auctioneer } from '../market/index.ts'
import type { Overlay } from '../overlay/index.ts'
import type { BidTable, InstanceRecord, PayoutRecord } from '../store/index.ts'
import type { Banking } from './banking.ts'
import { callHost } from './remote.ts'
import type { RequestVerifier } from './replay.ts'

export interface BiddingInit {
  overlay: Pick<Overlay, 'peerId' | 'rpc' | 'learnHost'>
  auctioneer: Auctioneer
  bids: Pick<BidTable, 'owed' | 'paidOut' | 'unspent'>
  /** The key of the host's escrow account, which signs its refunds and earnings. */
  escrow: OwnerKey
  banking: Pick<Banking, 'transfer'>
  /** Where shares are enforced: the host's control groups (none: shares are only shown). */
  cgroups: Cgroups | undefined
  /** The instances of this host, as their records are now. */
  instances: () => Array<Pick<InstanceRecord, 'id' | 'owner' | 'state' | 'resources'>>
  verifier: RequestVerifier
  /** Whether every instance here must come with a bid (`xenosd --market-only`). */
  marketOnly: boolean
  /** Called when the host's price changed (its advert carries it). */
  onPriceChange: () => void
  log: Logger
}

const bidRequestSchema = z.strictObject({ id: instanceIdSchema, params: bidParamsSchema, auth: requestAuthSchema, allowance: allowanceSchema.optional() })
const quoteRequestSchema = z.strictObject({ allowance: allowanceSchema, auth: requestAuthSchema })

/** What a host tells an allowance's agent: its price and the CPU it offers, and the bids of the allowance's instances it runs. */
export const quoteSchema = z.strictObject({
  /** The host's escrow account, into which bids are paid. */
  escrow: z.string(),
  price: z.number().nonnegative(),
  cpu: z.number().positive(),
  instances: z.record(instanceIdSchema, marketViewSchema),
})
export type Quote = z.infer<typeof quoteSchema>
const refundRequestSchema = z.strictObject({ receipt: receiptSchema, auth: requestAuthSchema })

/** The bids a deploy's part carries, one per instance. */
export type PartBids = NonNullable<DeployPart['bids']>

/**
 * Throws unless `signer` may bid as `params` say on instance `id` of `owner`'s: its owner, or
 * the agent `allowance` names, when the owner signed it, it names the instance, and the bid
 * ends within it.
 */
function checkBidder (signer: string, id: string, owner: string, params: BidParams, allowance: Allowance | undefined, now = Date.now()): void {
  if (allowance === undefined) {
    if (signer !== owner) throw new XenosError('FORBIDDEN', `instance ${id} belongs to another owner; only its owner (or an agent it allows) may bid for it`)
    return
  }
  const name = `allowance ${allowanceId(allowance).slice(0, 12)}`
  if (allowance.owner !== owner || !allowanceSigned(allowance)) throw new XenosError('FORBIDDEN', `${name} is not signed by the owner of instance ${id}`)
  if (allowance.agent !== signer) throw new XenosError('FORBIDDEN', `${name} lets ${allowance.agent} bid, not ${signer}`)
  if (!allowance.instances.includes(id)) throw new XenosError('FORBIDDEN', `${name} is not for instance ${id}`)
  if (now + (params.seconds ?? 0) * 1000 > allowance.until + 1000) throw new XenosError('FORBIDDEN', `${name} ends at ${new Date(allowance.until).toISOString()}: a bid under it ends by then`)
}

/** How often bids are looked at for their end, and payouts sent again while the bank does not answer. */
const TICK_MS = 1000
/** A payout's order is signed again (under its own nonce) once it is this old: the bank carries out only fresh orders. */
const RESIGN_AFTER_MS = ORDER_VALID_MS / 2

/**
 * The market on this host: owners' bids (signed for this host, relayed to it from any other),
 * each instance's share of the CPU enforced as its control group's weight — instances with a bid
 * uncapped (their share is work-conserving, as in Tycoon), those without kept to what their
 * template asks — and what ended bids owe paid out of the escrow through the bank, again and
 * again until it answers.
 */
export class Bidding {
  readonly #init: BiddingInit
  readonly #signed = new Map<string, ReturnType<typeof signTransfer>>()
  #timer: NodeJS.Timeout | undefined
  #paying = false
  #enforcing: Promise<void> = Promise.resolve()
  #lastPrice = 0
  /** The shares last weighed: they change only when a bid or an instance does, and each change weighs them again. */
  #weighed: Map<string, number> | undefined

  constructor (init: BiddingInit) {
    this.#init = init
  }

  get #self (): string {
    return this.#init.overlay.peerId
  }

  /** The host's escrow account, into which bids are paid. */
  get escrow (): string {
    return this.#init.auctioneer.escrow
  }

  /** The host's price now (credits per second of all bids, per CPU offered). */
  price (): number {
    return this.#init.auctioneer.price()
  }

  serve (): void {
    const { rpc } = this.#init.overlay
    rpc.handle('instance.bid', bidRequestSchema, async req => await this.#bidHere(req.id, req.params, req.auth, req.allowance))
    rpc.handle('market.quote', quoteRequestSchema, async req => this.#quoteHere(req.allowance, req.auth))
    rpc.handle('market.refund', refundRequestSchema, async req => { this.#refundHere(req.receipt, req.auth) })
  }

  /**
   * Throws unless a deploy's part may make instances `ids` of `owner`'s here with `bids`: a new
   * bid (a receipt, a time) for each instance it names, once, signed by `owner` (or the agent of
   * an allowance of `owner`'s) for this host, each receipt good here and unspent; an instance
   * without a bid, unless the host is market-only. Checked before the instances are made, as a
   * template may take long to fetch.
   */
  checkDeploy (owner: string, ids: readonly string[], bids: PartBids | undefined): void {
    if (this.#init.marketOnly && (bids?.length ?? 0) < ids.length) throw new XenosError('BID_REQUIRED', `host ${this.#self} is market-only: deploy with a bid for each instance (--bid AMOUNT --for DURATION)`)
    if (bids === undefined) return
    const named = bids.map(b => b.instance)
    if (named.some(i => !ids.includes(i)) || new Set(named).size !== named.length) throw new XenosError('INVALID_ARGUMENT', 'a deploy part carries at most one bid for each of its instances, and none for others')
    for (const { instance, params, auth, allowance } of bids) {
      if (params.receipt === undefined || params.seconds === undefined) throw new XenosError('INVALID_ARGUMENT', 'a deploy\'s bid is a new one: a receipt and a time')
      const signer = this.#init.verifier.verify(auth, { action: 'bid', target: instance, params })
      checkBidder(signer, instance, owner, params, allowance)
      this.#init.auctioneer.checkReceipt(owner, params.receipt)
      this.#init.bids.unspent(params.receipt)
    }
  }

  /** Opens the bids a deploy's part carried (checked by `checkDeploy`) on its instances, now made. */
  async openDeployed (owner: string, bids: PartBids): Promise<void> {
    for (const { instance, params } of bids) this.#init.auctioneer.bid(instance, owner, params)
    await this.enforce()
  }

  /**
   * Pays back a payment into this host's escrow that no bid took (a deploy that failed before
   * its bids were opened), to the owner who signs for it (`refund` on the receipt's hash).
   */
  async refund (receipt: Receipt, auth: RequestAuth): Promise<void> {
    if (auth.host === this.#self) {
      this.#refundHere(receipt, auth)
      return
    }
    await callHost(this.#init.overlay, auth.host, 'market.refund', { receipt, auth })
  }

  #refundHere (receipt: Receipt, auth: RequestAuth): void {
    this.#init.verifier.verify(auth, { action: 'refund', target: receipt.hash, params: {} })
    this.#init.auctioneer.refund(auth.owner, receipt)
    void this.#payOut()
  }

  start (): void {
    this.#timer = setInterval(() => { void this.#tick() }, TICK_MS)
    this.#timer.unref()
    void this.#tick()
  }

  stop (): void {
    clearInterval(this.#timer)
  }

  /**
   * Opens or changes an instance's bid, wherever it runs: signed `bid` for the host that runs it
   * by its owner, or by the agent that `allowance` (the owner's) names for it.
   */
  async bid (id: string, params: BidParams, auth: RequestAuth, allowance?: Allowance): Promise<MarketView> {
    if (auth.host === this.#self) return await this.#bidHere(id, params, auth, allowance)
    return marketViewSchema.parse(await callHost(this.#init.overlay, auth.host, 'instance.bid', { id, params, auth, ...allowance === undefined ? {} : { allowance } }))
  }

  async #bidHere (id: string, params: BidParams, auth: RequestAuth, allowance: Allowance | undefined): Promise<MarketView> {
    const signer = this.#init.verifier.verify(auth, { action: 'bid', target: id, params })
    const view = this.#init.instances().find(v => v.id === id)
    if (view === undefined) throw new XenosError('INSTANCE_NOT_FOUND', `host ${this.#self} runs no instance ${id}`)
    checkBidder(signer, id, view.owner, params, allowance)
    if (view.state !== 'running' && view.state !== 'paused') throw new XenosError('INVALID_STATE', `instance ${id} is ${view.state}: bids are for running instances`)
    this.#init.auctioneer.bid(id, view.owner, params)
    await this.enforce()
    return this.view(id)
  }

  /** This host's price, and the bids of `allowance`'s instances here, as its agent asks (signed `quote` on the allowance's id, for the host it asks). */
  async quote (allowance: Allowance, auth: RequestAuth): Promise<Quote> {
    if (auth.host === this.#self) return this.#quoteHere(allowance, auth)
    return quoteSchema.parse(await callHost(this.#init.overlay, auth.host, 'market.quote', { allowance, auth }))
  }

  #quoteHere (allowance: Allowance, auth: RequestAuth): Quote {
    const signer = this.#init.verifier.verify(auth, { action: 'quote', target: allowanceId(allowance), params: {} })
    if (signer !== allowance.agent || !allowanceSigned(allowance)) throw new XenosError('FORBIDDEN', `only the agent of an allowance its owner signed sees the bids it pays for (${signer} is not ${allowance.agent})`)
    const running = new Set(this.#init.instances().filter(v => v.owner === allowance.owner && v.state === 'running').map(v => v.id))
    const instances = Object.fromEntries(allowance.instances.filter(id => running.has(id)).map(id => [id, this.view(id)]))
    return { escrow: this.escrow, price: this.price(), cpu: this.#init.auctioneer.cpu, instances }
  }

  /** What the views of instance `id` show of its bid and share. */
  view (id: string): MarketView {
    const share = (this.#weighed ?? this.#shares()).get(id)
    return { ...this.#init.auctioneer.view(id), ...share === undefined ? {} : { share } }
  }

  /** An instance changed: a bid ends with its instance's time here (it stopped, ended, left or is gone). */
  changed (id: string, record: Pick<InstanceRecord, 'state'> | undefined): void {
    if (record === undefined || (record.state !== 'running' && record.state !== 'paused' && record.state !== 'creating')) {
      if (this.#init.auctioneer.close(id).length > 0) void this.#payOut()
    }
    void this.enforce()
  }

  /**
   * Each running instance's share, as control-group weights. One at a time, each computing the
   * shares when it starts: weights worked out before a later bid never land after its own.
   */
  async enforce (): Promise<void> {
    const next = this.#enforcing.then(async () => { await this.#weigh() })
    this.#enforcing = next.catch(() => {})
    await next
  }

  async #weigh (): Promise<void> {
    const { cgroups, auctioneer } = this.#init
    const shares = this.#shares()
    this.#weighed = shares
    if (cgroups !== undefined) {
      const running = new Map(this.#init.instances().map(v => [v.id, v]))
      await Promise.all([...shares].map(async ([id, share]) => {
        const cap = auctioneer.bidding(id) ? null : running.get(id)?.resources.cpu ?? null
        // An instance whose task has no control group (started without one, or gone meanwhile) is left as it is.
        await cgroups.weigh(id, share * MAX_CPU_WEIGHT, cap).then(
          () => { this.#init.log.debug({ id, share, cap }, 'instance weighed') },
          (err: unknown) => { this.#init.log.debug({ err, id }, 'cannot weigh instance') },
        )
      }))
    }
    const price = this.price()
    if (price !== this.#lastPrice) {
      this.#lastPrice = price
      this.#init.onPriceChange()
    }
  }

  #shares (): Map<string, number> {
    return this.#init.auctioneer.shares(this.#init.instances().filter(v => v.state === 'running').map(v => v.id))
  }

  async #tick (): Promise<void> {
    if (this.#init.auctioneer.expire().length > 0) await this.enforce()
    await this.#payOut()
  }

  /** Sends every payout the bank has not answered; each under its own nonce, so that none is carried out twice. */
  async #payOut (): Promise<void> {
    if (this.#paying) return
    this.#paying = true
    try {
      for (const p of this.#init.bids.owed()) await this.#send(p)
    } finally {
      this.#paying = false
    }
  }

  async #send (p: PayoutRecord): Promise<void> {
    const now = Date.now()
    const held = this.#signed.get(p.nonce)
    const order = held !== undefined && now - held.issuedAt < RESIGN_AFTER_MS
      ? held
      : signTransfer(this.#init.escrow, { bank: p.bank, to: p.toAccount, amount: p.amount, memo: p.memo }, now, p.nonce)
    this.#signed.set(p.nonce, order)
    try {
      const receipt = await this.#init.banking.transfer(order)
      this.#init.bids.paidOut(p.nonce, receipt)
      this.#signed.delete(p.nonce)
      this.#init.log.info({ to: p.toAccount, amount: p.amount, seq: receipt.seq }, 'paid out')
    } catch (err) {
      // The bank is down or unreachable: the same payout goes again on the next tick.
      this.#init.log.debug({ err: toXenosError(err), nonce: p.nonce }, 'payout waits for the bank')
    }
  }
}
