import type { Command } from 'commander'
import { checkLedger, signMint, signTransfer, XenosError, type AccountView, type LedgerEntry, type Receipt } from '../core/index.ts'
import type { BankWhere } from '../node/index.ts'
import { client, out } from './command.ts'
import { loadOrCreateUserKey } from './keys.ts'
import { ago, shortId, table } from './table.ts'

/** A whole number of credits, or an error that says what one is. */
export function creditsOf (text: string): number {
  const n = Number(text)
  if (!Number.isSafeInteger(n) || n <= 0) throw new XenosError('INVALID_ARGUMENT', `"${text}" is not an amount: credits are a whole number above 0`)
  return n
}

function entriesTable (entries: LedgerEntry[], self: string): string {
  const who = (account: string): string => account === self ? 'you' : shortId(account)
  return table(['#', 'KIND', 'FROM', 'TO', 'AMOUNT', 'WHEN'], entries.map(e => [String(e.seq), e.kind, who(e.from), who(e.to), String(e.amount), ago(e.at)]))
}

function receiptLine (r: Receipt): string {
  return `${r.kind} of ${r.amount} credits to ${shortId(r.to)}: entry ${r.seq} of bank ${shortId(r.bank)} (${r.hash.slice(0, 16)}…)`
}

/** `xenos account`, `xenos transfer` and `xenos bank …`: credits in the market's bank. */
export function registerBankCommands (program: Command): void {
  program.command('account').description('Your account in the bank this host deals with: balance, what you spent on each instance, and latest entries')
    .option('--limit <n>', 'entries shown', Number, 20)
    .action(async (o: { limit: number }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const where = await api.get<BankWhere>('/v1/bank')
      const account = await api.signed<AccountView>('GET', '/v1/bank/account', 'account', where.bank, {}, undefined, where.host)
      const shown = { ...account, entries: account.entries.slice(0, o.limit) }
      const spending = account.instances.length === 0
        ? ''
        : `${table(['INSTANCE', 'PAID INTO BIDS', 'BACK', 'SPENT (OR HELD)'], account.instances.map(i => [i.instance, String(i.paid), String(i.back), String(i.paid - i.back)]))}\n\n`
      out(flags, shown, () => `${account.balance} credits in bank ${shortId(account.bank)}\n\n${spending}${entriesTable(shown.entries, account.owner)}`)
    })

  program.command('transfer <to> <amount>').description('Pay credits from your account to another (TO: an owner id)')
    .option('--memo <text>', 'what it is for, kept in the ledger')
    .action(async (to: string, amount: string, o: { memo?: string }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const { key } = await loadOrCreateUserKey(flags.key)
      const where = await api.get<BankWhere>('/v1/bank')
      const receipt = await api.post<Receipt>('/v1/bank/transfers', signTransfer(key, { bank: where.bank, to, amount: creditsOf(amount), ...o.memo === undefined ? {} : { memo: o.memo } }))
      out(flags, receipt, () => receiptLine(receipt))
    })

  const bank = program.command('bank').description('The bank: mint credits (its operators), check its ledger (anyone)')
  bank.command('mint <owner> <amount>').description('Mint new credits into an account (signed with your key, which must be one of the bank\'s operators)')
    .action(async (owner: string, amount: string, _o: unknown, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const { key } = await loadOrCreateUserKey(flags.key)
      const where = await api.get<BankWhere>('/v1/bank')
      const receipt = await api.post<Receipt>('/v1/bank/mints', signMint(key, { bank: where.bank, to: owner, amount: creditsOf(amount) }))
      out(flags, receipt, () => receiptLine(receipt))
    })
  bank.command('verify').description('Fetch the whole ledger and check it: its chain, every order\'s signature, no balance below zero')
    .action(async (_o: unknown, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const where = await api.get<BankWhere>('/v1/bank')
      const entries: LedgerEntry[] = []
      for (;;) {
        const page = await api.get<{ entries: LedgerEntry[] }>(`/v1/bank/ledger?from=${entries.length + 1}`)
        entries.push(...page.entries)
        if (page.entries.length === 0) break
      }
      const check = checkLedger(where.bank, entries)
      const result = { bank: where.bank, entries: entries.length, head: check.head, accounts: check.balances.size, problem: check.problem }
      out(flags, result, () => check.problem === null
        ? `the ledger of bank ${shortId(where.bank)} checks out: ${entries.length} entries, ${check.balances.size} accounts, head ${check.head.seq} ${check.head.hash.slice(0, 16)}…`
        : `the ledger of bank ${shortId(where.bank)} does not check out: ${check.problem}`)
      if (check.problem !== null) process.exitCode = 1
    })
}
