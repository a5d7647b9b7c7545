import { randomBytes } from 'node:crypto'
import { z } from 'zod'
import { canonicalJson, sha256Hex } from './canonical.ts'
import { OWNER_ID_PATTERN, ownerSign, ownerVerifies, type OwnerKey } from './owner.ts'
import { INSTANCE_ID_PATTERN } from './instance.ts'

/**
 * Credits are whole numbers of the smallest unit: never floats, so that every split and every
 * refund adds up exactly.
 */
export const amountSchema = z.number().int().positive().max(Number.MAX_SAFE_INTEGER)

const ownerIdSchema = z.string().regex(OWNER_ID_PATTERN)
const nonceSchema = z.string().regex(/^[0-9a-f]{32}$/)
const hashSchema = z.string().regex(/^[0-9a-f]{64}$/)
// Not views.ts's: those views carry this file's market view.
const instanceIdSchema = z.string().regex(INSTANCE_ID_PATTERN)

/** The account every credit comes from: its balance is minus all that was ever minted, so that all balances sum to zero. */
export const ISSUED_ACCOUNT = '@issued'

/** A payer's order to its bank: move `amount` from its account to `to`'s, once (the nonce), signed with the payer's owner key. */
export const transferOrderSchema = z.strictObject({
  v: z.literal(1),
  /** The bank's key: an order is for one bank. */
  bank: ownerIdSchema,
  from: ownerIdSchema,
  to: ownerIdSchema,
  amount: amountSchema,
  nonce: nonceSchema,
  issuedAt: z.number().int().nonnegative(),
  memo: z.string().max(200).optional(),
  sig: z.string().max(200),
})
export type TransferOrder = z.infer<typeof transferOrderSchema>

/** A bank operator's order to mint `amount` new credits into `to`'s account, once. */
export const mintOrderSchema = z.strictObject({
  v: z.literal(1),
  bank: ownerIdSchema,
  /** The operator who signs it. */
  by: ownerIdSchema,
  to: ownerIdSchema,
  amount: amountSchema,
  nonce: nonceSchema,
  issuedAt: z.number().int().nonnegative(),
  sig: z.string().max(200),
})
export type MintOrder = z.infer<typeof mintOrderSchema>

/**
 * An owner's word that agent `agent` (a host's bidder) may pay, from the owner's account, at
 * most `max` credits in all until `until`, to the accounts `payees` (the escrows of the hosts
 * that run `instances`), for bids on those instances: nothing else, nobody else.
 */
export const allowanceSchema = z.strictObject({
  v: z.literal(1),
  bank: ownerIdSchema,
  owner: ownerIdSchema,
  agent: ownerIdSchema,
  max: amountSchema,
  until: z.number().int().positive(),
  payees: z.array(ownerIdSchema).min(1).max(100),
  instances: z.array(instanceIdSchema).min(1).max(100),
  nonce: nonceSchema,
  issuedAt: z.number().int().nonnegative(),
  sig: z.string().max(200),
})
export type Allowance = z.infer<typeof allowanceSchema>

/** An agent's order to pay `amount` under `allowance` to one of its payees, once (the nonce), signed by the agent it names. */
export const spendOrderSchema = transferOrderSchema.omit({ from: true }).extend({ allowance: allowanceSchema })
export type SpendOrder = z.infer<typeof spendOrderSchema>

export const LEDGER_KINDS = ['mint', 'grant', 'transfer', 'spend'] as const

/**
 * One entry of a bank's ledger: `amount` moves from account `from` to account `to` (double
 * entry: one debit, one credit), chained to the entry before it by `prev`, the hash of that one.
 * `order` is the signed order it carries out (none for a starting grant).
 */
export const ledgerEntrySchema = z.strictObject({
  seq: z.number().int().positive(),
  kind: z.enum(LEDGER_KINDS),
  from: z.string().max(64),
  to: ownerIdSchema,
  amount: amountSchema,
  nonce: nonceSchema,
  order: z.string().max(4096).nullable(),
  at: z.number().int().nonnegative(),
  prev: hashSchema,
  hash: hashSchema,
})
export type LedgerEntry = z.infer<typeof ledgerEntrySchema>

