// Signatures of requests, made as the CLI makes them (docs/security.md): the host checks them the same way.
import { base64url } from './keys.js'

function sortKeys (value) {
  if (Array.isArray(value)) return value.map(sortKeys)
  if (value !== null && typeof value === 'object') {
    const out = {}
    for (const k of Object.keys(value).sort()) if (value[k] !== undefined) out[k] = sortKeys(value[k])
    return out
  }
  return value
}

/** JSON with object keys sorted and no whitespace: what a signature's parameters digest is taken over. */
export function canonicalJson (value) {
  return JSON.stringify(sortKeys(value))
}

const hex = bytes => [...bytes].map(b => b.toString(16).padStart(2, '0')).join('')

export async function sha256Hex (text) {
  return hex(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text))))
}

/** The X-Xenos-Auth header of `key`'s signature of `action` on `target` with `params`, for host `host`. */
export async function authHeader (key, { action, target, params, host }) {
  const ts = Date.now()
  const once = hex(crypto.getRandomValues(new Uint8Array(12)))
  const message = ['xenos-request-v2', key.id, host, action, target, await sha256Hex(canonicalJson(params ?? null)), String(ts), once].join('\n')
  const sig = base64url(await crypto.subtle.sign({ name: 'Ed25519' }, key.privateKey, new TextEncoder().encode(message)))
  return `v2 owner=${key.id} host=${host} ts=${ts} nonce=${once} sig=${sig}`
}

/** An order the bank carries out (`kind` transfer, …), signed as `xenos-KIND-v1` over its canonical JSON. */
export async function signOrder (key, kind, unsigned) {
  const bytes = new TextEncoder().encode(`xenos-${kind}-v1\n${canonicalJson(unsigned)}`)
  return { ...unsigned, sig: base64url(await crypto.subtle.sign({ name: 'Ed25519' }, key.privateKey, bytes)) }
}

/** 16 random bytes in hex: an order's nonce. */
export function nonce () {
  return hex(crypto.getRandomValues(new Uint8Array(16)))
}

/**
 * The signed parts of a deploy of `template` (its id) with `spec`, `count` instances on `host`:
 * what POST /v1/instances takes. The deploy's key is derived from `requestId`, as the CLI
 * derives it, so asking again with the same one makes nothing twice.
 */
export async function deployParts (key, { template, spec, host, count, requestId }) {
  const deployKey = (await sha256Hex(`xenos-deploy-key\n${key.id}\n${requestId}`)).slice(0, 32)
  const token = await signOrder(key, 'deploy', { v: 1, owner: key.id, host, template, key: deployKey, count, spec: await sha256Hex(canonicalJson(spec)), issuedAt: Date.now() })
  return [{ token }]
}
