import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import {
  advertSchema, canonicalJson, MAX_ADVERT_BYTES, MAX_ADVERT_SKEW_MS, MAX_ADVERT_TTL_MS, verifyPlacement,
  type Advert, type HostVerifier, type UnsignedAdvert,
} from '../core/index.ts'

/** Why a received advert was dropped; each reason has its own counter in /metrics. */
export type RejectReason = 'oversized' | 'malformed' | 'bad-signature' | 'wrong-host' | 'expired' | 'future' | 'ttl-too-long' | 'bad-placement' | 'over-cap'
export const REJECT_REASONS: readonly RejectReason[] = ['oversized', 'malformed', 'bad-signature', 'wrong-host', 'expired', 'future', 'ttl-too-long', 'bad-placement', 'over-cap']

export type VerifyResult = { ok: true, advert: Advert } | { ok: false, reason: RejectReason, detail: string }

function signedBytes (a: UnsignedAdvert): Uint8Array {
  return new TextEncoder().encode(canonicalJson(a))
}

export async function signAdvert (key: PrivateKey, unsigned: UnsignedAdvert): Promise<Advert> {
  const sig = await key.sign(signedBytes(unsigned))
  return { ...unsigned, sig: Buffer.from(sig).toString('base64url') }
}

export function encodeAdvert (a: Advert): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(a))
}

/** Checks a signature made with the host key of peer `host`. */
export const verifyHostSignature: HostVerifier = async (host, data, sig) => {
  try {
    const publicKey = peerIdFromString(host).publicKey
    return publicKey !== undefined && await publicKey.verify(data, Buffer.from(sig, 'base64url'))
  } catch {
    return false
  }
}

function hasPublicKey (host: string): boolean {
  try {
    return peerIdFromString(host).publicKey !== undefined
  } catch {
    return false
  }
}

/**
 * Checks everything a peer could get wrong or forge: size, schema, that the host named in the
 * advert signed it, that a host advert is about its signer, the advert's time window, and that
 * an instance advertised by a host was placed there by its owner.
 */
export async function verifyAdvert (input: unknown, now = Date.now()): Promise<VerifyResult> {
  let raw: unknown = input
  if (input instanceof Uint8Array) {
    if (input.byteLength > MAX_ADVERT_BYTES) return { ok: false, reason: 'oversized', detail: `${input.byteLength} bytes` }
    try {
      raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(input))
    } catch {
      return { ok: false, reason: 'malformed', detail: 'not JSON' }
    }
  } else if (Buffer.byteLength(JSON.stringify(input) ?? '') > MAX_ADVERT_BYTES) {
    return { ok: false, reason: 'oversized', detail: 'advert too large' }
  }
  const parsed = advertSchema.safeParse(raw)
  if (!parsed.success) return { ok: false, reason: 'malformed', detail: parsed.error.issues[0]?.message ?? 'schema' }
  const advert = parsed.data
  if (advert.kind === 'host' && advert.id !== advert.host) return { ok: false, reason: 'wrong-host', detail: 'host advert about another host' }
  if (advert.expiresAt <= now) return { ok: false, reason: 'expired', detail: `expired ${now - advert.expiresAt} ms ago` }
  if (advert.issuedAt > now + MAX_ADVERT_SKEW_MS) return { ok: false, reason: 'future', detail: 'issued in the future' }
  if (advert.expiresAt - advert.issuedAt > MAX_ADVERT_TTL_MS) return { ok: false, reason: 'ttl-too-long', detail: 'lifetime too long' }
  const { sig, ...unsigned } = advert
  if (!hasPublicKey(advert.host)) return { ok: false, reason: 'wrong-host', detail: 'host is not a peer id that carries its public key' }
  if (!await verifyHostSignature(advert.host, signedBytes(unsigned), sig)) return { ok: false, reason: 'bad-signature', detail: 'signature does not match the host key' }
  if (advert.kind === 'instance') {
    try {
      const placed = await verifyPlacement(advert.body.placement, { id: advert.id, owner: advert.body.owner, template: advert.body.template }, verifyHostSignature)
      if (placed.host !== advert.host) return { ok: false, reason: 'bad-placement', detail: `its owner placed it on host ${placed.host}` }
    } catch (err) {
      return { ok: false, reason: 'bad-placement', detail: (err as Error).message }
    }
  }
  return { ok: true, advert }
}
