import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { checkLedger, generateOwnerKey, receiptSigned, signTransfer, type LedgerEntry, type OwnerKey, type Receipt, type TransferOrder } from '../../src/core/index.ts'
import { loadOrCreateUserKey } from '../../src/cli/index.ts'
import { cli, eventually, getJson, startHost, stopHost, stopHosts, tempDir, type TestHost } from '../helpers/cluster.ts'

/** Sends a transfer order to host `h`'s API: the receipt, or the error's code (a host that does not answer: `DOWN`). */
async function send (h: TestHost, order: TransferOrder): Promise<Receipt | string> {
  try {
    const res = await fetch(`${h.api}/v1/bank/transfers`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(order) })
    const body = await res.json() as any
    return res.ok ? body as Receipt : body.error.code as string
  } catch {
    return 'DOWN'
  }
}

/** Every entry of the bank's ledger, page by page, through host `h`. */
async function ledgerOf (h: TestHost): Promise<LedgerEntry[]> {
  const entries: LedgerEntry[] = []
  for (;;) {
    const page = (await getJson<{ entries: LedgerEntry[] }>(h, `/v1/bank/ledger?from=${entries.length + 1}`)).entries
    if (page.length === 0) return entries
    entries.push(...page)
  }
}

/** The market's bank on a real xenosd, reached through another that accepts it. */
describe('the bank', () => {
  let bankHost: TestHost, other: TestHost
  let bankKey: string
  let dir: string
  let operatorPem: string, alicePem: string, bobPem: string
  let alice: OwnerKey

  before(async () => {
    dir = await tempDir('bank')
    ;[alicePem, bobPem] = [join(dir, 'alice.pem'), join(dir, 'bob.pem')]
    alice = (await loadOrCreateUserKey(alicePem)).key
    bankHost = await startHost({ name: 'bank', extraArgs: ['--bank'] })
    operatorPem = join(bankHost.dataDir, 'operator.pem')
    bankKey = (await getJson<{ bank: string }>(bankHost, '/v1/bank')).bank
    other = await startHost({ name: 'payer', bootstrap: [bankHost], extraArgs: ['--accept-bank', bankKey] })
    await eventually(async () => (await getJson(other, '/v1/bank')).host === bankHost.info.peerId || undefined, 20_000, 'the other host to find the bank')
  })

  after(async () => {
    await stopHosts([bankHost, other])
  })

  it('mints at its operator\'s word, moves credits at their payer\'s through any host, and refuses what no one signed for, with its code', async () => {
    const bob = (await loadOrCreateUserKey(bobPem)).key
    const minted = await cli(bankHost, operatorPem, ['bank', 'mint', alice.id, '1000'])
    assert.ok(receiptSigned(minted), 'a receipt anyone can check against the bank\'s key')
    const paid = await cli(other, alicePem, ['transfer', bob.id, '300', '--memo', 'rent'])
    assert.deepEqual([paid.kind, paid.amount, paid.bank], ['transfer', 300, bankKey])
    assert.equal((await cli(other, bobPem, ['account'])).balance, 300)
    assert.equal((await cli(bankHost, alicePem, ['account'])).balance, 700)

    const mallory = generateOwnerKey()
    const order = signTransfer(alice, { bank: bankKey, to: bob.id, amount: 10 })
    assert.equal(await send(other, { ...signTransfer(mallory, { bank: bankKey, to: mallory.id, amount: 100 }), from: alice.id }), 'UNAUTHENTICATED', 'a forged order')
    const first = await send(other, order)
    assert.deepEqual(await send(bankHost, order), first, 'the same order again: the same receipt, carried out once')
    assert.equal(await send(other, signTransfer(alice, { bank: bankKey, to: mallory.id, amount: 10 }, Date.now(), order.nonce)), 'UNAUTHENTICATED', 'a used nonce under another order')
    assert.equal(await send(other, signTransfer(alice, { bank: generateOwnerKey().id, to: bob.id, amount: 10 })), 'UNKNOWN_BANK', 'an order for another bank')
    assert.equal(await send(other, signTransfer(alice, { bank: bankKey, to: bob.id, amount: 1_000_000 })), 'INSUFFICIENT_FUNDS')
    await assert.rejects(cli(other, alicePem, ['bank', 'mint', alice.id, '5']), /FORBIDDEN.*no operator/)
    assert.equal((await cli(other, alicePem, ['account'])).balance, 690)
    const verified = await cli(other, alicePem, ['bank', 'verify'])
    assert.equal(verified.problem, null)
  })

  it('conserves every credit through 1,000 concurrent transfers via two hosts with the bank killed midway: none applied twice, none below zero, the chain checks out', async t => {
    const payer = generateOwnerKey()
    const payees = Array.from({ length: 10 }, () => generateOwnerKey().id)
    await cli(bankHost, operatorPem, ['bank', 'mint', payer.id, '500'])
    // 1,000 orders of one credit for 500 credits: half must be refused, whatever happens.
    const orders = Array.from({ length: 1000 }, (_, i) => signTransfer(payer, { bank: bankKey, to: payees[i % payees.length] ?? '', amount: 1 }))
    const outcome = new Map<number, Receipt | string>()
    let answered = 0
    let killed: Promise<void> | undefined
    const worker = async (queue: number[]): Promise<void> => {
      for (let i = queue.shift(); i !== undefined; i = queue.shift()) {
        outcome.set(i, await send(i % 2 === 0 ? bankHost : other, orders[i] as TransferOrder))
        if (++answered === 300) killed = stopHost(bankHost, 'SIGKILL')
      }
    }
    const queue = orders.map((_, i) => i)
    await Promise.all(Array.from({ length: 32 }, async () => { await worker(queue) }))
    await killed
    const unanswered = [...outcome.values()].filter(o => typeof o === 'string' && o !== 'INSUFFICIENT_FUNDS').length
    assert.ok(unanswered > 0, 'the bank died while orders were under way')
    t.diagnostic(`${unanswered} orders unanswered while the bank was down`)
    bankHost = await startHost({ name: 'bank', dataDir: bankHost.dataDir, bootstrap: [other], extraArgs: ['--bank'] })
    // Every order without a final answer is sent again, the same order, until it has one.
    const final = (o: Receipt | string | undefined): boolean => typeof o === 'object' || o === 'INSUFFICIENT_FUNDS'
    await eventually(async () => {
      for (const [i, o] of orders.entries()) if (!final(outcome.get(i))) outcome.set(i, await send(i % 2 === 0 ? bankHost : other, o))
      return [...outcome.values()].every(final) || undefined
    }, 60_000, 'every order to be carried out or refused for want of funds')

    const receipts = [...outcome.values()].filter((o): o is Receipt => typeof o === 'object')
    assert.equal(receipts.length, 500, 'as many carried out as there were credits')
    assert.equal(new Set(receipts.map(r => r.seq)).size, 500, 'each its own entry')
    const entries = await ledgerOf(other)
    const check = checkLedger(bankKey, entries)
    assert.equal(check.problem, null)
    assert.equal(check.balances.get(payer.id), 0)
    assert.equal(payees.reduce((n, p) => n + (check.balances.get(p) ?? 0), 0), 500)
    assert.equal([...check.balances.values()].reduce((n, b) => n + b, 0), 0, 'credits neither made nor lost')
    assert.equal(entries.filter(e => e.from === payer.id).length, 500, 'no transfer applied twice')
  })
})
