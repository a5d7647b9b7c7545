import type { Command } from 'commander'
import { durationMs, MAX_BID_SECONDS, signAllowance, signTransfer, XenosError, type BidParams, type BudgetView, type MarketView, type Receipt } from '../core/index.ts'
import type { BankWhere } from '../node/index.ts'
import type { ApiClient, DeployRequest, PartBid } from './client.ts'
import { client, type HostRow, out, resolveInstance } from './command.ts'
import { creditsOf } from './bank.ts'
import { loadOrCreateUserKey } from './keys.ts'
import { percent, shortId, table } from './table.ts'

/** `90`, `20s`, `30m`, `1h30m`, `2d`: a duration in whole seconds. */
export function secondsOf (text: string): number {
  const ms = durationMs(text)
  const seconds = (ms ?? 0) / 1000
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > MAX_BID_SECONDS) {
    throw new XenosError('INVALID_ARGUMENT', `"${text}" is not a duration: give seconds, or e.g. 20s, 30m, 1h30m, 2d (at most a year)`)
  }
  return seconds
}

/** The advert of host `id` as this host sees it. */
async function hostAdvert (api: ApiClient, id: string): Promise<HostRow> {
  const { hosts } = await api.get<{ hosts: HostRow[] }>('/v1/peers')
  const h = hosts.find(x => x.id === id)
  if (h === undefined) throw new XenosError('HOST_NOT_FOUND', `host ${id} is not advertised now: see "xenos hosts"`)
  return h
}

/** Pays `amount` credits from the user's account into host `host`'s escrow, for a bid on `what`; answers the bank's receipt. */
export async function payForBid (api: ApiClient, keyPath: string, host: string, amount: number, what: string): Promise<Receipt> {
  const { escrow } = await hostAdvert(api, host)
  if (escrow === undefined) throw new XenosError('INVALID_STATE', `host ${host} sells no CPU: its advert names no escrow account (it runs an older xenosd)`)
  const { key } = await loadOrCreateUserKey(keyPath)
  const where = await api.get<BankWhere>('/v1/bank')
  return await api.post<Receipt>('/v1/bank/transfers', signTransfer(key, { bank: where.bank, to: escrow, amount, memo: `bid on ${what}` }))
}

/** The receipts a deploy paid into each host's escrow, for its bids. */
export type PaidBids = Map<string, Receipt[]>

/**
 * Bids of `amount` credits over `seconds` for each instance of a deploy: paid into its host's
 * escrow before the deploy goes (the receipts kept in `paid`), and signed for that host.
 */
export function deployBids (api: ApiClient, keyPath: string, amount: number, seconds: number, paid: PaidBids): NonNullable<DeployRequest['bids']> {
  return async parts => {
    const bids = new Map<string, PartBid>()
    for (const { host, instances } of parts) {
      for (const instance of instances) {
        const receipt = await payForBid(api, keyPath, host, amount, instance)
        paid.set(host, [...paid.get(host) ?? [], receipt])
        const params = { receipt, seconds }
        bids.set(instance, { instance, params, auth: api.authFor('bid', instance, params, host) })
      }
    }
    return bids
  }
}

/** A budget handed to the bidder of the host the CLI talks to, and the bids of its first round. */
interface OpenedBudget {
  budget: BudgetView
  bids: Array<PartBid & { host: string, params: { receipt: Receipt, seconds: number } }>
}

/**
 * Bids for a deploy's instances out of a budget of `budget` credits over `seconds`: the user
 * signs the bidder of the host the CLI talks to an allowance for them (at most `budget`, until
 * then, to their hosts' escrows), which pays the first round by the best response and bids
 * again round after round; `onOpened` hears of the budget.
 */
export function budgetBids (api: ApiClient, keyPath: string, budget: number, seconds: number, paid: PaidBids, onOpened: (b: BudgetView) => void): NonNullable<DeployRequest['bids']> {
  return async parts => {
    const { key } = await loadOrCreateUserKey(keyPath)
    const [where, self] = await Promise.all([api.get<BankWhere>('/v1/bank'), api.get<HostRow & { agent?: string }>('/v1/host')])
    if (self.agent === undefined) throw new XenosError('INVALID_STATE', `host ${self.name} has no bidder (it runs an older xenosd): deploy with --bid AMOUNT --for DURATION instead`)
    const escrows = await Promise.all([...new Set(parts.map(p => p.host))].map(async h => (await hostAdvert(api, h)).escrow))
    if (escrows.some(e => e === undefined)) throw new XenosError('INVALID_STATE', 'a host this deploy goes to sells no CPU: its advert names no escrow account (it runs an older xenosd)')
    const hosts = Object.fromEntries(parts.flatMap(p => p.instances.map(i => [i, p.host])))
    const allowance = signAllowance(key, { bank: where.bank, agent: self.agent, max: budget, until: Date.now() + seconds * 1000, payees: escrows.filter(e => e !== undefined), instances: Object.keys(hosts) })
    const opened = await api.post<OpenedBudget>('/v1/budgets', { allowance, hosts })
    onOpened(opened.budget)
    for (const b of opened.bids) paid.set(b.host, [...paid.get(b.host) ?? [], b.params.receipt])
    return new Map(opened.bids.map(({ host: _, ...b }) => [b.instance, b]))
  }
}

