import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, verify, type KeyObject } from 'node:crypto'
import { canonicalJson, sha256Hex } from './canonical.ts'
import { XenosError } from './errors.ts'

/**
 * Owners are ed25519 keys. An owner id is the base64url form of the 32-byte public key.
 * Every request that acts on something is signed by a key (its owner's, or the operator's of
 * the host); the signature names the host that must carry it out, so a host that relays the
 * request, or captures it, can neither act for anyone nor replay it to another host.
 */
export const OWNER_ID_PATTERN = /^[A-Za-z0-9_-]{43}$/
/** A host's libp2p peer id (base58btc). */
export const PEER_ID_PATTERN = /^[1-9A-HJ-NP-Za-km-z]{40,100}$/
const NONCE_PATTERN = /^[0-9a-f]{8,64}$/
const SIG_PATTERN = /^[A-Za-z0-9_-]{20,200}$/

/** How far a request's timestamp may be from the verifier's clock. */
export const REQUEST_MAX_SKEW_MS = 60_000

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

/** A request signature: who, for which host, when, a nonce against replays, and the signature itself. */
export interface RequestAuth {
  owner: string
  /**
   * The host the signature is for: the one that carries out the action, or, for a read of data,
   * the host that reads it on the signer's behalf (and presents the signature to the holder).
   */
  host: string
  ts: number
  nonce: string
  sig: string
}

/** The action being authorised: what, on which target, with which parameters, on which host. */
export interface SignedAction {
  action: string
  target: string
  params: unknown
  host: string
}

function message (a: SignedAction, owner: string, ts: number, nonce: string): Buffer {
  return Buffer.from(['xenos-request-v2', owner, a.host, a.action, a.target, sha256Hex(canonicalJson(a.params ?? null)), String(ts), nonce].join('\n'))
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
  return { owner: key.id, host: a.host, ts: now, nonce, sig: ownerSign(key, message(a, key.id, now, nonce)) }
}

/**
 * Whether `auth` is its owner's signature of `a`, whenever it was made: for signatures kept as
 * proof of what an owner once allowed (a placement), which must not expire.
 */
export function actionSignedBy (auth: RequestAuth, a: SignedAction): boolean {
  return auth.host === a.host && ownerVerifies(auth.owner, message(a, auth.owner, auth.ts, auth.nonce), auth.sig)
}

/** Throws UNAUTHENTICATED unless `auth` is a valid, fresh signature of `a` (for host `a.host`) by `auth.owner`. */
export function verifyAction (auth: RequestAuth, a: SignedAction, now = Date.now()): void {
  if (!OWNER_ID_PATTERN.test(auth.owner)) throw new XenosError('UNAUTHENTICATED', 'the request names a malformed owner key')
  if (auth.host !== a.host) {
    throw new XenosError('UNAUTHENTICATED', `the request is signed for host ${auth.host}, not for host ${a.host}, which received it: sign it again for this host`)
  }
  if (Math.abs(now - auth.ts) > REQUEST_MAX_SKEW_MS) {
    throw new XenosError('UNAUTHENTICATED', 'the request timestamp is too far from this host\'s clock: check the clocks of client and host')
  }
  if (!ownerVerifies(auth.owner, message(a, auth.owner, auth.ts, auth.nonce), auth.sig)) throw new XenosError('UNAUTHENTICATED', `the request signature does not verify for action ${a.action} on ${a.target}`)
}

/** `X-Xenos-Auth` header form: `v2 owner=… host=… ts=… nonce=… sig=…`. */
export function encodeAuthHeader (auth: RequestAuth): string {
  return `v2 owner=${auth.owner} host=${auth.host} ts=${auth.ts} nonce=${auth.nonce} sig=${auth.sig}`
}

export function decodeAuthHeader (header: string): RequestAuth {
  const parts = header.trim().split(/\s+/)
  if (parts[0] !== 'v2') throw new XenosError('UNAUTHENTICATED', 'unsupported X-Xenos-Auth version: expected "v2 owner=… host=… ts=… nonce=… sig=…" (sign with a current xenos CLI)')
  const fields = new Map(parts.slice(1).map(p => {
    const i = p.indexOf('=')
    return [p.slice(0, i), p.slice(i + 1)] as const
  }))
  const auth = { owner: fields.get('owner') ?? '', host: fields.get('host') ?? '', ts: Number(fields.get('ts')), nonce: fields.get('nonce') ?? '', sig: fields.get('sig') ?? '' }
  if (!isRequestAuth(auth)) throw new XenosError('UNAUTHENTICATED', 'malformed X-Xenos-Auth header')
  return auth
}

/** Whether every field of `auth` has its shape (the signature itself is not checked). */
export function isRequestAuth (auth: RequestAuth): boolean {
  return OWNER_ID_PATTERN.test(auth.owner) && PEER_ID_PATTERN.test(auth.host) && Number.isSafeInteger(auth.ts) && NONCE_PATTERN.test(auth.nonce) && SIG_PATTERN.test(auth.sig)
}
