import { parse as parseYaml } from 'yaml'
import { contentId, templateManifestSchema, XenosError, type TemplateManifest } from '../core/index.ts'

/** Largest manifest accepted, as text. */
export const MAX_MANIFEST_BYTES = 64 * 1024

/**
 * Reads a manifest written as YAML or JSON (JSON is YAML) and validates it. Errors name the field
 * and the problem, e.g. `ports.0.name: port names are lower-case letters…`.
 */
export function parseManifest (text: string, source = 'manifest'): TemplateManifest {
  if (Buffer.byteLength(text) > MAX_MANIFEST_BYTES) throw new XenosError('BAD_MANIFEST', `${source} is larger than ${MAX_MANIFEST_BYTES} bytes`)
  let raw: unknown
  try {
    raw = parseYaml(text, { maxAliasCount: 10 })
  } catch (err) {
    throw new XenosError('BAD_MANIFEST', `${source} is not valid YAML or JSON: ${(err as Error).message.split('\n')[0]}`)
  }
  return validateManifest(raw, source)
}

export function validateManifest (raw: unknown, source = 'manifest'): TemplateManifest {
  const parsed = templateManifestSchema.safeParse(raw)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    const where = issue?.path.length === 0 ? '' : `${issue?.path.join('.')}: `
    throw new XenosError('BAD_MANIFEST', `${source}: ${where}${issue?.message ?? 'invalid'}`)
  }
  return parsed.data
}

/** A template's id: the content id of its validated manifest, so equal templates share one id. */
export function templateId (manifest: TemplateManifest): string {
  return contentId(manifest)
}
