import { z } from 'zod'
import {
  accountViewSchema, ledgerEntrySchema, mintOrderSchema, receiptSchema, requestAuthSchema, spendOrderSchema, transferOrderSchema, XenosError,
  type AccountView, type AdvertOf, type LedgerEntry, type MintOrder, type Receipt, type RequestAuth, type SpendOrder, type TransferOrder,
} from '../core/index.ts'
import type { Bank } from '../market/index.ts'
import type { Overlay } from '../overlay/index.ts'
import { callHost } from './remote.ts'
import type { RequestVerifier } from './replay.ts'

export interface BankingInit {
  overlay: Pick<Overlay, 'peerId' | 'rpc' | 'search' | 'learnHost'>
  /** This host's bank, when it is one (`xenosd --bank`). */
  bank: Bank | undefined
  /** The banks (by key) this host and its users deal with. */
  accepted: readonly string[]
  verifier: RequestVerifier
}

/** Where a bank is: its key, and the host that runs it. */
export const bankWhereSchema = z.strictObject({ bank: z.string(), host: z.string() })
export type BankWhere = z.infer<typeof bankWhereSchema>

const entriesRequestSchema = z.strictObject({ from: z.number().int().positive(), limit: z.number().int().min(1).max(1000) })
/** The most entries a page of the ledger holds. */
export const LEDGER_PAGE = 1000

/**
 * A host's way to the bank its operator accepts: its own, when it runs one, or the host whose
 * advert says it runs that bank, to which orders are relayed over the overlay. The bank checks
 * every order's signature itself (this host only carries it), and an owner's request to see an
 * account is signed for the bank's host.
 */
export class Banking {
  readonly #init: BankingInit

  constructor (init: BankingInit) {
    this.#init = init
  }

  get #self (): string {
    return this.#init.overlay.peerId
  }

  /** The key of the bank this host runs, if it runs one. */
  get own (): string | undefined {
    return this.#init.bank?.id
  }

  serve (): void {
    const { bank } = this.#init
    if (bank === undefined) return
    const { rpc } = this.#init.overlay
    rpc.handle('bank.transfer', transferOrderSchema, async order => bank.transfer(order))
    rpc.handle('bank.spend', spendOrderSchema, async order => bank.spend(order))
    rpc.handle('bank.mint', mintOrderSchema, async order => bank.mint(order))
    rpc.handle('bank.account', requestAuthSchema, async auth => bank.account(this.#owner(auth)))
    rpc.handle('bank.entries', entriesRequestSchema, async req => bank.entries(req.from, req.limit))
  }

  /** The bank this host deals with, and the host that runs it. */
  where (): BankWhere {
    const { bank, accepted } = this.#init
    if (bank !== undefined && accepted.includes(bank.id)) return { bank: bank.id, host: this.#self }
    const hosts = this.#init.overlay.search({ kind: 'host' }) as Array<AdvertOf<'host'>>
    const running = hosts.find(h => h.withdrawn !== true && h.body.bank !== undefined && accepted.includes(h.body.bank))
    if (running === undefined || running.body.bank === undefined) {
      throw new XenosError(accepted.length === 0 ? 'UNKNOWN_BANK' : 'PEER_UNREACHABLE', accepted.length === 0
        ? `host ${this.#self} accepts no bank: its operator names one with "xenosd --accept-bank KEY"`
        : `no host running bank ${accepted.join(' or ')} is advertised now: it may be down; try again soon`)
    }
    return { bank: running.body.bank, host: running.host }
  }

  async transfer (order: TransferOrder): Promise<Receipt> {
    return await this.#atBank('bank.transfer', order, receiptSchema, bank => bank.transfer(order))
  }

  /** A payment under an owner's allowance, signed by its agent. */
  async spend (order: SpendOrder): Promise<Receipt> {
    return await this.#atBank('bank.spend', order, receiptSchema, bank => bank.spend(order))
  }

  async mint (order: MintOrder): Promise<Receipt> {
    return await this.#atBank('bank.mint', order, receiptSchema, bank => bank.mint(order))
  }

  /** The signer's account, as the owner's request `auth` (signed `account` on the bank's key, for its host) asks. */
  async account (auth: RequestAuth): Promise<AccountView> {
    return await this.#atBank('bank.account', auth, accountViewSchema, bank => bank.account(this.#owner(auth)))
  }

  async entries (from: number, limit: number): Promise<LedgerEntry[]> {
    return await this.#atBank('bank.entries', { from, limit }, z.array(ledgerEntrySchema), bank => bank.entries(from, limit))
  }

  #owner (auth: RequestAuth): string {
    const { bank } = this.#init
    return this.#init.verifier.verify(auth, { action: 'account', target: bank?.id ?? '', params: {} })
  }

  /** `here` on this host's bank, or `method` asked of the host that runs the bank. */
  async #atBank<T> (method: string, params: unknown, schema: z.ZodType<T>, here: (bank: Bank) => T): Promise<T> {
    const where = this.where()
    const { bank } = this.#init
    if (where.host === this.#self && bank !== undefined) return here(bank)
    return schema.parse(await callHost(this.#init.overlay, where.host, method, params))
  }
}