/** Asks each of `hosts` to pay back what was paid into its escrow for a deploy's bids there, which its failed part never took; says what came of it. */
export async function refundBids (api: ApiClient, paid: PaidBids, hosts: string[]): Promise<void> {
  for (const host of hosts) {
    for (const receipt of paid.get(host) ?? []) {
      const body = { receipt }
      await api.signed('POST', '/v1/market/refunds', 'refund', receipt.hash, {}, body, host)
        .then(() => { process.stderr.write(`the ${receipt.amount} credits paid for a bid on host ${shortId(host)} are coming back\n`) })
        .catch((err: unknown) => {
          // A receipt a bid took: the instance was made, and its bid pays back what it does not spend.
          if ((err as { code?: string }).code === 'RECEIPT_SPENT') return
          process.stderr.write(`the ${receipt.amount} credits paid for a bid on host ${shortId(host)} could not be asked back (${(err as Error).message}): its receipt is ${JSON.stringify(receipt)}\n`)
        })
    }
  }
}

/** What a bid's view says, in a line. */
export function bidLine (id: string, v: MarketView): string {
  if (v.bid === undefined) return `${id} has no bid${v.share === undefined ? '' : `; its share is ${percent(v.share)}`}`
  return `${id} bids ${v.bid} credits (${v.spent ?? 0} spent), ${(v.rate ?? 0).toFixed(4)} credits/s until ${new Date(v.bidUntil ?? 0).toISOString()}${v.share === undefined ? '' : `: ${percent(v.share)} of its host's CPU`}`
}

/** `xenos bid` and `xenos hosts`: buying shares of hosts' CPU, and what hosts ask for it. */
export function registerMarketCommands (program: Command): void {
  program.command('bid <instance> [amount]').description('Pay AMOUNT more credits into an instance\'s bid for its host\'s CPU; with --for, all the bid holds lasts that long from now (without AMOUNT: only its time, and so its rate, changes)')
    .option('--for <duration>', 'how long the bid lasts from now: seconds, or 20s, 30m, 1h30m, 2d (a new bid needs it)')
    .action(async (ref: string, amount: string | undefined, o: { for?: string }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const id = await resolveInstance(api, ref)
      const host = await api.hostOf(id)
      const seconds = o.for === undefined ? undefined : secondsOf(o.for)
      if (amount === undefined && seconds === undefined) throw new XenosError('INVALID_ARGUMENT', 'give an AMOUNT to pay, or --for to change how long the bid lasts, or both')
      const receipt = amount === undefined ? undefined : await payForBid(api, flags.key, host, creditsOf(amount), id)
      const params: BidParams = { ...receipt === undefined ? {} : { receipt }, ...seconds === undefined ? {} : { seconds } }
      const view = await api.signed<MarketView>('POST', `/v1/instances/${encodeURIComponent(id)}/bid`, 'bid', id, params, params, host)
      out(flags, view, () => bidLine(id, view))
    })

  program.command('budget <id>').description('A budget this host\'s bidder spends for you (deploy --budget): what it paid, until when, and each instance\'s bid and share')
    .option('--stop', 'stop bidding: the bids run out at the end of the time they paid for, and pay back what they did not spend')
    .action(async (id: string, o: { stop?: boolean }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const path = `/v1/budgets/${encodeURIComponent(id)}`
      const b = o.stop === true ? await api.signed<BudgetView>('DELETE', path, 'stop', id, {}) : await api.signed<BudgetView>('GET', path, 'get', id, {})
      out(flags, b, () => [
        `budget ${b.id}: ${b.state}, paid ${b.paid} of ${b.max} credits, until ${new Date(b.until).toISOString()}${b.state === 'active' && b.nextRound !== null ? `, bids again by ${new Date(b.nextRound).toISOString()}` : ''}`,
        '',
        table(['INSTANCE', 'HOST', 'BID', 'SPENT', 'RATE/S', 'SHARE', 'UNTIL'], b.instances.map(i => [
          i.id, shortId(i.host), String(i.bid ?? '-'), String(i.spent ?? '-'), i.rate === undefined ? '-' : i.rate.toFixed(4), i.share === undefined ? '-' : percent(i.share), i.bidUntil === undefined ? '-' : new Date(i.bidUntil).toISOString(),
        ])),
        ...b.stranded.length === 0 ? [] : ['', `${b.stranded.length} payment(s) no bid took, yours to ask back with POST /v1/market/refunds: ${b.stranded.map(r => `#${r.seq} (${r.amount})`).join(', ')}`],
      ].join('\n'))
    })

  program.command('hosts').description('Advertised hosts: what each offers, has free and asks for its CPU')
    .option('--by-price', 'cheapest first (price: credits per second of all bids on a host, per CPU it offers)')
    .action(async (o: { byPrice?: boolean }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const { hosts } = await api.get<{ hosts: HostRow[] }>('/v1/peers')
      const live = hosts.filter(h => h.expiresAt > Date.now())
      const sorted = o.byPrice === true
        ? live.sort((a, b) => (a.price ?? 0) - (b.price ?? 0) || b.free.cpu - a.free.cpu || a.name.localeCompare(b.name))
        : live.sort((a, b) => a.name.localeCompare(b.name))
      out(flags, sorted, () => table(['HOST', 'NAME', 'PRICE', 'FREE CPU', 'FREE MEM', 'INSTANCES'],
        sorted.map(h => [shortId(h.id), h.name, (h.price ?? 0).toFixed(4), `${h.free.cpu}/${h.capacity.cpu}`, `${h.free.memory}/${h.capacity.memory} MiB`, String(h.instances)])))
    })
}
