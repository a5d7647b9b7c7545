import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import pino from 'pino'
import { generateOwnerKey, signMint, signTransfer, XenosError, type Receipt } from '../../src/core/index.ts'
import { Auctioneer, Bank } from '../../src/market/index.ts'
import { openStore } from '../../src/store/index.ts'

const codeOf = (code: string) => (err: unknown): boolean => err instanceof XenosError && err.code === code
const T0 = 1_700_000_000_000

/** A bank with Alice's 1000 credits, and a host's auctioneer that takes its receipts. */
function market (): { bank: Bank, auctioneer: Auctioneer, pay: (amount: number, to?: string) => Receipt, alice: ReturnType<typeof generateOwnerKey>, operator: string, escrow: string, store: ReturnType<typeof openStore> } {
  const bankStore = openStore(':memory:')
  const bankOperator = generateOwnerKey()
  const bank = new Bank({ ledger: bankStore.ledger, key: generateOwnerKey(), operators: [bankOperator.id], startingGrant: 0, log: pino({ level: 'silent' }) })
  const alice = generateOwnerKey()
  bank.mint(signMint(bankOperator, { bank: bank.id, to: alice.id, amount: 1000 }))
  const escrow = generateOwnerKey().id
  const operator = generateOwnerKey().id
  const store = openStore(':memory:')
  const auctioneer = new Auctioneer({ bids: store.bids, escrow, earnings: operator, banks: [bank.id], floor: 0.05, cpu: 2 })
  const pay = (amount: number, to = escrow): Receipt => bank.transfer(signTransfer(alice, { bank: bank.id, to, amount }))
  return { bank, auctioneer, pay, alice, operator, escrow, store }
}

describe('a host\'s auctioneer', () => {
  it('takes a receipt for a payment into its escrow once, and refuses forged, foreign and others\' receipts', () => {
    const { auctioneer, pay, alice, store } = market()
    const receipt = pay(100)
    auctioneer.bid('i-0000000000000001', alice.id, { receipt, seconds: 100 }, T0)
    assert.throws(() => { auctioneer.bid('i-0000000000000002', alice.id, { receipt, seconds: 100 }, T0) }, codeOf('RECEIPT_SPENT'), 'the same receipt for another bid')
    assert.throws(() => { auctioneer.bid('i-0000000000000002', alice.id, { receipt: { ...receipt, amount: 1000 }, seconds: 100 }, T0) }, codeOf('BAD_RECEIPT'), 'a receipt with its amount changed')
    assert.throws(() => { auctioneer.bid('i-0000000000000002', alice.id, { receipt: pay(10, generateOwnerKey().id), seconds: 100 }, T0) }, codeOf('BAD_RECEIPT'), 'a receipt for another host\'s escrow')
    assert.throws(() => { auctioneer.bid('i-0000000000000002', generateOwnerKey().id, { receipt: pay(10), seconds: 100 }, T0) }, codeOf('BAD_RECEIPT'), 'Alice\'s receipt used by someone else')
    const otherBank = market()
    assert.throws(() => { auctioneer.bid('i-0000000000000002', otherBank.alice.id, { receipt: otherBank.pay(10, otherBank.escrow), seconds: 100 }, T0) }, codeOf('BAD_RECEIPT'), 'a bank this host does not take')
    assert.equal(store.bids.list().length, 1)
  })

  it('divides the CPU by rate, and ends a bid with its spent part owed to the operator and the rest to its owner', () => {
    const { auctioneer, pay, alice, operator, store } = market()
    auctioneer.bid('i-000000000000000a', alice.id, { receipt: pay(10), seconds: 10 }, T0)
    auctioneer.bid('i-000000000000000b', alice.id, { receipt: pay(20), seconds: 10 }, T0)
    auctioneer.bid('i-000000000000000c', alice.id, { receipt: pay(30), seconds: 30 }, T0)
    const shares = auctioneer.shares(['i-000000000000000a', 'i-000000000000000b', 'i-000000000000000c'], T0)
    assert.deepEqual([...shares.values()], [0.25, 0.5, 0.25])
    assert.equal(auctioneer.price(T0), 2, '4 credits a second over 2 CPUs')
    const owed = auctioneer.close('i-000000000000000c', T0 + 15_400)
    assert.deepEqual(owed.map(p => [p.toAccount, p.amount]), [[operator, 15], [alice.id, 15]], 'stopped halfway: exactly half back')
    assert.deepEqual(store.bids.owed().map(p => p.amount), [15, 15])
    assert.deepEqual(auctioneer.expire(T0 + 10_000), ['i-000000000000000a', 'i-000000000000000b'])
    assert.equal(store.bids.owed().filter(p => p.toAccount === operator).reduce((n, p) => n + p.amount, 0), 45, 'expired bids spent all')
    assert.equal(auctioneer.price(T0 + 10_000), 0)
  })

  it('changes a bid\'s time without a payment, and refuses to change one there is none of', () => {
    const { auctioneer, pay, alice } = market()
    assert.throws(() => { auctioneer.bid('i-0000000000000001', alice.id, { seconds: 10 }, T0) }, codeOf('INVALID_STATE'))
    auctioneer.bid('i-0000000000000001', alice.id, { receipt: pay(300), seconds: 100 }, T0)
    auctioneer.bid('i-0000000000000002', alice.id, { receipt: pay(100), seconds: 100 }, T0)
    const ids = ['i-0000000000000001', 'i-0000000000000002']
    assert.equal(auctioneer.shares(ids, T0).get(ids[0] ?? ''), 0.75)
    auctioneer.bid('i-0000000000000001', alice.id, { seconds: 240 }, T0 + 20_000)
    assert.equal(auctioneer.view('i-0000000000000001', T0 + 20_000).rate, 1)
    assert.equal(auctioneer.shares(ids, T0 + 20_000).get(ids[0] ?? ''), 0.5)
  })
})
