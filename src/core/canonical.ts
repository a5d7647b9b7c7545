import { createHash } from 'node:crypto'

/**
 * Deterministic JSON: object keys sorted, no whitespace. Signatures and content ids are computed
 * over this form so that two hosts serialising the same value agree byte for byte.
 */
export function canonicalJson (value: unknown): string {
  return JSON.stringify(sortKeys(value))
}

function sortKeys (value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys)
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {}
    for (const key of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[key]
      if (v !== undefined) out[key] = sortKeys(v)
    }
    return out
  }
  return value
}

export function sha256Hex (data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/** Content id of a JSON value: `sha256:` + hex digest of its canonical form. */
export function contentId (value: unknown): string {
  return `sha256:${sha256Hex(canonicalJson(value))}`
}