/** The hash before the first entry. */
export const GENESIS_HASH = '0'.repeat(64)

/** What a bank answers for each entry: the entry, signed with the bank's key, which anyone can check offline. */
export const receiptSchema = z.strictObject({
  v: z.literal(1),
  bank: ownerIdSchema,
  seq: z.number().int().positive(),
  hash: hashSchema,
  kind: z.enum(LEDGER_KINDS),
  from: z.string().max(64),
  to: ownerIdSchema,
  amount: amountSchema,
  nonce: nonceSchema,
  at: z.number().int().nonnegative(),
  sig: z.string().max(200),
})
export type Receipt = z.infer<typeof receiptSchema>

/** What an owner spent on one instance's bids: what it paid into them, and what came back unspent. */
export const instanceSpendingSchema = z.strictObject({ instance: instanceIdSchema, paid: z.number().int().nonnegative(), back: z.number().int().nonnegative() })
export type InstanceSpending = z.infer<typeof instanceSpendingSchema>

/** An account as its owner sees it: what it holds, what it spent on each instance, and its latest entries (newest first). */
export const accountViewSchema = z.strictObject({ owner: ownerIdSchema, bank: ownerIdSchema, balance: z.number().int(), instances: z.array(instanceSpendingSchema), entries: z.array(ledgerEntrySchema) })
export type AccountView = z.infer<typeof accountViewSchema>

/** The memo of the order entry `e` carries out, if it has one. */
function memoOf (e: LedgerEntry): string {
  try {
    const memo = (JSON.parse(e.order ?? 'null') as { memo?: unknown } | null)?.memo
    return typeof memo === 'string' ? memo : ''
  } catch {
    return ''
  }
}

/** The memo of a payment into an instance's bid, or of its unspent part paid back: the instance is its group. */
const BID_MEMO = new RegExp(`^(?:bid on|unspent bid on instance) (${INSTANCE_ID_PATTERN.source.slice(1, -1)})$`)

/**
 * What `owner` spent on each instance, from its entries (in any order): payments into a bid
 * (memo `bid on ID`, as the CLI and the bidder write it) and what hosts paid back
 * (`unspent bid on instance ID`, or `payment SEQ no bid took` for a payment of a deploy that
 * failed). What a live bid holds counts as paid until it ends.
 */
export function spendingByInstance (owner: string, entries: readonly LedgerEntry[]): InstanceSpending[] {
  const instanceIn = (memo: string): string | undefined => BID_MEMO.exec(memo)?.[1]
  const bySeq = new Map(entries.map(e => [e.seq, e]))
  const spending = new Map<string, InstanceSpending>()
  for (const e of [...entries].sort((a, b) => a.seq - b.seq)) {
    const memo = memoOf(e)
    const unbid = /^payment (\d+) no bid took$/.exec(memo)?.[1]
    const paidFor = unbid === undefined ? undefined : bySeq.get(Number(unbid))
    const instance = instanceIn(paidFor === undefined ? memo : memoOf(paidFor))
    if (instance === undefined) continue
    const spent = spending.get(instance) ?? { instance, paid: 0, back: 0 }
    spending.set(instance, spent)
    if (e.from === owner) spent.paid += e.amount
    else if (e.to === owner) spent.back += e.amount
  }
  return [...spending.values()]
}

/** A fresh nonce for an order. */
export function newNonce (): string {
  return randomBytes(16).toString('hex')
}

function signedBytes (kind: string, unsigned: object): Buffer {
  return Buffer.from(`xenos-${kind}-v1\n${canonicalJson(unsigned)}`)
}

export function signTransfer (key: OwnerKey, o: Pick<TransferOrder, 'bank' | 'to' | 'amount' | 'memo'>, now = Date.now(), nonce = newNonce()): TransferOrder {
  const unsigned = { v: 1 as const, bank: o.bank, from: key.id, to: o.to, amount: o.amount, nonce, issuedAt: now, ...o.memo === undefined ? {} : { memo: o.memo } }
  return { ...unsigned, sig: ownerSign(key, signedBytes('transfer', unsigned)) }
}

