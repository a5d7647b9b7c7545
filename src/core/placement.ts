import { createHash } from 'node:crypto'
import { z } from 'zod'
import { canonicalJson, sha256Hex } from './canonical.ts'
import { XenosError } from './errors.ts'
import { actionSignedBy, OWNER_ID_PATTERN, ownerSign, ownerVerifies, PEER_ID_PATTERN, type OwnerKey } from './owner.ts'

/**
 * Placements: the signed proof of where an instance may run. A host advertises an instance, and
 * other hosts send its owner's requests there, only with a proof that names that host:
 *
 * - the owner's **deploy token** for the host, which also fixes the instance's id (derived from
 *   the owner's key and the token), so nobody else can claim an instance of that id; or the
 *   owner's signed **deployment grant** (a description, and the hosts that may act for it) with
 *   the place one of those hosts gave the instance, signed by it;
 * - then, if it moved, the owner's signed **migrate** request naming its destination;
 * - then any **drains** since: each a move the host it left made under its operator's signed
 *   drain, signed by that host's key.
 *
 * Of two hosts that advertise the same instance, the one with the later placement wins.
 */
export const MAX_DEPLOY_COUNT = 100
/** Moves by drains after the owner's last own placement; a further drain leaves the instance where it is. */
export const MAX_DRAIN_LINKS = 8

const peerId = z.string().regex(PEER_ID_PATTERN, 'not a peer id')
const ownerId = z.string().regex(OWNER_ID_PATTERN, 'not an owner id')
const sha256 = z.string().regex(/^[0-9a-f]{64}$/)

export const requestAuthSchema = z.strictObject({
  owner: ownerId,
  host: peerId,
  ts: z.number().int(),
  nonce: z.string().regex(/^[0-9a-f]{8,64}$/),
  sig: z.string().regex(/^[A-Za-z0-9_-]{20,200}$/),
})

/** An owner's permission for one host to create `count` instances of a template with these parameters. */
export const deployTokenSchema = z.strictObject({
  v: z.literal(1),
  owner: ownerId,
  host: peerId,
  template: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  /** Chosen by the client for the whole deploy: a retry with the same key makes the same instances, not new ones. */
  key: z.string().regex(/^[0-9a-f]{32}$/, 'a deploy key is 32 hex digits'),
  count: z.number().int().min(1).max(MAX_DEPLOY_COUNT),
  /**
   * Where this host's instances stand among all the deploy's, over several hosts: named
   * `NAME-(first + index + 1)` when the deploy makes more than one. @default this host's alone
   */
  numbering: z.strictObject({ first: z.number().int().min(0).max(MAX_DEPLOY_COUNT * 100), total: z.number().int().min(1).max(MAX_DEPLOY_COUNT * 100) }).optional(),
  /** SHA-256 of the deploy's parameters (see `deploySpecDigest`). */
  spec: sha256,
  issuedAt: z.number().int().nonnegative(),
  sig: z.string().regex(/^[A-Za-z0-9_-]{20,200}$/),
})
export type DeployToken = z.infer<typeof deployTokenSchema>

/** A move the host `from` made under its operator's signed drain (`drain`, naming `targets` or any host). */
export const drainLinkSchema = z.strictObject({
  from: peerId,
  to: peerId,
  operator: ownerId,
  drain: requestAuthSchema,
  targets: z.array(peerId).max(256).nullable(),
  at: z.number().int().nonnegative(),
  /** `from`'s host signature over the rest (see `handoffBytes`). */
  sig: z.string().max(200),
})
export type DrainLink = z.infer<typeof drainLinkSchema>

/** An owner's signed description of a whole deployment (see src/deploy), and the hosts that may place its components for the owner. */
export const deploymentGrantSchema = z.strictObject({
  v: z.literal(1),
  owner: ownerId,
  name: z.string().min(1).max(63),
  /** SHA-256 of the description's text. */
  description: sha256,
  supervisors: z.array(peerId).min(1).max(5),
  issuedAt: z.number().int().nonnegative(),
  sig: z.string().regex(/^[A-Za-z0-9_-]{20,200}$/),
})
export type DeploymentGrant = z.infer<typeof deploymentGrantSchema>

