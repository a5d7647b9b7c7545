/**
 * The automatic bidder on real xenosd processes: a bank host and 8 sellers offering 1–4 CPUs,
 * where another user bids at random (10–1000 credits/s a host). The user's budget goes through
 * `xenos deploy --budget` (the bidder splits it by the best response) over 4 and then 8 of the
 * sellers. Its total share Σ cpu·share, as the hosts compute and enforce it, is compared with the
 * same credits spread evenly (`deploy --bid` of an equal part on each host). The share the best
 * response predicts from the same bids is printed beside it.
 * Writes bench/results/bidder-latest.json.
 *
 *   node --disable-warning=ExperimentalWarning bench/bidder.ts
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { allowanceId, allowanceSchema, signTransfer, type MarketView, type Receipt } from '../src/core/index.ts'
import { loadOrCreateUserKey, type ApiClient } from '../src/cli/index.ts'
import { bestResponse, totalShare } from '../src/market/index.ts'
import { apiOf, cli, eventually, getJson, ROOT, startHost, stopHosts, tempDir, type TestHost } from '../test/helpers/cluster.ts'
import { round } from './stats.ts'

const IDLE = 'name: idle\nversion: "1.0"\ndriver: process\ncommand: "exec sleep 900"\nresources: {cpu: 0.1, memory: 16}\n'
const CPUS = [1, 2, 3, 4, 1, 2, 3, 4]
/** The user's budget: 10 credits/s over 120 s. Its rounds pay for the next 10 s: 100 credits. */
const BUDGET = 1200
const SECONDS = 120
const AHEAD = 10
const TRIALS = 3

const dir = await tempDir('bench-bidder')
const [alicePem, bobPem] = [join(dir, 'alice.pem'), join(dir, 'bob.pem')]
const bob = (await loadOrCreateUserKey(bobPem)).key
await loadOrCreateUserKey(alicePem)
const bankHost = await startHost({ name: 'bank', extraArgs: ['--bank', '--bank-grant', '100000000'] })
const bank = (await getJson<{ bank: string }>(bankHost, '/v1/bank')).bank
const sellers: TestHost[] = []
for (const [j, cpu] of CPUS.entries()) sellers.push(await startHost({ name: `s${j}`, bootstrap: [bankHost], extraArgs: ['--accept-bank', bank, '--cpu', String(cpu), '--memory', '1024'] }))
await eventually(async () => (await cli(bankHost, alicePem, ['hosts'])).length === CPUS.length + 1 || undefined, 60_000, 'every seller\'s advert')
await writeFile(join(dir, 'idle.yaml'), IDLE)
await cli(bankHost, alicePem, ['template', 'import', join(dir, 'idle.yaml')])
for (const pem of [alicePem, bobPem]) await cli(bankHost, pem, ['account'])
const bobApi = await apiOf(bankHost, bobPem)

/** Deploys one instance on each of `on` through the bank's host; their ids, in order. */
async function deployOn (pem: string, on: TestHost[], args: string[]): Promise<string[]> {
  const result = await cli(bankHost, pem, ['deploy', 'idle', '--hosts', on.map(h => h.name).join(','), '--count', '1', ...args])
  return on.map(h => result.instances.find((v: { host: string }) => v.host === h.info.peerId).id as string)
}

async function viewOn (pem: string, h: TestHost, id: string): Promise<MarketView> {
  return await (await apiOf(h, pem)).signed<MarketView>('GET', `/v1/instances/${id}`, 'get', id, {}, undefined, h.info.peerId)
}

/** Bob's bid on `id` (on `h`) made to pay `rate` credits/s for the next 300 s. */
async function bobBids (h: TestHost, id: string, rate: number, api: ApiClient = bobApi): Promise<void> {
  const escrow = (await getJson<{ escrow: string }>(h, '/v1/host')).escrow
  const receipt = await api.post<Receipt>('/v1/bank/transfers', signTransfer(bob, { bank, to: escrow, amount: Math.round(rate * 300) }))
  const params = { receipt, seconds: 300 }
  await (await apiOf(h, bobPem)).signed('POST', `/v1/instances/${id}/bid`, 'bid', id, params, params, h.info.peerId)
}

async function destroy (pem: string, on: TestHost[], ids: string[]): Promise<void> {
  for (const [j, id] of ids.entries()) {
    const h = on[j]
    if (h !== undefined) await (await apiOf(h, pem)).signed('POST', `/v1/instances/${id}/destroy`, 'destroy', id, {}, undefined, h.info.peerId)
  }
}