export function signAllowance (key: OwnerKey, a: Pick<Allowance, 'bank' | 'agent' | 'max' | 'until' | 'payees' | 'instances'>, now = Date.now(), nonce = newNonce()): Allowance {
  const unsigned = { v: 1 as const, bank: a.bank, owner: key.id, agent: a.agent, max: a.max, until: a.until, payees: a.payees, instances: a.instances, nonce, issuedAt: now }
  return { ...unsigned, sig: ownerSign(key, signedBytes('allowance', unsigned)) }
}

/** Whether `a` is signed by the owner it names. */
export function allowanceSigned (a: Allowance): boolean {
  const { sig, ...unsigned } = a
  return ownerVerifies(a.owner, signedBytes('allowance', unsigned), sig)
}

/** The name of allowance `a`: the hash of all of it, under which a bank counts what was paid by it. */
export function allowanceId (a: Allowance): string {
  return sha256Hex(signedBytes('allowance-id', a))
}

/** Signed by the agent `allowance` names. */
export function signSpend (agent: OwnerKey, o: Pick<SpendOrder, 'allowance' | 'to' | 'amount' | 'memo'>, now = Date.now(), nonce = newNonce()): SpendOrder {
  const unsigned = { v: 1 as const, bank: o.allowance.bank, allowance: o.allowance, to: o.to, amount: o.amount, nonce, issuedAt: now, ...o.memo === undefined ? {} : { memo: o.memo } }
  return { ...unsigned, sig: ownerSign(agent, signedBytes('spend', unsigned)) }
}

/**
 * What is wrong with spend order `o` at time `now`, short of what was paid by its allowance
 * before (the bank's ledger says): null when its allowance is the owner's, the order its
 * agent's, for this bank, to one of its payees, in its time.
 */
export function spendProblem (bank: string, o: SpendOrder, now: number): { code: 'UNKNOWN_BANK' | 'UNAUTHENTICATED' | 'FORBIDDEN', message: string } | null {
  const a = o.allowance
  const name = `allowance ${allowanceId(a).slice(0, 12)}`
  if (a.bank !== bank || o.bank !== bank) return { code: 'UNKNOWN_BANK', message: `this allowance is for bank ${a.bank}, not for bank ${bank}` }
  if (!allowanceSigned(a)) return { code: 'UNAUTHENTICATED', message: `this allowance is not signed by the owner it names (${a.owner})` }
  const { sig, ...unsigned } = o
  if (!ownerVerifies(a.agent, signedBytes('spend', unsigned), sig)) return { code: 'UNAUTHENTICATED', message: `this payment is not signed by the agent its allowance names (${a.agent})` }
  if (!a.payees.includes(o.to)) return { code: 'FORBIDDEN', message: `${name} pays only ${a.payees.join(', ')}, not ${o.to}` }
  if (now > a.until) return { code: 'FORBIDDEN', message: `${name} ended at ${new Date(a.until).toISOString()}` }
  return null
}

/** Whether `o` is signed by the payer it names. */
export function transferSigned (o: TransferOrder): boolean {
  const { sig, ...unsigned } = o
  return ownerVerifies(o.from, signedBytes('transfer', unsigned), sig)
}

export function signMint (key: OwnerKey, o: Pick<MintOrder, 'bank' | 'to' | 'amount'>, now = Date.now(), nonce = newNonce()): MintOrder {
  const unsigned = { v: 1 as const, bank: o.bank, by: key.id, to: o.to, amount: o.amount, nonce, issuedAt: now }
  return { ...unsigned, sig: ownerSign(key, signedBytes('mint', unsigned)) }
}

/** Whether `o` is signed by the operator it names (whether that key is one of the bank's operators is the bank's to say). */
export function mintSigned (o: MintOrder): boolean {
  const { sig, ...unsigned } = o
  return ownerVerifies(o.by, signedBytes('mint', unsigned), sig)
}