/** Where a supervisor of a grant placed instance `index` of a component (its `generation`-th, counting replacements). */
export const grantPlaceSchema = z.strictObject({
  grant: deploymentGrantSchema,
  component: z.string().min(1).max(256),
  index: z.number().int().min(0).max(MAX_DEPLOY_COUNT - 1),
  generation: z.number().int().min(0).max(1_000_000),
  template: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  host: peerId,
  /** The supervisor that placed it (one of the grant's), and when. */
  by: peerId,
  at: z.number().int().nonnegative(),
  /** `by`'s host signature over the rest (see `placeBytes`). */
  sig: z.string().max(200),
})
export type GrantPlace = z.infer<typeof grantPlaceSchema>

export const placementSchema = z.strictObject({
  root: z.union([z.strictObject({ token: deployTokenSchema, index: z.number().int().min(0).max(MAX_DEPLOY_COUNT - 1) }), grantPlaceSchema]),
  /** The owner's last move of the instance. */
  moved: z.strictObject({ auth: requestAuthSchema, to: peerId, copyDisk: z.boolean() }).optional(),
  drains: z.array(drainLinkSchema).max(MAX_DRAIN_LINKS),
})
export type Placement = z.infer<typeof placementSchema>

/** Checks a host's signature (an ed25519 libp2p key, known by its peer id). */
export type HostVerifier = (host: string, data: Uint8Array, sig: string) => Promise<boolean>

function tokenBytes (t: Omit<DeployToken, 'sig'>): Buffer {
  return Buffer.from(`xenos-deploy-v1\n${canonicalJson(t)}`)
}

/** What the host a drain moves an instance off signs. */
export function handoffBytes (instance: string, link: Omit<DrainLink, 'sig'>): Uint8Array {
  return Buffer.from(`xenos-handoff-v1\n${canonicalJson({ instance, ...link })}`)
}

function grantBytes (g: Omit<DeploymentGrant, 'sig'>): Buffer {
  return Buffer.from(`xenos-deployment-v1\n${canonicalJson(g)}`)
}

/** What the supervisor that places an instance under a grant signs. */
export function placeBytes (p: Omit<GrantPlace, 'sig'>): Uint8Array {
  return Buffer.from(`xenos-place-v1\n${canonicalJson(p)}`)
}

export function signDeploymentGrant (key: OwnerKey, g: Pick<DeploymentGrant, 'name' | 'description' | 'supervisors'>, now = Date.now()): DeploymentGrant {
  const unsigned = { v: 1 as const, owner: key.id, ...g, issuedAt: now }
  return { ...unsigned, sig: ownerSign(key, grantBytes(unsigned)) }
}

export function deploymentGrantValid (g: DeploymentGrant): boolean {
  const { sig, ...unsigned } = g
  return ownerVerifies(g.owner, grantBytes(unsigned), sig)
}

/** The id of the instance a grant's supervisor places at (component, index, generation): the grant's owner's, and nobody else's. */
export function instanceIdOfPlace (p: Pick<GrantPlace, 'grant' | 'component' | 'index' | 'generation'>): string {
  return `i-${createHash('sha256').update(`xenos-instance-v2\n${p.grant.owner}\n${p.grant.sig}\n${p.component}\n${p.index}\n${p.generation}`).digest('hex').slice(0, 16)}`
}

/** When the root of a placement placed the instance (on its signer's clock). */
export function rootPlacedAt (root: Placement['root']): number {
  return 'token' in root ? root.token.issuedAt : root.at
}

/** The digest of a deploy's parameters that its tokens carry. */
export function deploySpecDigest (spec: unknown): string {
  return sha256Hex(canonicalJson(spec))
}

export function signDeployToken (key: OwnerKey, t: Omit<DeployToken, 'v' | 'owner' | 'sig' | 'issuedAt'>, now = Date.now()): DeployToken {
  const unsigned = { v: 1 as const, owner: key.id, ...t, issuedAt: now }
  return { ...unsigned, sig: ownerSign(key, tokenBytes(unsigned)) }
}

export function deployTokenValid (t: DeployToken): boolean {
  const { sig, ...unsigned } = t
  return ownerVerifies(t.owner, tokenBytes(unsigned), sig)
}

/** The id of instance `index` of a deploy token: its owner's, and nobody else's to claim. */
/** The name instance `index` of a deploy token takes, when the deploy names its instances `base`. */
export function instanceNameOf (t: Pick<DeployToken, 'count' | 'numbering'>, base: string, index: number): string {
  const { first, total } = t.numbering ?? { first: 0, total: t.count }
  return total > 1 ? `${base}-${first + index + 1}` : base
}

