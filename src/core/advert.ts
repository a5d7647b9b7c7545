import { z } from 'zod'
import { OWNER_ID_PATTERN } from './owner.ts'
import { INSTANCE_STATES } from './instance.ts'
import { placementSchema, rootPlacedAt } from './placement.ts'

/**
 * Adverts: signed, expiring records a host publishes about itself, its templates and its
 * instances. These are the schemas every received advert must pass; signing lives in overlay/.
 */
export const ADVERT_KINDS = ['host', 'template', 'instance'] as const
export type AdvertKind = typeof ADVERT_KINDS[number]

/** Adverts larger than this are dropped unread. */
export const MAX_ADVERT_BYTES = 16 * 1024
/** How far in the future an advert's issue time may be (clock skew between hosts). */
export const MAX_ADVERT_SKEW_MS = 30_000
/**
 * Longest lifetime an advert may claim. A host that dies is found by probing within seconds
 * (overlay/liveness.ts), so adverts need not be re-sent often to prove their host alive; this
 * bounds how long one lives where no probe reaches its host. Hosts refresh theirs every third of
 * their TTL, which is at most this.
 */
export const MAX_ADVERT_TTL_MS = 60 * 60_000

const resources = z.strictObject({ cpu: z.number().nonnegative(), memory: z.number().nonnegative() })
const shortText = z.string().max(256)

/** A host's tags: a few short words its operator gives it. */
export const hostTagsSchema = z.record(z.string().regex(/^[a-z][a-z0-9_.-]{0,31}$/), z.string().max(64)).refine(t => Object.keys(t).length <= 16, 'at most 16 tags')

export const hostBodySchema = z.strictObject({
  name: shortText,
  api: z.url().max(256),
  addrs: z.array(z.string().max(256)).max(16),
  drivers: z.array(z.string().max(32)).max(8),
  capacity: resources,
  free: resources,
  instances: z.number().int().nonnegative(),
  version: z.string().max(32),
  /** The keys that may act as this host's operator (drain it, keep its templates and blobs). */
  operators: z.array(z.string().regex(OWNER_ID_PATTERN)).max(16),
  /** What its operator says the host is (`region: eu`), for placements to match. */
  tags: hostTagsSchema.default({}),
  /** The key of the bank this host runs, if it runs one (`xenosd --bank`). */
  bank: z.string().regex(OWNER_ID_PATTERN).optional(),
  /** The host's escrow account: bids for its CPU are paid into it. */
  escrow: z.string().regex(OWNER_ID_PATTERN).optional(),
  /** Its price: credits per second of all bids on it, per CPU it offers. */
  price: z.number().nonnegative().optional(),
}).refine(b => b.free.cpu <= b.capacity.cpu + 1e-9 && b.free.memory <= b.capacity.memory, { message: 'a host cannot have more free than it offers' })

export const templateBodySchema = z.strictObject({
  name: shortText,
  version: shortText,
  driver: z.string().max(32),
  description: z.string().max(1000).optional(),
  tags: z.record(z.string().max(63), z.string().max(256)),
  resources,
  ports: z.array(z.strictObject({ name: z.string().max(31), protocol: z.string().max(8) })).max(32),
})

export const instanceBodySchema = z.strictObject({
  name: shortText,
  template: z.string().max(80),
  templateName: shortText,
  owner: z.string().regex(OWNER_ID_PATTERN),
  state: z.enum(INSTANCE_STATES),
  endpoints: z.array(z.strictObject({ name: z.string().max(31), url: z.string().max(256) })).max(32),
  /** Services the instance's host has seen registered, with their last health check. */
  services: z.array(z.strictObject({ name: z.string().max(31), health: z.enum(['passing', 'failing', 'unknown']) })).max(32),
  tags: z.record(z.string().max(63), z.string().max(256)),
  resources,
  createdAt: z.number().int().nonnegative(),
  /** Why the instance may run on the host that advertises it, signed by its owner (see placement.ts). */
  placement: placementSchema,
})

export type HostBody = z.infer<typeof hostBodySchema>
export type TemplateBody = z.infer<typeof templateBodySchema>
export type InstanceBody = z.infer<typeof instanceBodySchema>

const envelope = {
  v: z.literal(1),
  id: z.string().min(1).max(128),
  host: z.string().min(1).max(128),
  seq: z.number().int().nonnegative(),
  issuedAt: z.number().int().nonnegative(),
  expiresAt: z.number().int().nonnegative(),
  withdrawn: z.literal(true).optional(),
  sig: z.string().max(200),
}

export const advertSchema = z.discriminatedUnion('kind', [
  z.strictObject({ ...envelope, kind: z.literal('host'), body: hostBodySchema }),
  z.strictObject({ ...envelope, kind: z.literal('template'), body: templateBodySchema }),
  z.strictObject({ ...envelope, kind: z.literal('instance'), body: instanceBodySchema }),
])

export type Advert = z.infer<typeof advertSchema>
export type AdvertOf<K extends AdvertKind> = Extract<Advert, { kind: K }>
export type UnsignedAdvert = Advert extends infer A ? A extends Advert ? Omit<A, 'sig'> : never : never

/**
 * Key of what an advert is about, as told by one host: newer adverts replace older ones with the
 * same key. The host is part of it because many hosts advertise holding the same template.
 */
export function advertKey (a: { kind: AdvertKind, host: string, id: string }): string {
  return `${a.kind}/${a.host}/${a.id}`
}

/** True when `a` supersedes `b` (later issue time, then higher sequence number). */
export function isNewer (a: Pick<Advert, 'issuedAt' | 'seq'>, b: Pick<Advert, 'issuedAt' | 'seq'>): boolean {
  return a.issuedAt > b.issuedAt || (a.issuedAt === b.issuedAt && a.seq > b.seq)
}

/**
 * When the instance an advert is about was placed where it is advertised (see placement.ts), 0
 * for other kinds: of two hosts advertising one instance, the later placement stands.
 */
export function placedAt (a: Advert): number {
  if (a.kind !== 'instance') return 0
  const p = a.body.placement
  return p.drains.at(-1)?.at ?? p.moved?.auth.ts ?? rootPlacedAt(p.root)
}

/** Orders adverts about the same thing from different hosts: the later placement, then the later issue. */
export function isMoreRecent (a: Advert, b: Advert): boolean {
  const pa = placedAt(a)
  const pb = placedAt(b)
  return pa > pb || (pa === pb && isNewer(a, b))
}