/** The hash of an entry: over everything in it but the hash, `prev` included, so that the chain breaks where any entry is changed. */
export function entryHash (e: Omit<LedgerEntry, 'hash'>): string {
  return sha256Hex(signedBytes('ledger', e))
}

/** The receipt of entry `e`, signed with the bank's key (Ed25519 signs deterministically: asked twice, a bank answers the same receipt). */
export function signReceipt (bank: OwnerKey, e: LedgerEntry): Receipt {
  const unsigned = { v: 1 as const, bank: bank.id, seq: e.seq, hash: e.hash, kind: e.kind, from: e.from, to: e.to, amount: e.amount, nonce: e.nonce, at: e.at }
  return { ...unsigned, sig: ownerSign(bank, signedBytes('receipt', unsigned)) }
}

/** Whether `r` is signed by the bank it names. */
export function receiptSigned (r: Receipt): boolean {
  const { sig, ...unsigned } = r
  return ownerVerifies(r.bank, signedBytes('receipt', unsigned), sig)
}

/** What checking a ledger found: where its chain ends and what each account holds, or the first entry that is wrong. */
export interface LedgerCheck {
  head: { seq: number, hash: string }
  balances: Map<string, number>
  problem: string | null
}

/**
 * Checks a bank's ledger from its first entry: each entry chained to the one before, its hash
 * its own, the order it carries out signed by its payer (or a mint by the operator it names, for
 * this bank; or a payment by the agent of an owner's allowance, to its payees, in its time, and
 * all it paid within its maximum), no nonce of an account used twice, and no balance but the
 * issuing account's below zero. All balances then sum to zero: credits are neither made nor lost but by minting.
 */
export function checkLedger (bank: string, entries: readonly LedgerEntry[], operators?: ReadonlySet<string>): LedgerCheck {
  const balances = new Map<string, number>()
  const nonces = new Set<string>()
  const allowed = new Map<string, number>()
  let head = { seq: 0, hash: GENESIS_HASH }
  const fail = (e: LedgerEntry, why: string): LedgerCheck => ({ head, balances, problem: `entry ${e.seq}: ${why}` })
  for (const e of entries) {
    const { hash, ...rest } = e
    if (e.seq !== head.seq + 1) return fail(e, `follows entry ${head.seq}`)
    if (e.prev !== head.hash) return fail(e, 'is not chained to the entry before it')
    if (entryHash(rest) !== hash) return fail(e, 'is not what its hash says')
    const problem = orderProblem(bank, e, operators)
    if (problem !== null) return fail(e, problem)
    if (e.kind === 'spend') {
      const a = spendOrderSchema.parse(JSON.parse(e.order ?? 'null')).allowance
      const id = allowanceId(a)
      const paid = (allowed.get(id) ?? 0) + e.amount
      if (paid > a.max) return fail(e, `pays ${paid} in all under an allowance of ${a.max}`)
      allowed.set(id, paid)
    }
    const key = `${e.from}\n${e.nonce}`
    if (nonces.has(key)) return fail(e, `uses nonce ${e.nonce} of ${e.from} again`)
    nonces.add(key)
    const left = (balances.get(e.from) ?? 0) - e.amount
    if (left < 0 && e.from !== ISSUED_ACCOUNT) return fail(e, `takes ${e.amount} from ${e.from}, which holds ${balances.get(e.from) ?? 0}`)
    balances.set(e.from, left)
    balances.set(e.to, (balances.get(e.to) ?? 0) + e.amount)
    head = { seq: e.seq, hash }
  }
  return { head, balances, problem: null }
}

