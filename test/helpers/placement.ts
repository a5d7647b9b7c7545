import { randomBytes } from 'node:crypto'
import type { PrivateKey } from '@libp2p/interface'
import {
  deploySpecDigest, drainAction, handoffBytes, instanceIdOf, instanceIdOfPlace, migrateAction, placeBytes, signAction, signDeployToken, signDeploymentGrant,
  type DrainLink, type GrantPlace, type OwnerKey, type Placement, type UnsignedAdvert,
} from '../../src/core/index.ts'

export const TEMPLATE = `sha256:${'e'.repeat(64)}`

/** An owner's placement of one instance on `host` (a deploy token for it), and the instance's id. */
export function deployedOn (owner: OwnerKey, host: string, template = TEMPLATE, issuedAt = Date.now()): { id: string, placement: Placement } {
  const token = signDeployToken(owner, { host, template, key: randomBytes(16).toString('hex'), count: 1, spec: deploySpecDigest({ name: null }) }, issuedAt)
  return { id: instanceIdOf(token, 0), placement: { root: { token, index: 0 }, drains: [] } }
}

/** A place host `by` (key `byKey`) gave instance 0 of component `component` on `host`, under a deployment of `owner` whose supervisors are `supervisors`. */
export async function placedUnder (owner: OwnerKey, supervisors: string[], byKey: PrivateKey, by: string, host: string, component = 'web', at = Date.now()): Promise<{ id: string, placement: Placement }> {
  const grant = signDeploymentGrant(owner, { name: 'site', description: 'd'.repeat(64), supervisors })
  const unsigned: Omit<GrantPlace, 'sig'> = { grant, component, index: 0, generation: 0, template: TEMPLATE, host, by, at }
  const sig = Buffer.from(await byKey.sign(placeBytes(unsigned))).toString('base64url')
  return { id: instanceIdOfPlace(unsigned), placement: { root: { ...unsigned, sig }, drains: [] } }
}

/** The owner moves instance `id` from `from` to `to`. */
export function movedTo (owner: OwnerKey, p: Placement, id: string, from: string, to: string, at = Date.now()): Placement {
  return { root: p.root, moved: { auth: signAction(owner, migrateAction(id, from, to, false), at), to, copyDisk: false }, drains: [] }
}

/** Host `from` (key `fromKey`) moves instance `id` to `to` under its operator's signed drain. */
export async function drainedTo (operator: OwnerKey, fromKey: PrivateKey, p: Placement, id: string, from: string, to: string, at = Date.now()): Promise<Placement> {
  const unsigned: Omit<DrainLink, 'sig'> = { from, to, operator: operator.id, drain: signAction(operator, drainAction(from, null)), targets: null, at }
  const sig = Buffer.from(await fromKey.sign(handoffBytes(id, unsigned))).toString('base64url')
  return { ...p, drains: [...p.drains, { ...unsigned, sig }] }
}

/** An unsigned instance advert from `host` about instance `id` of `owner`, with placement `placement`. */
export function instanceAdvert (host: string, id: string, owner: string, placement: Placement, over: Partial<UnsignedAdvert> = {}, now = Date.now()): UnsignedAdvert {
  return {
    v: 1,
    kind: 'instance',
    id,
    host,
    seq: 0,
    issuedAt: now,
    expiresAt: now + 30_000,
    body: { name: 'web', template: TEMPLATE, templateName: 'web:1', owner, state: 'running', endpoints: [], services: [], tags: {}, resources: { cpu: 0.1, memory: 64 }, createdAt: now, placement },
    ...over,
  } as UnsignedAdvert
}
