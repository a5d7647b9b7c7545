import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import pino from 'pino'
import { allowanceId, checkLedger, generateOwnerKey, signAllowance, signMint, signSpend, XenosError, type Allowance, type OwnerKey } from '../../src/core/index.ts'
import { Bank } from '../../src/market/index.ts'
import { openStore, type Store } from '../../src/store/index.ts'

const codeOf = (code: string) => (err: unknown): boolean => err instanceof XenosError && err.code === code
const INSTANCE = 'i-0123456789abcdef'

/** A bank with an owner holding 100 credits, who allows an agent to pay two escrows at most 40 of them for a minute. */
interface Allowed {
  store: Store
  bank: Bank
  owner: OwnerKey
  agent: OwnerKey
  escrowA: OwnerKey
  escrowB: OwnerKey
  mallory: OwnerKey
  allowance: Allowance
}

function allowed (max = 40): Allowed {
  const store = openStore(':memory:')
  const operator = generateOwnerKey()
  const bank = new Bank({ ledger: store.ledger, key: generateOwnerKey(), operators: [operator.id], startingGrant: 0, log: pino({ level: 'silent' }) })
  const [owner, agent, escrowA, escrowB, mallory] = [generateOwnerKey(), generateOwnerKey(), generateOwnerKey(), generateOwnerKey(), generateOwnerKey()]
  bank.mint(signMint(operator, { bank: bank.id, to: owner.id, amount: 100 }))
  const allowance = signAllowance(owner, { bank: bank.id, agent: agent.id, max, until: Date.now() + 60_000, payees: [escrowA.id, escrowB.id], instances: [INSTANCE] })
  return { store, bank, owner, agent, escrowA, escrowB, mallory, allowance }
}

/** An allowance: what an agent may pay of an owner's credits, to whom, until when, and nothing more. */
describe('an allowance', () => {
  it('lets its agent pay its payees out of the owner\'s account up to its maximum, counted once however often a payment is sent', () => {
    const { bank, owner, agent, escrowA, escrowB, allowance, store } = allowed()
    const first = signSpend(agent, { allowance, to: escrowA.id, amount: 25 })
    const receipt = bank.spend(first)
    assert.deepEqual([receipt.kind, receipt.from, receipt.to, receipt.amount], ['spend', owner.id, escrowA.id, 25])
    assert.deepEqual(bank.spend(first), receipt, 'the same payment again, after a lost answer')
    assert.deepEqual(bank.spend(signSpend(agent, { allowance, to: escrowA.id, amount: 25 }, Date.now() + 1000, first.nonce)), receipt, 'and signed again under its nonce')
    assert.deepEqual(bank.spend(first, allowance.until + 1000), receipt, 'and asked again once the allowance ended')
    bank.spend(signSpend(agent, { allowance, to: escrowB.id, amount: 15 }))
    assert.equal(store.ledger.paidUnder(allowanceId(allowance)), 40)
    assert.throws(() => bank.spend(signSpend(agent, { allowance, to: escrowB.id, amount: 1 })), codeOf('ALLOWANCE_EXCEEDED'), 'one credit past its maximum')
    assert.deepEqual([bank.account(owner.id).balance, bank.account(escrowA.id).balance, bank.account(escrowB.id).balance], [60, 25, 15])
    const check = checkLedger(bank.id, bank.entries(1, 100))
    assert.equal(check.problem, null)
  })

  it('pays nobody but its payees, for nobody but its agent, and not once it ended', () => {
    const { bank, owner, agent, mallory, escrowA, allowance } = allowed()
    assert.throws(() => bank.spend(signSpend(agent, { allowance, to: mallory.id, amount: 5 })), codeOf('FORBIDDEN'), 'the agent pays itself a friend')
    assert.throws(() => bank.spend(signSpend(mallory, { allowance, to: escrowA.id, amount: 5 })), codeOf('UNAUTHENTICATED'), 'someone else uses the allowance')
    assert.throws(() => bank.spend(signSpend(agent, { allowance: { ...allowance, max: 100 }, to: escrowA.id, amount: 50 })), codeOf('UNAUTHENTICATED'), 'the agent raises its maximum')
    assert.throws(() => bank.spend(signSpend(agent, { allowance: { ...allowance, payees: [mallory.id] }, to: mallory.id, amount: 5 })), codeOf('UNAUTHENTICATED'), 'the agent names another payee')
    const forged = signAllowance(mallory, { bank: bank.id, agent: agent.id, max: 90, until: Date.now() + 60_000, payees: [mallory.id], instances: [INSTANCE] })
    assert.throws(() => bank.spend(signSpend(agent, { allowance: { ...forged, owner: owner.id }, to: mallory.id, amount: 5 })), codeOf('UNAUTHENTICATED'), 'an allowance passed off as the owner\'s')
    const ended = signAllowance(owner, { bank: bank.id, agent: agent.id, max: 10, until: Date.now() - 1, payees: [escrowA.id], instances: [INSTANCE] })
    assert.throws(() => bank.spend(signSpend(agent, { allowance: ended, to: escrowA.id, amount: 5 })), codeOf('FORBIDDEN'), 'after its time')
    const otherBank = signAllowance(owner, { bank: generateOwnerKey().id, agent: agent.id, max: 10, until: Date.now() + 60_000, payees: [escrowA.id], instances: [INSTANCE] })
    assert.throws(() => bank.spend(signSpend(agent, { allowance: otherBank, to: escrowA.id, amount: 5 })), codeOf('UNKNOWN_BANK'))
    assert.equal(bank.account(owner.id).balance, 100, 'nothing was paid')
  })

  it('never pays beyond the owner\'s balance, whatever its maximum', () => {
    const { bank, agent, escrowA, allowance } = allowed(1000)
    assert.throws(() => bank.spend(signSpend(agent, { allowance, to: escrowA.id, amount: 101 })), codeOf('INSUFFICIENT_FUNDS'))
  })

  it('is checked with the ledger: payments beyond it that a bank let through are found', () => {
    const { bank, store, agent, escrowA, allowance } = allowed(10)
    bank.spend(signSpend(agent, { allowance, to: escrowA.id, amount: 10 }))
    // A bank that did not count (the table written without the allowance's maximum): a second payment of 10 under a maximum of 10.
    const over = signSpend(agent, { allowance, to: escrowA.id, amount: 10 })
    store.ledger.append({ kind: 'spend', from: allowance.owner, to: escrowA.id, amount: 10, nonce: over.nonce, order: JSON.stringify(over), at: Date.now() })
    const check = checkLedger(bank.id, bank.entries(1, 100))
    assert.match(check.problem ?? '', /pays 20 in all under an allowance of 10/)
  })

  it('is checked with the ledger: a payment entered to another account than its order names is found', () => {
    const { bank, store, agent, escrowA, allowance } = allowed(10)
    const order = signSpend(agent, { allowance, to: escrowA.id, amount: 5 })
    store.ledger.append({ kind: 'spend', from: allowance.owner, to: agent.id, amount: 5, nonce: order.nonce, order: JSON.stringify(order), at: Date.now() })
    assert.match(checkLedger(bank.id, bank.entries(1, 100)).problem ?? '', /is not what its payment says/)
  })
})
