/**
 * Bids on VMs: two QEMU instances (KVM when usable, TCG otherwise) whose guests spin, on a host
 * offering 1 CPU. Each one's part of the CPU its QEMU used over 20 s, without bids (the
 * baseline: what a host without a market gives them) and with bids 3:1 and then 1:1.
 * Writes bench/results/market-vm-latest.json.
 *
 *   node --disable-warning=ExperimentalWarning bench/market-vm.ts
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { signTransfer, type InstanceMetrics, type Receipt } from '../src/core/index.ts'
import { loadOrCreateUserKey } from '../src/cli/index.ts'
import { apiOf, cli, getJson, ROOT, stopHosts, tempDir } from '../test/helpers/cluster.ts'
import { bankAndSeller } from './seller.ts'
import { round } from './stats.ts'

const dir = await tempDir('bench-market-vm')
const alicePem = join(dir, 'alice.pem')
const alice = (await loadOrCreateUserKey(alicePem)).key
const { bankHost, bank, seller } = await bankAndSeller(1_000_000, 2048)
const template = join(dir, 'vmspin')
await mkdir(template)
// The guest spins in its shell and serves nothing: all it wants is CPU.
await writeFile(join(template, 'template.yaml'), 'name: vmspin\nversion: "1"\ncommand: "while :; do :; done"\nresources: {cpu: 0.5, memory: 128}\n')
await cli(seller, alicePem, ['template', 'build', template])
const api = await apiOf(seller, alicePem)
await api.signed('GET', '/v1/bank/account', 'account', bank, {}, undefined, bankHost.info.peerId)
const escrow = (await getJson<{ escrow: string }>(seller, '/v1/host')).escrow
const ids: string[] = (await cli(seller, alicePem, ['deploy', 'vmspin', '--host', 'seller', '--count', '2', '--wait'])).instances.map((v: { id: string }) => v.id)

async function cpuOf (): Promise<number[]> {
  return await Promise.all(ids.map(async id => (await api.signed<InstanceMetrics>('GET', `/v1/instances/${id}/metrics`, 'metrics', id, {}, undefined, seller.info.peerId)).cpuSeconds))
}

/** Each VM's part of the CPU they used together over `seconds`, and how many CPUs that was. */
async function sharesOver (seconds: number): Promise<{ shares: number[], cpus: number }> {
  const before = await cpuOf()
  const t0 = Date.now()
  await sleep(seconds * 1000)
  const used = (await cpuOf()).map((c, i) => c - (before[i] ?? 0))
  const sum = used.reduce((a, b) => a + b, 0)
  return { shares: used.map(u => round(u / sum, 3)), cpus: round(sum / ((Date.now() - t0) / 1000), 2) }
}

async function bid (id: string, amount: number, seconds: number): Promise<void> {
  const receipt = await api.post<Receipt>('/v1/bank/transfers', signTransfer(alice, { bank, to: escrow, amount }))
  const params = { receipt, seconds }
  await api.signed('POST', `/v1/instances/${id}/bid`, 'bid', id, params, params, seller.info.peerId)
}

// Let both boots finish before measuring.
await sleep(10_000)
const without = await sharesOver(20)
const [a = '', b = ''] = ids
await bid(a, 3000, 1000)
await bid(b, 1000, 1000)
await sleep(1000)
const threeToOne = await sharesOver(20)
await bid(b, 2000, 1000)
await sleep(1000)
const even = await sharesOver(20)
for (const id of ids) await api.signed('POST', `/v1/instances/${id}/destroy`, 'destroy', id, {}, undefined, seller.info.peerId)

const result = {
  when: new Date().toISOString(),
  driver: 'qemu',
  withoutBids: without,
  bids3to1: { expected: [0.75, 0.25], ...threeToOne, error: round(Math.abs((threeToOne.shares[0] ?? 0) - 0.75) * 100, 2) },
  bids1to1: { expected: [0.5, 0.5], ...even, error: round(Math.abs((even.shares[0] ?? 0) - 0.5) * 100, 2) },
}
await writeFile(join(ROOT, 'bench/results/market-vm-latest.json'), JSON.stringify(result, null, 2) + '\n')
process.stdout.write(JSON.stringify(result, null, 2) + '\n')
await stopHosts([bankHost, seller])
