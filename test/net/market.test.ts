import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { checkLedger, signTransfer, type InstanceMetrics, type LedgerEntry, type MarketView, type OwnerKey, type Receipt } from '../../src/core/index.ts'
import { loadOrCreateUserKey, type ApiClient } from '../../src/cli/index.ts'
import { apiOf, cli, CliError, eventually, getJson, operatorOf, startHost, stopHost, stopHosts, tempDir, type TestHost } from '../helpers/cluster.ts'

/** A task that wants all the CPU it can get (for five minutes at most: a failed test leaves none spinning). */
const SPIN = `name: spin
version: "1.0"
driver: process
command: "exec timeout 300 sh -c 'while :; do :; done'"
resources:
  cpu: 0.2
  memory: 16
`

/** A task that wants none. */
const IDLE = SPIN.replace('name: spin', 'name: idle').replace('while :; do :; done', 'sleep 300')

/** How far apart two shares may be measured (points of the host's CPU). */
const TOLERANCE = 0.05

/** The market on real xenosd processes: bids buy CPU shares, enforced by control groups; ended bids pay out. */
describe('the market', () => {
  let bankHost: TestHost, market: TestHost
  let dir: string, alicePem: string
  let alice: OwnerKey
  let api: ApiClient
  let bank: string

  before(async () => {
    dir = await tempDir('market')
    alicePem = join(dir, 'alice.pem')
    alice = (await loadOrCreateUserKey(alicePem)).key
    bankHost = await startHost({ name: 'bank', extraArgs: ['--bank', '--bank-grant', '100000'] })
    bank = (await getJson<{ bank: string }>(bankHost, '/v1/bank')).bank
    // The host that sells its CPU offers one CPU (of the machine's two or more): its instances together get at most that.
    market = await startHost({ name: 'seller', bootstrap: [bankHost], extraArgs: ['--accept-bank', bank, '--cpu', '1', '--memory', '512'] })
    await eventually(async () => (await getJson(market, '/v1/bank')).host === bankHost.info.peerId || undefined, 20_000, 'the seller to find the bank')
    for (const [name, text] of [['spin', SPIN], ['idle', IDLE]] as const) {
      await writeFile(join(dir, `${name}.yaml`), text)
      await cli(market, alicePem, ['template', 'import', join(dir, `${name}.yaml`)])
    }
    api = await apiOf(market, alicePem)
    // Alice's account opens with the bank's starting grant.
    await balance(alicePem)
  })

  after(async () => {
    // Instances outlive their host's process: end every one this test made.
    for (const pem of [alicePem, join(dir, 'mallory.pem')]) {
      const as = await apiOf(market, pem)
      const { instances } = await as.get<{ instances: Array<{ id: string, owner: string }> }>(`/v1/instances?host=${market.info.peerId}`)
      for (const v of instances.filter(i => i.owner === as.owner)) await as.signed('POST', `/v1/instances/${v.id}/destroy`, 'destroy', v.id, {}, undefined, market.info.peerId).catch(() => {})
    }
    await stopHosts([bankHost, market])
  })

  const deploy = async (template: string, count: number, pem = alicePem): Promise<string[]> =>
    (await cli(market, pem, ['deploy', template, '--host', 'seller', '--count', String(count)])).instances.map((v: { id: string }) => v.id)
  const viewNow = async (id: string): Promise<MarketView> => await api.signed<MarketView>('GET', `/v1/instances/${id}`, 'get', id, {}, undefined, market.info.peerId)

  /** CPU seconds each of `ids` used, read at once. */
  const cpuOf = async (ids: string[]): Promise<number[]> => await Promise.all(ids.map(async id =>
    (await api.signed<InstanceMetrics>('GET', `/v1/instances/${id}/metrics`, 'metrics', id, {}, undefined, market.info.peerId)).cpuSeconds))

  /** The part of the CPU each of `ids` used over the next `seconds`. */
  const measured = async (ids: string[], seconds: number): Promise<{ shares: number[], cpus: number }> => {
    const before = await cpuOf(ids)
    const start = Date.now()
    await sleep(seconds * 1000)
    const used = (await cpuOf(ids)).map((c, i) => c - (before[i] ?? 0))
    const sum = used.reduce((a, b) => a + b, 0)
    return { shares: used.map(u => u / sum), cpus: sum / ((Date.now() - start) / 1000) }
  }

  /** What the key in `pem` holds, asked of the bank from this process. */
  const balance = async (pem: string): Promise<number> => {
    const as = await apiOf(market, pem)
    return (await as.signed<{ balance: number }>('GET', '/v1/bank/account', 'account', bank, {}, undefined, bankHost.info.peerId)).balance
  }
  /** Ends instances from this process (the CLI would start one node per instance, slowly beside spinning tasks). */
  const destroy = async (ids: string[], as = api): Promise<void> => {
    for (const id of ids) await as.signed('POST', `/v1/instances/${id}/destroy`, 'destroy', id, {}, undefined, market.info.peerId)
  }
  const escrowOf = async (h: TestHost): Promise<string> => (await getJson<{ escrow: string }>(h, '/v1/host')).escrow
  const pay = async (to: string, amount: number, key = alice): Promise<Receipt> => await api.post<Receipt>('/v1/bank/transfers', signTransfer(key, { bank, to, amount }))
  /** Bids on `on` at once, from this process (the CLI takes a second to start: too long for 10 s bids). */
  const bidNow = async (on: string, amount: number, seconds: number): Promise<MarketView> => {
    const params = { receipt: await pay(await escrowOf(market), amount), seconds }
    return await api.signed<MarketView>('POST', `/v1/instances/${on}/bid`, 'bid', on, params, params, market.info.peerId)
  }

  it('divides the host\'s CPU by bid rate (3:1 over 20 s), changes within a second, and charges each bid to its end', async () => {
    const [a = '', b = ''] = await deploy('spin', 2)
    const spentBefore = await balance(alicePem)
    const bidA = await cli(market, alicePem, ['bid', a, '3000', '--for', '1000s'])
    const bidB = await cli(market, alicePem, ['bid', b, '1000', '--for', '1000s'])
    assert.deepEqual([bidA.bid, bidB.bid], [3000, 1000])
    assert.equal(await balance(alicePem), spentBefore - 4000, 'both bids were paid')
    assert.equal((await cli(market, alicePem, ['instance', 'show', a])).share, 0.75, 'the view shows the share')

    await sleep(1000)
    const threeToOne = await measured([a, b], 20)
    assert.ok(Math.abs((threeToOne.shares[0] ?? 0) - 0.75) <= TOLERANCE, `bids 3:1 measured ${threeToOne.shares.map(s => s.toFixed(3)).join(' / ')}`)
    assert.ok(threeToOne.cpus <= 1.1, `the host offers 1 CPU: its instances used ${threeToOne.cpus.toFixed(2)}`)

    // A's rate made B's by its time alone: all A has left over the time B's rate takes to spend it.
    const [viewA, viewB] = await Promise.all([a, b].map(viewNow))
    const seconds = Math.round(((viewA?.bid ?? 0) - (viewA?.spent ?? 0)) / (viewB?.rate ?? 1))
    const changed = await cli(market, alicePem, ['bid', a, '--for', `${seconds}s`])
    assert.equal(changed.bid, 3000, 'changing the time pays nothing')
    await sleep(1000)
    const even = await measured([a, b], 5)
    assert.ok(Math.abs((even.shares[0] ?? 0) - 0.5) <= TOLERANCE + 0.02, `a second after the change to 1:1, measured ${even.shares.map(s => s.toFixed(3)).join(' / ')}`)

    // Ending both ends their bids: what they did not spend comes back.
    const left = await balance(alicePem)
    const unspent = await Promise.all([a, b].map(viewNow))
    await destroy([a, b])
    const back = unspent.reduce((n, v) => n + (v.bid ?? 0) - (v.spent ?? 0), 0)
    await eventually(async () => { const now = await balance(alicePem); return (now >= left + back - 10 && now <= left + back) || undefined }, 20_000, 'the unspent parts to come back')
  })

  it('gives (10/10 s, 20/10 s, 30/30 s) shares of 1/4, 1/2, 1/4, and pays back exactly the unspent half of a bid stopped halfway', async () => {
    const ids = await deploy('spin', 3)
    const [c1 = '', c2 = '', c3 = ''] = ids
    const start = await balance(alicePem)
    const operator = operatorOf(market)
    const earned = await balance(operator)
    const opened = Date.now()
    await Promise.all(([[c1, 10, 10], [c2, 20, 10], [c3, 30, 30]] as const).map(async ([id, amount, time]) => await bidNow(id, amount, time)))
    const views = await Promise.all(ids.map(viewNow))
    assert.deepEqual(views.map(v => v.share), [0.25, 0.5, 0.25])
    const three = await measured(ids, 5)
    const expected = [0.25, 0.5, 0.25]
    three.shares.forEach((s, i) => { assert.ok(Math.abs(s - (expected[i] ?? 0)) <= TOLERANCE, `measured ${three.shares.map(x => x.toFixed(3)).join(' / ')}`) })

    // The 10 s bids run out: their instances fall back to the floor, all they paid is the operator's.
    await eventually(async () => (await viewNow(c1)).bid === undefined, 9_000, 'the 10 s bids to run out')
    // Halfway through c3's 30 s bid (in its 16th second): exactly 15 of its 30 come back.
    const halfway = ((await viewNow(c3)).bidUntil ?? 0) - 15_000 + 300
    assert.ok(Date.now() < halfway, 'still before the halfway mark')
    await sleep(halfway - Date.now())
    await api.signed('POST', `/v1/instances/${c3}/stop`, 'stop', c3, {}, undefined, market.info.peerId)
    await eventually(async () => await balance(alicePem) === start - 60 + 15 || undefined, 20_000, 'the unspent half to come back')
    await eventually(async () => await balance(operator) === earned + 10 + 20 + 15 || undefined, 20_000, 'the operator to earn what was spent')
    assert.ok(Date.now() - opened > 15_000)
    await destroy(ids)
  })

  it('refuses a forged receipt, a spent one, one for another host, one from another payer and a bid beyond the balance, each with its code', async () => {
    const [id = ''] = await deploy('idle', 1)
    const escrow = await escrowOf(market)
    const bidWith = async (receipt: Receipt, on = id, client = api): Promise<string> => {
      try {
        const params = { receipt, seconds: 60 }
        await client.signed<MarketView>('POST', `/v1/instances/${on}/bid`, 'bid', on, params, params, market.info.peerId)
        return 'OK'
      } catch (err) {
        return (err as { code: string }).code
      }
    }
    const good = await pay(escrow, 5)
    assert.equal(await bidWith({ ...good, amount: 5000 }), 'BAD_RECEIPT', 'its amount changed')
    assert.equal(await bidWith(good), 'OK')
    assert.equal(await bidWith(good), 'RECEIPT_SPENT', 'the same receipt again')
    const elsewhere = await escrowOf(bankHost)
    assert.equal(await bidWith(await pay(elsewhere, 5)), 'BAD_RECEIPT', 'a payment into another host\'s escrow')
    const mallory = (await loadOrCreateUserKey(join(dir, 'mallory.pem'))).key
    const malloryApi = await apiOf(market, join(dir, 'mallory.pem'))
    const notMallorys = await pay(escrow, 5)
    assert.equal(await bidWith(notMallorys, id, malloryApi), 'FORBIDDEN', 'a bid on another owner\'s instance')
    const [own = ''] = await deploy('idle', 1, join(dir, 'mallory.pem'))
    const alices = await pay(escrow, 5)
    assert.equal(await bidWith(alices, own, malloryApi), 'BAD_RECEIPT', 'Alice\'s payment for Mallory\'s bid')
    // The payments no bid took come back to Alice, once, at her word only.
    const refund = async (receipt: Receipt, as: ApiClient): Promise<void> => { await as.signed('POST', '/v1/market/refunds', 'refund', receipt.hash, {}, { receipt }, market.info.peerId) }
    await assert.rejects(refund(alices, malloryApi), /BAD_RECEIPT|is a payment of/)
    const before = await balance(alicePem)
    for (const receipt of [notMallorys, alices]) await refund(receipt, api)
    await assert.rejects(refund(alices, api), /spent already/)
    await eventually(async () => await balance(alicePem) === before + 10 || undefined, 20_000, 'the payments no bid took to come back')
    await assert.rejects(cli(market, join(dir, 'mallory.pem'), ['bid', own, String(10_000_000), '--for', '60s']), (err: CliError) => /INSUFFICIENT_FUNDS/.test(err.message))
    assert.ok(mallory.id !== alice.id)
    await destroy([id])
    await destroy([own], malloryApi)
  })

  it('deploys with a bid for each instance, where a market-only host takes no deploy without one', async () => {
    const strict = await startHost({ name: 'strict', bootstrap: [bankHost], extraArgs: ['--accept-bank', bank, '--market-only'] })
    try {
      await eventually(async () => (await getJson(market, '/v1/peers')).hosts.some((h: { name: string }) => h.name === 'strict') || undefined, 20_000, 'the market-only host to be advertised')
      await assert.rejects(cli(market, alicePem, ['deploy', 'idle', '--host', 'strict']), (err: CliError) => /BID_REQUIRED/.test(err.message))
      const before = await balance(alicePem)
      const made = await cli(market, alicePem, ['deploy', 'idle', '--host', 'strict', '--count', '2', '--bid', '50', '--for', '100s'])
      assert.deepEqual(made.instances.map((v: MarketView) => v.bid), [50, 50], 'each instance\'s bid is open as it is made')
      assert.equal(await balance(alicePem), before - 100)
      const strictApi = await apiOf(strict, alicePem)
      for (const v of made.instances) await strictApi.signed('POST', `/v1/instances/${v.id}/destroy`, 'destroy', v.id, {}, undefined, strict.info.peerId)
      await eventually(async () => { const now = await balance(alicePem); return (now > before - 10 && now <= before) || undefined }, 20_000, 'the unspent bids to come back')
    } finally {
      await stopHost(strict)
    }
  })

  it('lists hosts cheapest first and drops those whose adverts ran out', async () => {
    const [id = ''] = await deploy('idle', 1)
    await bidNow(id, 600, 600)
    const third = await startHost({ name: 'third', bootstrap: [bankHost], extraArgs: ['--accept-bank', bank] })
    const names = async (): Promise<string[]> => (await cli(market, alicePem, ['hosts', '--by-price'])).map((h: { name: string }) => h.name)
    await eventually(async () => (await names()).length === 3 || undefined, 20_000, 'all three hosts to be listed')
    const listed = await cli(market, alicePem, ['hosts', '--by-price'])
    assert.equal(listed.at(-1).name, 'seller', 'the host with a bid on it is dearest')
    assert.ok(Math.abs(listed.at(-1).price - 1) < 0.01, `600 credits over 600 s on 1 CPU: price ${listed.at(-1).price}`)
    const searched = await cli(market, alicePem, ['search', '--kind', 'host', '--by-price'])
    assert.equal(searched.at(-1).body.name, 'seller', 'a search ranks hosts by price too')
    await stopHost(third, 'SIGKILL')
    await eventually(async () => !(await names()).includes('third') || undefined, 20_000, 'the dead host\'s advert to run out')
    await destroy([id])
  })

  it('keeps a bid through a kill -9 of its host, changes it while the bank is down, and pays out once the bank is back', async () => {
    const [id = ''] = await deploy('idle', 1)
    const before = await balance(alicePem)
    await bidNow(id, 100, 100)
    await stopHost(market, 'SIGKILL')
    market = await startHost({ name: 'seller', dataDir: market.dataDir, bootstrap: [bankHost], extraArgs: ['--accept-bank', bank, '--cpu', '1', '--memory', '512'] })
    api = await apiOf(market, alicePem)
    const kept = await eventually(async () => { const v = await viewNow(id); return v.bid === 100 ? v : undefined }, 20_000, 'the bid to be back with its host')
    assert.ok((kept.spent ?? 0) < 100)
    // Two whole seconds of the bid charged: what it spent is then at least 2 credits, whatever the pace of the restarts.
    await sleep(2000)

    await stopHost(bankHost, 'SIGKILL')
    const params = { seconds: 200 }
    const longer = await api.signed<MarketView>('POST', `/v1/instances/${id}/bid`, 'bid', id, params, params, market.info.peerId)
    assert.ok((longer.rate ?? 1) < 1, 'a bid changes without the bank: its receipts were checked offline')
    await destroy([id])
    bankHost = await startHost({ name: 'bank', dataDir: bankHost.dataDir, bootstrap: [market], extraArgs: ['--bank', '--bank-grant', '100000'] })
    await eventually(async () => { const now = await balance(alicePem); return (now > before - 100 && now < before) || undefined }, 30_000, 'the unspent part to come back once the bank is back')
    const entries = (await getJson<{ entries: LedgerEntry[] }>(bankHost, '/v1/bank/ledger?from=1')).entries
    const check = checkLedger(bank, entries)
    assert.equal(check.problem, null)
    const escrow = await escrowOf(market)
    await eventually(async () => {
      const all = (await getJson<{ entries: LedgerEntry[] }>(bankHost, '/v1/bank/ledger?from=1')).entries
      return (checkLedger(bank, all).balances.get(escrow) ?? 0) === 0 || undefined
    }, 20_000, 'the escrow to hold nothing once every bid has ended')
  })
})

