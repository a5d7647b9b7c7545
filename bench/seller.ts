import { eventually, getJson, startHost, type TestHost } from '../test/helpers/cluster.ts'

/**
 * A bank host, whose every new account is granted `grant` credits, and a seller offering 1 CPU
 * and `memory` MiB that deals with that bank (once it has found it).
 */
export async function bankAndSeller (grant: number, memory: number): Promise<{ bankHost: TestHost, bank: string, seller: TestHost }> {
  const bankHost = await startHost({ name: 'bank', extraArgs: ['--bank', '--bank-grant', String(grant)] })
  const bank = (await getJson<{ bank: string }>(bankHost, '/v1/bank')).bank
  const seller = await startHost({ name: 'seller', bootstrap: [bankHost], extraArgs: ['--accept-bank', bank, '--cpu', '1', '--memory', String(memory)] })
  await eventually(async () => (await getJson(seller, '/v1/bank')).host === bankHost.info.peerId || undefined, 20_000, 'the seller to find the bank')
  return { bankHost, bank, seller }
}
