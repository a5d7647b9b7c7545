import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { multiaddr } from '@multiformats/multiaddr'
import {
  allowanceId, checkLedger, deploySpecDigest, instanceIdsOf, receiptSchema, signAction, signAllowance, signDeployToken, signSpend, signTransfer, spendOrderSchema,
  type Allowance, type BudgetView, type LedgerEntry, type MarketView, type OwnerKey, type Receipt,
} from '../../src/core/index.ts'
import { loadOrCreateUserKey, type ApiClient } from '../../src/cli/index.ts'
import { apiOf, cli, eventually, getJson, startHost, stopHost, stopHosts, tempDir, type TestHost } from '../helpers/cluster.ts'
import { startRogue } from '../helpers/rogue.ts'

/** A task that wants no CPU: what the bidder does is about prices, not about what instances use. */
const IDLE = `name: idle
version: "1.0"
driver: process
command: "exec sleep 300"
resources:
  cpu: 0.1
  memory: 16
`

/** The automatic bidder on real xenosd processes: a budget spread by the best response, re-bid as prices change, under the owner's allowance. */
describe('the automatic bidder', () => {
  let bankHost: TestHost, s1: TestHost, s2: TestHost
  let dir: string, alicePem: string, bobPem: string
  let bank: string
  let template: string
  let aliceKey: OwnerKey
  /** Alice's allowance, and her instance on s1, once the first test made them. */
  let allowance: Allowance
  let a1: string
  /** Every instance made, by the key that made it and the name of its host. */
  const made: Array<{ pem: string, host: 's1' | 's2', id: string }> = []
  const seller = (name: 's1' | 's2'): TestHost => name === 's1' ? s1 : s2

  const sellerArgs = (): string[] => ['--accept-bank', bank, '--cpu', '1', '--memory', '512']

  before(async () => {
    dir = await tempDir('bidder')
    alicePem = join(dir, 'alice.pem')
    bobPem = join(dir, 'bob.pem')
    aliceKey = (await loadOrCreateUserKey(alicePem)).key
    await loadOrCreateUserKey(bobPem)
    // The bank's host is the one the users talk to: its bidder spends Alice's budget.
    bankHost = await startHost({ name: 'bank', extraArgs: ['--bank', '--bank-grant', '100000'] })
    bank = (await getJson<{ bank: string }>(bankHost, '/v1/bank')).bank
    s1 = await startHost({ name: 's1', bootstrap: [bankHost], extraArgs: sellerArgs() })
    s2 = await startHost({ name: 's2', bootstrap: [bankHost], extraArgs: sellerArgs() })
    for (const h of [s1, s2]) await eventually(async () => (await getJson(h, '/v1/bank')).host === bankHost.info.peerId || undefined, 20_000, `${h.name} to find the bank`)
    await eventually(async () => (await cli(bankHost, alicePem, ['hosts'])).length === 3 || undefined, 20_000, 'the sellers\' adverts')
    await writeFile(join(dir, 'idle.yaml'), IDLE)
    template = (await cli(bankHost, alicePem, ['template', 'import', join(dir, 'idle.yaml')])).id
    // Each account opens with the bank's starting grant.
    for (const pem of [alicePem, bobPem]) await cli(bankHost, pem, ['account'])
  })

  after(async () => {
    for (const m of made) {
      const h = seller(m.host)
      await (await apiOf(h, m.pem)).signed('POST', `/v1/instances/${m.id}/destroy`, 'destroy', m.id, {}, undefined, h.info.peerId).catch(() => {})
    }
    await stopHosts([bankHost, s1, s2])
  })

  /** Deploys on the hosts `on` names, one instance on each, through the bank's host. */
  const deploy = async (pem: string, on: Array<'s1' | 's2'>, args: string[]): Promise<string[]> => {
    const result = await cli(bankHost, pem, ['deploy', 'idle', '--hosts', on.join(','), '--count', '1', ...args])
    const ids = on.map(name => result.instances.find((v: { id: string, host: string }) => v.host === seller(name).info.peerId).id as string)
    for (const [i, id] of ids.entries()) made.push({ pem, host: on[i] ?? 's1', id })
    return ids
  }
  const bidOf = async (pem: string, h: TestHost, id: string): Promise<MarketView> => await (await apiOf(h, pem)).signed<MarketView>('GET', `/v1/instances/${id}`, 'get', id, {}, undefined, h.info.peerId)
  const ledger = async (): Promise<LedgerEntry[]> => (await getJson<{ entries: LedgerEntry[] }>(bankHost, '/v1/bank/ledger?from=1')).entries
  const ledgerHead = async (): Promise<number> => (await ledger()).length

  it('splits a budget by the best response, moves it off a host where another bids much more, goes on after a kill -9, and never pays past the allowance', async () => {
    // Bob bids 5 credits/s on each seller.
    const [bob1 = ''] = await deploy(bobPem, ['s1', 's2'], ['--bid', '400', '--for', '80s'])
    // Alice gives 300 credits over 50 s to one instance on each: what others bid is the same on both, and so is her split.
    const started = Date.now()
    const ids = await deploy(alicePem, ['s1', 's2'], ['--budget', '300', '--for', '50s'])
    const [, a2 = ''] = ids
    a1 = ids[0] ?? ''
    const [v1, v2] = [await bidOf(alicePem, s1, a1), await bidOf(alicePem, s2, a2)]
    assert.ok((v1.rate ?? 0) > 0 && (v2.rate ?? 0) > 0, 'each instance starts with a bid')
    assert.ok(Math.abs((v1.rate ?? 0) - (v2.rate ?? 0)) <= 0.2, `an even split where others bid evenly: ${v1.rate} and ${v2.rate} credits/s`)

    const spends = (entries: LedgerEntry[]): LedgerEntry[] => entries.filter(e => e.kind === 'spend')
    const [first] = spends(await ledger())
    assert.ok(first !== undefined, 'the first round was paid under the allowance')
    allowance = spendOrderSchema.parse(JSON.parse(first.order ?? '')).allowance
    const budget = allowanceId(allowance)
    const shown: BudgetView = await cli(bankHost, alicePem, ['budget', budget])
    assert.deepEqual([shown.state, shown.max, shown.instances.map(i => i.id)], ['active', 300, ids])
    assert.ok(shown.instances.every(i => (i.bid ?? 0) > 0 && (i.share ?? 0) > 0), 'each instance\'s bid and share, as its host says')
    const table = await cli(bankHost, alicePem, ['budget', budget], false)
    assert.match(table, /: active, paid \d+ of 300 credits, until /)

    // Bob bids ten times more on s1: Alice's bidder moves what she spends to s2.
    await cli(bankHost, bobPem, ['bid', bob1, '4000', '--for', '80s'])
    await eventually(async () => {
      const [n1, n2] = [await bidOf(alicePem, s1, a1), await bidOf(alicePem, s2, a2)]
      return ((n1.rate ?? 0) < 1 && (n2.rate ?? 0) > 4.5) || undefined
    }, 20_000, 'Alice\'s bid to move off the dear host')

    // The bidder's host dies and comes back: the budget goes on from where it was.
    await stopHost(bankHost, 'SIGKILL')
    bankHost = await startHost({ name: 'bank', dataDir: bankHost.dataDir, bootstrap: [s1], extraArgs: ['--bank', '--bank-grant', '100000'] })
    const until = (await bidOf(alicePem, s2, a2)).bidUntil ?? 0
    await eventually(async () => ((await bidOf(alicePem, s2, a2)).bidUntil ?? 0) > until || undefined, 30_000, 'the bidder to bid again after its restart')

    // Mallory can do nothing with Alice's allowance: another host's bidder will not take it.
    const mallory = (await loadOrCreateUserKey(join(dir, 'mallory.pem'))).key
    const s1Api: ApiClient = await apiOf(s1, join(dir, 'mallory.pem'))
    await assert.rejects(s1Api.post('/v1/budgets', { allowance, hosts: { [a1]: s1.info.peerId, [a2]: s2.info.peerId } }), /not for this host's bidder/)
    const hers = signAllowance(mallory, { ...allowance, payees: allowance.payees })
    await assert.rejects(s1Api.post('/v1/budgets', { allowance: { ...hers, owner: allowance.owner }, hosts: { [a1]: s1.info.peerId, [a2]: s2.info.peerId } }), /not signed by the owner/)

    // At its end the budget stops, and the ledger shows no more paid under it than Alice allowed.
    const alice = await apiOf(bankHost, alicePem)
    await eventually(async () => (await alice.signed<BudgetView>('GET', `/v1/budgets/${budget}`, 'get', budget, {})).state === 'ended' || undefined, Math.max(5000, started + 60_000 - Date.now()), 'the budget to end')
    const entries = await ledger()
    assert.equal(checkLedger(bank, entries).problem, null)
    const paid = spends(entries).reduce((n, e) => n + e.amount, 0)
    assert.ok(paid <= 300 && paid > 150, `${paid} credits were paid under an allowance of 300`)
    for (const id of ids) assert.ok(((await bidOf(alicePem, id === a1 ? s1 : s2, id)).bidUntil ?? 0) <= allowance.until + 1000, 'no bid outlasts the budget')
    const account = await cli(bankHost, alicePem, ['account'])
    assert.deepEqual(account.instances.map((i: { instance: string }) => i.instance).sort(), [...ids].sort(), 'her account shows what she spent on each instance')
    assert.equal(account.instances.reduce((n: number, i: { paid: number }) => n + i.paid, 0), paid)
  })

  it('carries out nothing a rogue peer sends to the market\'s RPCs but what an owner signed, once', async () => {
    const rogue = await startRogue(s1)
    await rogue.node.dial(multiaddr(bankHost.info.multiaddrs[0] ?? ''))
    const mallory = (await loadOrCreateUserKey(join(dir, 'mallory.pem'))).key
    const code = (c: string) => (e: any): boolean => e.code === c
    const signed = (key: OwnerKey, action: string, target: string, params: unknown, host = s1.info.peerId): ReturnType<typeof signAction> => signAction(key, { action, target, params, host })

    // A bid on Alice's instance in Mallory's name, or in her agent's with Alice's allowance: refused.
    const longer = { seconds: 3600 }
    await assert.rejects(rogue.rpc.call(s1.info.peerId, 'instance.bid', { id: a1, params: longer, auth: signed(mallory, 'bid', a1, longer) }), code('FORBIDDEN'))
    await assert.rejects(rogue.rpc.call(s1.info.peerId, 'instance.bid', { id: a1, params: longer, auth: signed(mallory, 'bid', a1, longer), allowance }), code('FORBIDDEN'))
    await assert.rejects(rogue.rpc.call(s1.info.peerId, 'market.quote', { allowance, auth: signed(mallory, 'quote', allowanceId(allowance), {}) }), code('FORBIDDEN'), 'what Alice\'s bids hold is her agent\'s to see')

    // Alice's own bid, relayed by the rogue, is carried out once: replayed, refused; its receipt spent.
    const escrow = (await getJson<{ escrow: string }>(s1, '/v1/host')).escrow
    const receipt = await (await apiOf(bankHost, alicePem)).post<Receipt>('/v1/bank/transfers', signTransfer(aliceKey, { bank, to: escrow, amount: 10 }))
    const params = { receipt, seconds: 100 }
    const hers = { id: a1, params, auth: signed(aliceKey, 'bid', a1, params) }
    assert.equal(((await rogue.rpc.call(s1.info.peerId, 'instance.bid', hers)) as MarketView).bid, 10)
    await assert.rejects(rogue.rpc.call(s1.info.peerId, 'instance.bid', hers), code('UNAUTHENTICATED'), 'replayed')
    await assert.rejects(rogue.rpc.call(s1.info.peerId, 'instance.bid', { ...hers, auth: signed(aliceKey, 'bid', a1, params) }), code('RECEIPT_SPENT'), 'its receipt again, freshly signed')
    // ...and its receipt is Alice's to ask back, not Mallory's.
    await assert.rejects(rogue.rpc.call(s1.info.peerId, 'market.refund', { receipt, auth: signed(mallory, 'refund', receipt.hash, {}) }), code('BAD_RECEIPT'))

    // A deploy whose bid carries a receipt with a larger amount than the bank signed: nothing is made.
    const spec = { name: 'forged-bid' }
    const token = signDeployToken(aliceKey, { host: s1.info.peerId, template, key: 'f'.repeat(32), count: 1, spec: deploySpecDigest(spec) })
    const [instance = ''] = instanceIdsOf(token)
    const paid = await (await apiOf(bankHost, alicePem)).post<Receipt>('/v1/bank/transfers', signTransfer(aliceKey, { bank, to: escrow, amount: 1 }))
    const forged = { receipt: receiptSchema.parse({ ...paid, amount: 1000 }), seconds: 60 }
    await assert.rejects(rogue.rpc.call(s1.info.peerId, 'instance.deploy', { template, spec, part: { token, bids: [{ instance, params: forged, auth: signed(aliceKey, 'bid', instance, forged) }] } }), code('BAD_RECEIPT'))
    assert.equal((await getJson<{ instances: Array<{ id: string }> }>(s1, `/v1/instances?host=${s1.info.peerId}`)).instances.some(v => v.id === instance), false, 'no instance was made')

    // Payments under Alice's allowance: one signed by Mallory is refused; one replayed from the public ledger is carried out no second time.
    await assert.rejects(rogue.rpc.call(bankHost.info.peerId, 'bank.spend', signSpend(mallory, { allowance, to: allowance.payees[0] ?? '', amount: 1 })), code('UNAUTHENTICATED'))
    const before = await ledgerHead()
    const [spent] = (await ledger()).filter(e => e.kind === 'spend')
    const again = await rogue.rpc.call(bankHost.info.peerId, 'bank.spend', spendOrderSchema.parse(JSON.parse(spent?.order ?? ''))) as Receipt
    assert.equal(again.seq, spent?.seq, 'the same receipt')
    assert.equal(await ledgerHead(), before, 'and no new entry')
    await rogue.stop()
  })
})