/** Alice's total share over `on`: Σ cpu·share of her instances `ids`. */
async function totalOf (on: TestHost[], ids: string[]): Promise<number> {
  const shares = await Promise.all(ids.map(async (id, j) => (await viewOn(alicePem, on[j] ?? bankHost, id)).share ?? 0))
  return shares.reduce((n, s, j) => n + s * (CPUS[j] ?? 1), 0)
}

function seeded (seed: number): () => number {
  let s = seed
  return () => {
    s = (s * 1_103_515_245 + 12_345) % 2 ** 31
    return s / 2 ** 31
  }
}

const runs: Array<{ hosts: number, trial: number, bobRates: number[], best: number, even: number, predicted: number, bestAfterRounds: number }> = []
for (const n of [4, 8]) {
  const on = sellers.slice(0, n)
  for (let trial = 0; trial < TRIALS; trial++) {
    const next = seeded(1000 * n + trial + 1)
    const rates = on.map(() => 10 + Math.round(next() * 990))
    const bobs = await deployOn(bobPem, on, ['--bid', '1', '--for', '300s'])
    for (const [j, id] of bobs.entries()) await bobBids(on[j] ?? bankHost, id, rates[j] ?? 10)
    await sleep(2000)

    // The bidder's split: its first round is paid as the budget is given.
    const deployed = await cli(bankHost, alicePem, ['deploy', 'idle', '--hosts', on.map(h => h.name).join(','), '--count', '1', '--budget', String(BUDGET), '--for', `${SECONDS}s`])
    const ids = on.map(h => deployed.instances.find((v: { host: string }) => v.host === h.info.peerId).id as string)
    const best = await totalOf(on, ids)
    // Two more rounds (5 s each): the re-bids hold the share.
    await sleep(11_000)
    const bestAfterRounds = await totalOf(on, ids)
    // Its allowance is in the public ledger, with every payment made under it.
    const [spent] = (await getJson<{ entries: Array<{ kind: string, order: string }> }>(bankHost, '/v1/bank/ledger?from=1')).entries.filter(e => e.kind === 'spend').slice(-1)
    if (spent !== undefined) await cli(bankHost, alicePem, ['budget', allowanceId(allowanceSchema.parse(JSON.parse(spent.order).allowance)), '--stop'])
    await destroy(alicePem, on, ids)

    // The same credits for the same 10 s, an equal part on each host.
    const even = await deployOn(alicePem, on, ['--bid', String(Math.floor(BUDGET * AHEAD / SECONDS / n)), '--for', `${AHEAD}s`])
    const evenTotal = await totalOf(on, even)
    await destroy(alicePem, on, even)
    await destroy(bobPem, on, bobs)

    const markets = rates.map((r, j) => ({ others: r * AHEAD, weight: CPUS[j] ?? 1 }))
    const x = BUDGET * AHEAD / SECONDS
    const predicted = totalShare(bestResponse(x, markets), markets) / totalShare(markets.map(() => x / n), markets)
    runs.push({ hosts: n, trial, bobRates: rates, best: round(best, 4), even: round(evenTotal, 4), predicted: round(predicted, 3), bestAfterRounds: round(bestAfterRounds, 4) })
    process.stderr.write(`${n} hosts, trial ${trial}: best ${best.toFixed(4)} (after rounds ${bestAfterRounds.toFixed(4)}), even ${evenTotal.toFixed(4)}, predicted ratio ${predicted.toFixed(3)}\n`)
  }
}

const result = {
  when: new Date().toISOString(),
  budget: { credits: BUDGET, seconds: SECONDS },
  runs,
  summary: [4, 8].map(n => {
    const these = runs.filter(r => r.hosts === n)
    const ratios = these.map(r => r.best / r.even).sort((a, b) => a - b)
    return { hosts: n, bestOverEven: { min: round(ratios[0] ?? 0, 3), p50: round(ratios[Math.floor(ratios.length / 2)] ?? 0, 3), max: round(ratios.at(-1) ?? 0, 3) }, predicted: these.map(r => r.predicted), heldAfterRounds: these.map(r => round(r.bestAfterRounds / r.best, 3)) }
  }),
}
await writeFile(join(ROOT, 'bench/results/bidder-latest.json'), JSON.stringify(result, null, 2) + '\n')
process.stdout.write(JSON.stringify(result, null, 2) + '\n')
await stopHosts([bankHost, ...sellers])
