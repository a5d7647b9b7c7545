import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, verify, type KeyObject } from 'node:crypto'
import { canonicalJson, sha256Hex } from './canonical.ts'
import { XenosError } from './errors.ts'

/**
 * Owners are ed25519 keys. An owner id is the base64url form of the 32-byte public key.
 * Every request that acts on an instance is signed by its owner; the host that runs the instance
 * checks the signature itself, so a relaying host cannot act for anyone.
 */
export const OWNER_ID_PATTERN = /^[A-Za-z0-9_-]{43}$/

/** How far a request's timestamp may be from the verifier's clock. */
export const REQUEST_MAX_SKEW_MS = 5 * 60_000

export interface OwnerKey {
  id: string
  privateKey: KeyObject
}

export function generateOwnerKey (): OwnerKey {
  const { privateKey } = generateKeyPairSync('ed25519')
  return { id: ownerIdOf(privateKey), privateKey }
}

export function ownerKeyFromPem (pem: string): OwnerKey {
  const privateKey = createPrivateKey(pem)
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new XenosError('INVALID_ARGUMENT', 'the user key is not an ed25519 key')
  return { id: ownerIdOf(privateKey), privateKey }
}

export function ownerKeyToPem (key: OwnerKey): string {
  return key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
}

function ownerIdOf (privateKey: KeyObject): string {
  const jwk = createPublicKey(privateKey).export({ format: 'jwk' })
  if (typeof jwk.x !== 'string') throw new XenosError('INTERNAL', 'ed25519 key without public part')
  return jwk.x
}

/** A request signature: who, when, a nonce against replays, and the signature itself. */
export interface RequestAuth {
  owner: string
  ts: number
  nonce: string
  sig: string
}

/** The action being authorised: what, on which target, with which parameters. */
export interface SignedAction {
  action: string
  target: string
  params: unknown
}

function message (a: SignedAction, owner: string, ts: number, nonce: string): Buffer {
  return Buffer.from(['xenos-request-v1', owner, a.action, a.target, sha256Hex(canonicalJson(a.params ?? null)), String(ts), nonce].join('\n'))
}

/** Signs `data` with an owner key (base64url). */
export function ownerSign (key: OwnerKey, data: Buffer): string {
  return sign(null, data, key.privateKey).toString('base64url')
}

/** Whether `sig` is `owner`'s signature of `data`. */
export function ownerVerifies (owner: string, data: Buffer, sig: string): boolean {
  if (!OWNER_ID_PATTERN.test(owner)) return false
  try {
    const publicKey = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: owner }, format: 'jwk' })
    return verify(null, data, publicKey, Buffer.from(sig, 'base64url'))
  } catch {
    return false
  }
}

export function signAction (key: OwnerKey, a: SignedAction, now = Date.now()): RequestAuth {
  const nonce = randomBytes(12).toString('hex')
  return { owner: key.id, ts: now, nonce, sig: ownerSign(key, message(a, key.id, now, nonce)) }
}

/** Throws UNAUTHENTICATED unless `auth` is a valid, fresh signature of `a` by `auth.owner`. */
export function verifyAction (auth: RequestAuth, a: SignedAction, now = Date.now()): void {
  if (!OWNER_ID_PATTERN.test(auth.owner)) throw new XenosError('UNAUTHENTICATED', 'the request names a malformed owner key')
  if (Math.abs(now - auth.ts) > REQUEST_MAX_SKEW_MS) {
    throw new XenosError('UNAUTHENTICATED', 'the request timestamp is too far from this host\'s clock: check the clocks of client and host')
  }
  if (!ownerVerifies(auth.owner, message(a, auth.owner, auth.ts, auth.nonce), auth.sig)) throw new XenosError('UNAUTHENTICATED', 'the request signature does not verify for this action')
}

/** `X-Xenos-Auth` header form: `v1 owner=… ts=… nonce=… sig=…`. */
export function encodeAuthHeader (auth: RequestAuth): string {
  return `v1 owner=${auth.owner} ts=${auth.ts} nonce=${auth.nonce} sig=${auth.sig}`
}

export function decodeAuthHeader (header: string): RequestAuth {
  const parts = header.trim().split(/\s+/)
  if (parts[0] !== 'v1') throw new XenosError('UNAUTHENTICATED', 'unsupported X-Xenos-Auth version: expected "v1 owner=… ts=… nonce=… sig=…"')
  const fields = new Map(parts.slice(1).map(p => {
    const i = p.indexOf('=')
    return [p.slice(0, i), p.slice(i + 1)] as const
  }))
  const owner = fields.get('owner') ?? ''
  const ts = Number(fields.get('ts'))
  const nonce = fields.get('nonce') ?? ''
  const sig = fields.get('sig') ?? ''
  if (!OWNER_ID_PATTERN.test(owner) || !Number.isSafeInteger(ts) || !/^[0-9a-f]{8,64}$/.test(nonce) || !/^[A-Za-z0-9_-]{20,200}$/.test(sig)) {
    throw new XenosError('UNAUTHENTICATED', 'malformed X-Xenos-Auth header')
  }
  return { owner, ts, nonce, sig }
}