/** What is wrong with the order entry `e` carries out, if anything. */
function orderProblem (bank: string, e: LedgerEntry, operators?: ReadonlySet<string>): string | null {
  if (e.kind === 'grant') return e.from === ISSUED_ACCOUNT && e.order === null ? null : 'is a starting grant that does not come from the issuing account'
  let order: unknown
  try {
    order = JSON.parse(e.order ?? 'null')
  } catch {
    return 'carries an order that is not JSON'
  }
  if (e.kind === 'mint') {
    const mint = mintOrderSchema.safeParse(order)
    if (!mint.success || !mintSigned(mint.data) || mint.data.bank !== bank) return 'carries a mint its operator did not sign for this bank'
    if (operators !== undefined && !operators.has(mint.data.by)) return `is minted by ${mint.data.by}, who is no operator of this bank`
    return mint.data.to === e.to && mint.data.amount === e.amount && mint.data.nonce === e.nonce && e.from === ISSUED_ACCOUNT ? null : 'is not what its mint says'
  }
  if (e.kind === 'spend') {
    const spend = spendOrderSchema.safeParse(order)
    if (!spend.success) return 'carries no payment under an allowance'
    const problem = spendProblem(bank, spend.data, e.at)
    if (problem !== null) return problem.message
    const o = spend.data
    return o.allowance.owner === e.from && o.to === e.to && o.amount === e.amount && o.nonce === e.nonce ? null : 'is not what its payment says'
  }
  const transfer = transferOrderSchema.safeParse(order)
  if (!transfer.success || !transferSigned(transfer.data) || transfer.data.bank !== bank) return 'carries a transfer its payer did not sign for this bank'
  const t = transfer.data
  return t.from === e.from && t.to === e.to && t.amount === e.amount && t.nonce === e.nonce ? null : 'is not what its transfer says'
}

/** An instance's bid and share, as its views show them. */
export const marketViewSchema = z.strictObject({
  /** Credits paid into the bid. */
  bid: z.number().int().nonnegative().optional(),
  /** Of them, charged so far. */
  spent: z.number().int().nonnegative().optional(),
  /** Credits per second it pays now. */
  rate: z.number().nonnegative().optional(),
  /** When it ends (ms). */
  bidUntil: z.number().int().nonnegative().optional(),
  /** Its share of the CPU its host offers, when others want CPU too. */
  share: z.number().min(0).max(1).optional(),
})
export type MarketView = z.infer<typeof marketViewSchema>

/** The longest a bid may run: a year. */
export const MAX_BID_SECONDS = 366 * 24 * 3600

/**
 * What an owner asks of an instance's bid: a payment into it (the bank's receipt of a transfer
 * from the owner to the host's escrow), and for how many seconds from now all it holds is to last.
 * Without a receipt it changes the time alone; a new bid takes both.
 */
export const bidParamsSchema = z.strictObject({
  receipt: receiptSchema.optional(),
  seconds: z.number().int().min(1).max(MAX_BID_SECONDS).optional(),
}).refine(p => p.receipt !== undefined || p.seconds !== undefined, 'a bid change pays more (a receipt), or sets its time (seconds), or both')
export type BidParams = z.infer<typeof bidParamsSchema>

/** A budget a host's bidder spends under an owner's allowance, as its owner sees it. */
export const budgetViewSchema = z.strictObject({
  /** The allowance's id. */
  id: hashSchema,
  owner: ownerIdSchema,
  /** `active` while it bids; `stopped` at its owner's word; `ended` when its time ran out. */
  state: z.enum(['active', 'stopped', 'ended']),
  /** The most its allowance pays in all. */
  max: amountSchema,
  /** What the bidder paid under it so far (what bids did not spend comes back to the owner when they end). */
  paid: z.number().int().nonnegative(),
  until: z.number().int().positive(),
  /** When the bidder bids again, at the latest (ms). */
  nextRound: z.number().int().nullable(),
  /** Each instance, its host, and its bid as its host last said. */
  instances: z.array(z.strictObject({ id: instanceIdSchema, host: z.string(), ...marketViewSchema.shape })),
  /** Payments no bid took (their instance never ran): receipts the owner can ask back (POST /v1/market/refunds). */
  stranded: z.array(receiptSchema),
})
export type BudgetView = z.infer<typeof budgetViewSchema>
