import { XenosError } from '../core/index.ts'
import type { Overlay } from '../overlay/index.ts'

/** Calls `method` on `host` over the overlay's RPC, first learning how to reach the host (HOST_NOT_FOUND when nothing says). */
export async function callHost (overlay: Pick<Overlay, 'learnHost' | 'rpc'>, host: string, method: string, params: unknown, timeoutMs?: number): Promise<unknown> {
  if (!await overlay.learnHost(host)) throw new XenosError('HOST_NOT_FOUND', `no host ${host} is advertised on the overlay, nor connected to this one: see "xenos peers"`)
  return await overlay.rpc.call(host, method, params, timeoutMs === undefined ? {} : { timeoutMs })
}

/** The host that advertises instance `id`. */
export async function hostOfInstance (overlay: Pick<Overlay, 'lookup'>, id: string): Promise<string> {
  const advert = await overlay.lookup('instance', id)
  if (advert === undefined) throw new XenosError('INSTANCE_NOT_FOUND', `no instance ${id} is advertised: check the id with "xenos instance list --all"`)
  return advert.host
}
