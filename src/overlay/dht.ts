import { advertSchema, isMoreRecent, type Advert } from '../core/index.ts'
import { verifyAdvert } from './adverts.ts'

/**
 * DHT records are signed adverts under two kinds of key: `/xenos/a/<kind>/<id>` for lookups by id
 * and `/xenos/n/<kind>/<name>` for lookups by name. Every DHT node validates what it stores, so
 * the DHT never holds an advert that would not pass a host's own checks.
 */
export function idKey (kind: string, id: string): Uint8Array {
  return new TextEncoder().encode(`/xenos/a/${kind}/${id}`)
}

export function nameKey (kind: string, name: string): Uint8Array {
  return new TextEncoder().encode(`/xenos/n/${kind}/${name}`)
}

/** The keys under which an advert is stored in the DHT. */
export function keysOf (a: Advert): Uint8Array[] {
  const keys = [idKey(a.kind, a.id)]
  if (a.kind !== 'host') keys.push(nameKey(a.kind, a.body.name))
  return keys
}

export async function dhtValidator (key: Uint8Array, value: Uint8Array): Promise<void> {
  const result = await verifyAdvert(value)
  if (!result.ok) throw new Error(`invalid advert: ${result.reason}`)
  const k = new TextDecoder().decode(key)
  if (!keysOf(result.advert).some(x => new TextDecoder().decode(x) === k)) throw new Error('advert does not belong under this key')
}

/**
 * Picks the most recent advert among records for one key (for an instance, that of the host it
 * was placed on last). Every record was validated when it was stored.
 */
export function dhtSelector (_key: Uint8Array, records: Uint8Array[]): number {
  let best = 0
  let bestAdvert: Advert | undefined
  records.forEach((r, i) => {
    const parsed = advertSchema.safeParse(parseJson(r))
    if (parsed.success && (bestAdvert === undefined || isMoreRecent(parsed.data, bestAdvert))) {
      best = i
      bestAdvert = parsed.data
    }
  })
  return best
}

function parseJson (bytes: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(bytes))
  } catch {
    return undefined
  }
}