export function instanceIdOf (t: Pick<DeployToken, 'owner' | 'key' | 'host'>, index: number): string {
  return `i-${createHash('sha256').update(`xenos-instance-v1\n${t.owner}\n${t.key}\n${t.host}\n${index}`).digest('hex').slice(0, 16)}`
}

export function instanceIdsOf (t: Pick<DeployToken, 'owner' | 'key' | 'host' | 'count'>): string[] {
  return Array.from({ length: t.count }, (_, i) => instanceIdOf(t, i))
}

/** What an owner signs to move an instance. */
export function migrateAction (id: string, from: string, to: string, copyDisk: boolean): { action: string, target: string, params: { to: string, copyDisk: boolean }, host: string } {
  return { action: 'migrate', target: id, params: { to, copyDisk }, host: from }
}

/** What an operator signs to drain its host. */
export function drainAction (host: string, targets: string[] | null): { action: string, target: string, params: { to: string[] | null }, host: string } {
  return { action: 'drain', target: host, params: { to: targets }, host }
}

/** Where an instance's placement says it runs, and since when (on its signer's clock). */
export interface PlacedAt {
  host: string
  at: number
}

/**
 * Checks `p` as the placement of instance `id` of `template` owned by `owner`; resolves with
 * where and since when it places the instance, or throws saying which link fails.
 */
export async function verifyPlacement (p: Placement, instance: { id: string, owner: string, template: string }, verifyHost: HostVerifier): Promise<PlacedAt> {
  const bad = (why: string): XenosError => new XenosError('UNAUTHENTICATED', `the placement of instance ${instance.id} ${why}`)
  let placed: PlacedAt
  if ('token' in p.root) {
    const { token, index } = p.root
    if (token.owner !== instance.owner) throw bad(`is signed by ${token.owner}, not by its owner ${instance.owner}`)
    if (token.template !== instance.template) throw bad(`is for template ${token.template}, not ${instance.template}`)
    if (index >= token.count || instanceIdOf(token, index) !== instance.id) throw bad('does not derive its id')
    if (!deployTokenValid(token)) throw bad('has a deploy token its owner did not sign')
    placed = { host: token.host, at: token.issuedAt }
  } else {
    const { sig, ...unsigned } = p.root
    const { grant } = unsigned
    if (grant.owner !== instance.owner) throw bad(`is under a deployment of ${grant.owner}, not of its owner ${instance.owner}`)
    if (unsigned.template !== instance.template) throw bad(`is for template ${unsigned.template}, not ${instance.template}`)
    if (instanceIdOfPlace(unsigned) !== instance.id) throw bad('does not derive its id')
    if (!deploymentGrantValid(grant)) throw bad('is under a deployment its owner did not sign')
    if (!grant.supervisors.includes(unsigned.by)) throw bad(`was placed by host ${unsigned.by}, which deployment ${grant.name} does not let act for its owner`)
    if (!await verifyHost(unsigned.by, placeBytes(unsigned), sig)) throw bad(`names a place host ${unsigned.by} did not sign`)
    placed = { host: unsigned.host, at: unsigned.at }
  }
  if (p.moved !== undefined) {
    const { auth, to, copyDisk } = p.moved
    if (auth.owner !== instance.owner || !actionSignedBy(auth, migrateAction(instance.id, auth.host, to, copyDisk))) throw bad('names a move its owner did not sign')
    placed = { host: to, at: auth.ts }
  }
  for (const link of p.drains) {
    const { sig, ...unsigned } = link
    if (link.from !== placed.host) throw bad(`names a drain of host ${link.from}, where the instance was not`)
    if (link.targets !== null && !link.targets.includes(link.to)) throw bad(`names a drain of host ${link.from} to hosts other than ${link.to}`)
    if (link.drain.owner !== link.operator || !actionSignedBy(link.drain, drainAction(link.from, link.targets))) throw bad(`names a drain of host ${link.from} its operator did not sign`)
    if (!await verifyHost(link.from, handoffBytes(instance.id, unsigned), sig)) throw bad(`names a move host ${link.from} did not sign`)
    placed = { host: link.to, at: link.at }
  }
  return placed
}
