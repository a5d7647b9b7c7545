import { z } from 'zod'
import { allowanceSchema, bidParamsSchema } from './market.ts'
import { deployTokenSchema, requestAuthSchema } from './placement.ts'
import { nameSchema } from './template.ts'
import { migrationResultSchema } from './migration.ts'
import { instanceIdSchema, instanceViewSchema, peerIdSchema, snapshotIdSchema } from './views.ts'

/** A service an instance reaches by name: an instance id, or a name (any running instance of it), and which endpoint (its first TCP one by default). */
export const linkSchema = z.strictObject({
  name: z.string().regex(/^[a-z][a-z0-9_]{0,30}$/, 'a link name is lower-case letters, digits and "_", starting with a letter'),
  target: z.string().min(1).max(256),
  endpoint: z.string().min(1).max(31).optional(),
})

/** What an instance's environment may take in all (as KEY=VALUE lines). */
export const MAX_ENV_BYTES = 768
const utf8 = new TextEncoder()

/**
 * Environment variables a deploy gives its instances, over their template's. A value may name
 * what the task's host sets up for it: `${XENOS_LINK_NAME}` (a link's address), `${XENOS_INSTANCE_ID}`.
 * A VM's travel on its kernel's command line: they are kept small.
 */
export const instanceEnvSchema = z.record(
  z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/, 'an environment variable is letters, digits and "_", not starting with a digit'),
  z.string().max(512).regex(/^[^\n\r\0]*$/, 'an environment value is one line'),
).refine(e => Object.keys(e).length <= 16, 'at most 16 environment variables')
  .refine(e => Object.entries(e).reduce((n, [k, v]) => n + utf8.encode(`${k}=${v}\n`).length, 0) <= MAX_ENV_BYTES, `the environment takes at most ${MAX_ENV_BYTES} bytes`)
export type InstanceEnv = z.infer<typeof instanceEnvSchema>

/** What every host of a deploy is asked to do; its owner signs its digest in each host's token. */
export const deploySpecSchema = z.strictObject({
  name: nameSchema.nullable(),
  /** Start from this snapshot (held by the deploying host) instead of booting. */
  snapshot: snapshotIdSchema.optional(),
  /**
   * Files staged into each instance, read-only at /in: data:// names; with `files`, the name is
   * a directory and these are the files under it to stage.
   */
  inputs: z.array(z.strictObject({
    uri: z.string().min(1).max(2048),
    files: z.array(z.string().min(1).max(1024)).min(1).max(10_000).optional(),
  })).min(1).max(64).optional(),
  /** Gives each instance an empty disk of this many bytes at /out, whose files `collect` stores in the repository once it ends. */
  outputBytes: z.number().int().min(2 ** 20).max(2 ** 40).optional(),
  /** Runs the one instance as a task: once it ends its host stores its outputs under `outputs` and, unless `keep`, destroys it. */
  task: z.strictObject({ outputs: z.string().min(1).max(1024), keep: z.boolean() }).optional(),
  /** Services of the owner's each instance reaches at an address its host sets up for it (`XENOS_LINK_<NAME>`), wherever they run. */
  links: z.array(linkSchema).min(1).max(8).refine(l => new Set(l.map(x => x.name)).size === l.length, 'a link name is given twice').optional(),
  env: instanceEnvSchema.optional(),
})
export type DeploySpec = z.infer<typeof deploySpecSchema>

/**
 * One host's part of a deploy: the owner's token for it, the owner's `data.get` signature on
 * each input for that host, and with a bid, each instance's: a receipt of a payment into the
 * host's escrow and its time, signed `bid` on the instance's id for that host.
 */
export const deployPartSchema = z.strictObject({
  token: deployTokenSchema,
  inputs: z.array(requestAuthSchema).min(1).max(64).optional(),
  /** A new bid for each instance: signed by its owner, or by the agent an allowance of the owner's names (which comes with it). */
  bids: z.array(z.strictObject({ instance: instanceIdSchema, params: bidParamsSchema, auth: requestAuthSchema, allowance: allowanceSchema.optional() })).min(1).max(100).optional(),
})
export type DeployPart = z.infer<typeof deployPartSchema>

/** Where the hosts with most room would take `count` instances of a template: what a client then signs tokens for. */
export const placementPlanSchema = z.strictObject({
  hosts: z.array(z.strictObject({ host: peerIdSchema, count: z.number().int().min(1).max(100) })).min(1).max(100),
})
export type PlacementPlan = z.infer<typeof placementPlanSchema>

const byteCount = z.number().int().nonnegative()
const durationSchema = z.number().nonnegative()

