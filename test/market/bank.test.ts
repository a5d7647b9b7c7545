import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import pino from 'pino'
import { checkLedger, generateOwnerKey, ISSUED_ACCOUNT, receiptSigned, signMint, signTransfer, XenosError, type LedgerEntry } from '../../src/core/index.ts'
import { Bank } from '../../src/market/index.ts'
import { openStore } from '../../src/store/index.ts'

const codeOf = (code: string) => (err: unknown): boolean => err instanceof XenosError && err.code === code

function bankWith (startingGrant = 0): { bank: Bank, operator: ReturnType<typeof generateOwnerKey>, store: ReturnType<typeof openStore> } {
  const store = openStore(':memory:')
  const operator = generateOwnerKey()
  const bank = new Bank({ ledger: store.ledger, key: generateOwnerKey(), operators: [operator.id], startingGrant, log: pino({ level: 'silent' }) })
  return { bank, operator, store }
}

/** A bank's ledger: what it lets happen to credits, and what anyone checking it finds. */
describe('the bank', () => {
  it('mints at an operator\'s word, moves credits at their payer\'s, never below zero, and answers receipts anyone can check', () => {
    const { bank, operator, store } = bankWith()
    const [alice, bob] = [generateOwnerKey(), generateOwnerKey()]
    const minted = bank.mint(signMint(operator, { bank: bank.id, to: alice.id, amount: 100 }))
    assert.ok(receiptSigned(minted))
    assert.deepEqual([minted.kind, minted.from, minted.amount], ['mint', ISSUED_ACCOUNT, 100])
    const paid = bank.transfer(signTransfer(alice, { bank: bank.id, to: bob.id, amount: 30 }))
    assert.ok(receiptSigned(paid))
    assert.deepEqual([bank.account(alice.id).balance, bank.account(bob.id).balance], [70, 30])
    assert.throws(() => bank.transfer(signTransfer(alice, { bank: bank.id, to: bob.id, amount: 71 })), codeOf('INSUFFICIENT_FUNDS'))
    assert.equal(bank.account(alice.id).balance, 70, 'a refused transfer moves nothing')
    assert.equal(store.ledger.total(), 0, 'every entry takes from one account what it gives another')
    assert.equal(bank.receipt(paid.seq).sig, paid.sig, 'the receipt of an entry is the same however often it is asked for')
  })

  it('carries out an order once: the same payment again answers its receipt, another under its nonce is refused', () => {
    const { bank, operator } = bankWith()
    const [alice, bob] = [generateOwnerKey(), generateOwnerKey()]
    bank.mint(signMint(operator, { bank: bank.id, to: alice.id, amount: 10 }))
    const order = signTransfer(alice, { bank: bank.id, to: bob.id, amount: 4 })
    const first = bank.transfer(order)
    assert.deepEqual(bank.transfer(order), first, 'a retry after a lost answer')
    assert.equal(bank.account(bob.id).balance, 4, 'applied once')
    const signedAgain = signTransfer(alice, { bank: bank.id, to: bob.id, amount: 4 }, Date.now() + 1000, order.nonce)
    assert.deepEqual(bank.transfer(signedAgain), first, 'the same payment signed again, as a payer whose order grew old does')
    assert.equal(bank.account(bob.id).balance, 4, 'still applied once')
    const sameNonce = signTransfer(alice, { bank: bank.id, to: bob.id, amount: 5 }, Date.now(), order.nonce)
    assert.throws(() => bank.transfer(sameNonce), (err: unknown) => codeOf('UNAUTHENTICATED')(err) && /used already/.test((err as Error).message))
    assert.throws(() => bank.transfer(signTransfer(alice, { bank: bank.id, to: bob.id, amount: 1 }, Date.now() - 11 * 60_000)), /sign it again/, 'an order too old')
  })

  it('refuses a forged order, one for another bank, and a mint by anyone but its operators', () => {
    const { bank, operator } = bankWith()
    const [alice, mallory] = [generateOwnerKey(), generateOwnerKey()]
    bank.mint(signMint(operator, { bank: bank.id, to: alice.id, amount: 10 }))
    const theirs = signTransfer(mallory, { bank: bank.id, to: mallory.id, amount: 5 })
    assert.throws(() => bank.transfer({ ...theirs, from: alice.id }), codeOf('UNAUTHENTICATED'), 'Mallory signs a transfer from Alice')
    assert.throws(() => bank.transfer(signTransfer(alice, { bank: generateOwnerKey().id, to: mallory.id, amount: 5 })), codeOf('UNKNOWN_BANK'), 'an order for another bank')
    assert.throws(() => bank.mint(signMint(mallory, { bank: bank.id, to: mallory.id, amount: 1000 })), codeOf('FORBIDDEN'))
    assert.throws(() => bank.mint({ ...signMint(mallory, { bank: bank.id, to: mallory.id, amount: 1000 }), by: operator.id }), codeOf('UNAUTHENTICATED'), 'a mint passed off as the operator\'s')
    assert.equal(bank.account(mallory.id).balance, 0)
  })

  it('gives a new account its starting grant once', () => {
    const { bank } = bankWith(25)
    const alice = generateOwnerKey()
    assert.equal(bank.account(alice.id).balance, 25)
    assert.equal(bank.account(alice.id).balance, 25, 'once')
    assert.deepEqual(bank.account(alice.id).entries.map(e => e.kind), ['grant'])
  })

  it('keeps a ledger whose chain anyone can check, and which shows any entry changed, dropped or replayed', () => {
    const { bank, operator } = bankWith(5)
    const [alice, bob] = [generateOwnerKey(), generateOwnerKey()]
    bank.mint(signMint(operator, { bank: bank.id, to: alice.id, amount: 50 }))
    for (let i = 0; i < 5; i++) bank.transfer(signTransfer(alice, { bank: bank.id, to: bob.id, amount: i + 1 }))
    bank.account(bob.id)
    const entries = bank.entries(1, 100)
    const ok = checkLedger(bank.id, entries, new Set([operator.id]))
    assert.equal(ok.problem, null)
    assert.deepEqual(ok.head, { seq: bank.head().seq, hash: bank.head().hash })
    assert.deepEqual([ok.balances.get(alice.id), ok.balances.get(bob.id)], [35, 20])

    const changed = entries.map(e => e.seq === 3 ? { ...e, amount: 40 } : e)
    assert.match(checkLedger(bank.id, changed).problem ?? '', /entry 3: is not what its hash says/)
    const rehashed: LedgerEntry[] = entries.filter(e => e.seq !== 2)
    assert.match(checkLedger(bank.id, rehashed).problem ?? '', /entry 3: follows entry 1/)
    assert.match(checkLedger(bank.id, entries, new Set()).problem ?? '', /no operator of this bank/)
    assert.match(checkLedger(generateOwnerKey().id, entries).problem ?? '', /did not sign for this bank/)
  })

  it('shows an owner what it spent on each instance: paid into its bids, less what came back', () => {
    const { bank, operator } = bankWith()
    const [alice, escrow] = [generateOwnerKey(), generateOwnerKey()]
    const [a, b] = ['i-000000000000000a', 'i-000000000000000b']
    bank.mint(signMint(operator, { bank: bank.id, to: alice.id, amount: 100 }))
    bank.transfer(signTransfer(alice, { bank: bank.id, to: escrow.id, amount: 30, memo: `bid on ${a}` }))
    const forB = bank.transfer(signTransfer(alice, { bank: bank.id, to: escrow.id, amount: 5, memo: `bid on ${b}` }))
    bank.transfer(signTransfer(alice, { bank: bank.id, to: escrow.id, amount: 7, memo: 'rent' }))
    bank.transfer(signTransfer(escrow, { bank: bank.id, to: alice.id, amount: 12, memo: `unspent bid on instance ${a}` }))
    bank.transfer(signTransfer(escrow, { bank: bank.id, to: alice.id, amount: 5, memo: `payment ${forB.seq} no bid took` }))
    assert.deepEqual(bank.account(alice.id).instances, [{ instance: a, paid: 30, back: 12 }, { instance: b, paid: 5, back: 5 }])
  })
})
