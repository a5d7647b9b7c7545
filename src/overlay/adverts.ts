import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import {
  advertSchema, canonicalJson, MAX_ADVERT_BYTES, MAX_ADVERT_SKEW_MS, MAX_ADVERT_TTL_MS,
  type Advert, type UnsignedAdvert,
} from '../core/index.ts'

/** Why a received advert was dropped; each reason has its own counter in /metrics. */
export type RejectReason = 'oversized' | 'malformed' | 'bad-signature' | 'wrong-host' | 'expired' | 'future' | 'ttl-too-long'

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

/**
 * Checks everything a peer could get wrong or forge: size, schema, that the host named in the
 * advert signed it, that a host advert is about its signer, and the advert's time window.
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
  try {
    const publicKey = peerIdFromString(advert.host).publicKey
    if (publicKey === undefined) return { ok: false, reason: 'wrong-host', detail: 'host id carries no public key' }
    const valid = await publicKey.verify(signedBytes(unsigned), Buffer.from(sig, 'base64url'))
    if (!valid) return { ok: false, reason: 'bad-signature', detail: 'signature does not match the host key' }
  } catch {
    return { ok: false, reason: 'wrong-host', detail: 'host is not a valid peer id' }
  }
  return { ok: true, advert }
}