/** Where one host's part of a deploy is: in the order they happen, then how it ended. */
export const ROLLOUT_PHASES = ['waiting', 'fetching', 'staging', 'creating', 'booting', 'checking', 'done', 'failed'] as const
export type RolloutPhase = typeof ROLLOUT_PHASES[number]

/** How much of a template's missing files a host holds while it fetches them. */
export const fetchProgressSchema = z.strictObject({ held: byteCount, size: byteCount })
export type FetchProgress = z.infer<typeof fetchProgressSchema>

const errorSchema = z.strictObject({ code: z.string().max(64), message: z.string().max(16_384) })

/** One host's part of a deploy: where it is, its instances and how long each phase took there (ms). */
export const hostRolloutSchema = z.strictObject({
  host: peerIdSchema,
  phase: z.enum(ROLLOUT_PHASES),
  /** While fetching: how far it got. */
  fetching: fetchProgressSchema.nullable().describe('while fetching: bytes of the missing files held so far'),
  instances: z.array(instanceIdSchema).max(100),
  fetchMs: durationSchema.nullable(),
  fetchedBytes: byteCount.nullable(),
  createMs: durationSchema.nullable(),
  /** From the end of create until every instance's guest was up. */
  bootMs: durationSchema.nullable(),
  /** From boot until every instance passed its health checks. */
  healthyMs: durationSchema.nullable(),
  error: errorSchema.nullable(),
})
export type HostRollout = z.infer<typeof hostRolloutSchema>

/** What a deploy made, on every host of it. */
export const deployResultSchema = z.strictObject({
  instances: z.array(instanceViewSchema),
  /** Hosts whose part failed before it made any instance; `instances` are the ids it was to make. */
  failures: z.array(z.strictObject({ host: peerIdSchema, code: z.string(), message: z.string(), instances: z.array(instanceIdSchema).describe('the ids that host was to make: deploy again with the same key to learn what became of them') })),
  hosts: z.array(hostRolloutSchema).describe('each host\'s part: where it is, its instances and how long fetch, create, boot and healthy took there (ms)'),
})
export type DeployResult = z.infer<typeof deployResultSchema>

/** How one host's part of a deploy went, on that host's clock. */
export const deployTimingSchema = z.strictObject({
  /** Bringing the template here (0 when it was already here). */
  fetchMs: durationSchema,
  fetchedBytes: byteCount,
  /** Admission, disks, ports and starting the instances. */
  createMs: durationSchema,
  /** When waited for: from the end of create until every guest was up, then until every instance passed its checks. */
  bootMs: durationSchema.nullable(),
  healthyMs: durationSchema.nullable(),
})
export type DeployTiming = z.infer<typeof deployTimingSchema>

/** One host's answer to its part of a deploy. */
export const deployReplySchema = z.strictObject({
  instances: z.array(instanceViewSchema).max(100),
  timing: deployTimingSchema,
  /** Why the instances made did not all come up healthy, when waited for. */
  error: errorSchema.nullable(),
})
export type DeployReply = z.infer<typeof deployReplySchema>

/** Null phase: the host has not begun that deploy, or has finished it. */
export const deployStatusSchema = z.strictObject({
  phase: z.enum(['fetching', 'staging', 'creating', 'booting', 'checking']).nullable(),
  fetching: fetchProgressSchema.nullable(),
})
export type DeployStatus = z.infer<typeof deployStatusSchema>

/**
 * Another instance of a service, on host `to`: what its owner signs in advance, sent with their
 * `replicate` signature (see `replicateAction`) to the host that runs the instance, which does
 * the rest.
 */
export const replicateRequestSchema = z.strictObject({
  to: peerIdSchema,
  /** Start the replica from a snapshot of the instance, taken now under this id, instead of booting it. */
  snapshot: snapshotIdSchema.optional(),
  /** The owner's token for the host the replica starts on: `to`, or the instance's own host when it starts from a snapshot. */
  part: deployPartSchema,
  /** The owner's signed move of the replica to `to` (disk and all), when it starts from a snapshot on another host. */
  move: requestAuthSchema.optional(),
})
export type ReplicateRequest = z.infer<typeof replicateRequestSchema>

export const replicaSchema = z.strictObject({
  /** The replica as it was made (before it moved, when it did). */
  replica: instanceViewSchema,
  migration: migrationResultSchema.nullable(),
})
export type Replica = z.infer<typeof replicaSchema>

/** What an owner signs to have instance `id`, on host `host`, replicated on host `to`. */
export function replicateAction (id: string, host: string, to: string, snapshot: string | undefined): { action: string, target: string, params: { to: string, snapshot: string | null }, host: string } {
  return { action: 'replicate', target: id, params: { to, snapshot: snapshot ?? null }, host }
}
