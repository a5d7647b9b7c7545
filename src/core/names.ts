import { z } from 'zod'
import { canonicalJson } from './canonical.ts'
import { XenosError } from './errors.ts'
import { OWNER_ID_PATTERN, ownerSign, ownerVerifies, type OwnerKey } from './owner.ts'
import { nameSchema, versionSchema } from './template.ts'

/**
 * Template names: `template://OWNER/NAME/TAG` points at a template id, like a git tag. OWNER is the
 * owner id (its public key), so only the owner can sign a record for it, and every host checks
 * the signature. A `version` tag never moves once published; an `alias` (such as `current`) moves
 * when its owner signs a record with a higher sequence number.
 */
export const TEMPLATE_URI_PREFIX = 'template://'
/** `me` stands for the user's own owner id on the command line. */
const URI_PATTERN = /^template:\/\/([A-Za-z0-9_-]{43}|me)\/([^/]+)\/([^/]+)$/

export interface TemplateName {
  owner: string
  name: string
  tag: string
}

export function isTemplateUri (ref: string): boolean {
  return ref.startsWith(TEMPLATE_URI_PREFIX)
}

/** Parses `template://OWNER/NAME/TAG`; `me` as OWNER becomes `self` when given. */
export function parseTemplateUri (uri: string, self?: string): TemplateName {
  const m = URI_PATTERN.exec(uri)
  const bad = (why: string): XenosError => new XenosError('INVALID_ARGUMENT', `"${uri}" is not a template name: ${why} (template://OWNER/NAME/TAG, OWNER an owner id or "me")`)
  if (m === null) throw bad('wrong shape')
  const [, owner = '', name = '', tag = ''] = m
  if (!nameSchema.safeParse(name).success) throw bad(`bad name "${name}"`)
  if (!versionSchema.safeParse(tag).success) throw bad(`bad tag "${tag}"`)
  if (owner === 'me') {
    if (self === undefined) throw bad('"me" needs a user key')
    return { owner: self, name, tag }
  }
  return { owner, name, tag }
}

export function formatTemplateUri (n: TemplateName): string {
  return `${TEMPLATE_URI_PREFIX}${n.owner}/${n.name}/${n.tag}`
}

export const nameRecordSchema = z.strictObject({
  v: z.literal(1),
  owner: z.string().regex(OWNER_ID_PATTERN),
  name: nameSchema,
  tag: versionSchema,
  kind: z.enum(['version', 'alias']),
  template: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  /** Orders an owner's records for one name: the highest stands. */
  seq: z.number().int().nonnegative(),
  sig: z.string().regex(/^[A-Za-z0-9_-]{20,200}$/),
})

export type NameRecord = z.infer<typeof nameRecordSchema>

function signedPart (r: Omit<NameRecord, 'sig'>): Buffer {
  return Buffer.from(`xenos-name-v1\n${canonicalJson(r)}`)
}

/** Signs that `name` now points at `template`; `seq` defaults to the clock, which only moves on. */
export function signNameRecord (key: OwnerKey, n: Omit<TemplateName, 'owner'> & { kind: NameRecord['kind'], template: string, seq?: number }): NameRecord {
  const unsigned = { v: 1 as const, owner: key.id, name: n.name, tag: n.tag, kind: n.kind, template: n.template, seq: n.seq ?? Date.now() }
  return { ...unsigned, sig: ownerSign(key, signedPart(unsigned)) }
}

/** Checks a record from anyone: its shape, and that its owner signed it. */
export function verifyNameRecord (raw: unknown): NameRecord {
  const parsed = nameRecordSchema.safeParse(raw)
  if (!parsed.success) throw new XenosError('INVALID_ARGUMENT', `malformed name record: ${parsed.error.issues[0]?.message ?? ''}`)
  const { sig, ...unsigned } = parsed.data
  if (!ownerVerifies(unsigned.owner, signedPart(unsigned), sig)) throw new XenosError('UNAUTHENTICATED', `the record for ${formatTemplateUri(parsed.data)} is not signed by its owner`)
  return parsed.data
}

/**
 * Whether `incoming` replaces `current` (both valid, for the same owner, name and tag): a newer
 * alias moves; a version only refreshes with the same template; anything else conflicts.
 */
export function supersedes (incoming: NameRecord, current: NameRecord | undefined): 'replace' | 'keep' | 'conflict' {
  if (current === undefined) return 'replace'
  if (incoming.kind !== current.kind) return 'conflict'
  if (incoming.kind === 'version' && incoming.template !== current.template) return 'conflict'
  return incoming.seq > current.seq ? 'replace' : 'keep'
}
