import { z } from 'zod'
import { CONTROL_ACTIONS, deployTokenSchema, INSTANCE_ID_PATTERN, INSTANCE_STATES, nameSchema, OWNER_ID_PATTERN, PEER_ID_PATTERN, requestAuthSchema, SNAPSHOT_ID_PATTERN, TASK_STATES, versionSchema, type RequestAuth } from '../core/index.ts'

/** Schemas of the messages hosts send each other; every RPC handler validates with one. */
export const templateIdSchema = z.string().regex(/^sha256:[0-9a-f]{64}$/, 'a template id is sha256: and 64 hex digits')
export const instanceIdSchema = z.string().regex(INSTANCE_ID_PATTERN, 'an instance id is i- and 16 hex digits')
export const peerIdSchema = z.string().regex(PEER_ID_PATTERN, 'not a peer id')

export const authSchema = requestAuthSchema

export const snapshotIdSchema = z.string().regex(SNAPSHOT_ID_PATTERN, 'a snapshot id is s- and 16 hex digits')

/** A service an instance reaches by name: an instance id, or a name (any running instance of it), and which endpoint (its first TCP one by default). */
export const linkSchema = z.strictObject({
  name: z.string().regex(/^[a-z][a-z0-9_]{0,30}$/, 'a link name is lower-case letters, digits and "_", starting with a letter'),
  target: z.string().min(1).max(256),
  endpoint: z.string().min(1).max(31).optional(),
})

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
})
export type DeploySpec = z.infer<typeof deploySpecSchema>

/** One host's part of a deploy: the owner's token for it, and the owner's `data.get` signature on each input for that host. */
export const deployPartSchema = z.strictObject({
  token: deployTokenSchema,
  inputs: z.array(authSchema).min(1).max(64).optional(),
})
export type DeployPart = z.infer<typeof deployPartSchema>
/** An input as its host stages it: the name and what the owner signed to let the host read it. */
export type DeployInput = NonNullable<DeploySpec['inputs']>[number] & { auth: RequestAuth }

export const rpcDeploySchema = z.strictObject({
  template: templateIdSchema,
  spec: deploySpecSchema,
  part: deployPartSchema,
  /** Answer once the instances have booted and passed their health checks, or after this long. */
  wait: z.strictObject({ waitMs: z.number().int().min(1000).max(3_600_000) }).optional(),
})

/** Asks a host where it is with the owner's deploy of this key. */
export const rpcDeployStatusSchema = z.strictObject({
  owner: z.string().regex(OWNER_ID_PATTERN),
  key: deployTokenSchema.shape.key,
})
const byteCount = z.number().int().nonnegative()
/** Null phase: the host has not begun that deploy, or has finished it. */
export const deployStatusSchema = z.strictObject({
  phase: z.enum(['fetching', 'staging', 'creating', 'booting', 'checking']).nullable(),
  fetching: z.strictObject({ held: byteCount, size: byteCount }).nullable(),
})
export type DeployStatus = z.infer<typeof deployStatusSchema>

/** How one host's part of a deploy went, on that host's clock. */
export const deployTimingSchema = z.strictObject({
  /** Bringing the template here (0 when it was already here). */
  fetchMs: z.number().nonnegative(),
  fetchedBytes: z.number().int().nonnegative(),
  /** Admission, disks, ports and starting the instances. */
  createMs: z.number().nonnegative(),
  /** When waited for: from the end of create until every guest was up, then until every instance passed its checks. */
  bootMs: z.number().nonnegative().nullable(),
  healthyMs: z.number().nonnegative().nullable(),
})
export type DeployTiming = z.infer<typeof deployTimingSchema>

export const rpcControlSchema = z.strictObject({
  id: instanceIdSchema,
  action: z.enum(CONTROL_ACTIONS),
  auth: authSchema,
})

/** A signed read of an instance: its view (`get`) or its usage (`metrics`). */
export const rpcInstanceSchema = z.strictObject({ id: instanceIdSchema, auth: authSchema })
export const rpcSnapshotSchema = z.strictObject({ id: instanceIdSchema, auth: authSchema })
export const snapshotViewSchema = z.strictObject({
  id: snapshotIdSchema,
  instanceId: instanceIdSchema,
  templateId: z.string().max(80),
  owner: z.string().regex(OWNER_ID_PATTERN),
  createdAt: z.number().int().nonnegative(),
})
export const deriveParamsSchema = z.strictObject({
  name: nameSchema,
  version: versionSchema.optional(),
})
export type DeriveParams = z.infer<typeof deriveParamsSchema>
export const rpcDeriveSchema = z.strictObject({ id: instanceIdSchema, params: deriveParamsSchema, auth: authSchema })

export const rpcLogsSchema = z.strictObject({ id: instanceIdSchema, lines: z.number().int().min(1).max(10_000), auth: authSchema })
export const rpcTemplateGetSchema = z.strictObject({ id: templateIdSchema })

const resourcesSchema = z.strictObject({ cpu: z.number().nonnegative(), memory: z.number().nonnegative() })

/** Replies are checked too: a peer's answer is as untrusted as its request. */
export const instanceViewSchema = z.strictObject({
  id: instanceIdSchema,
  name: z.string().max(256),
  template: z.string().max(80),
  templateName: z.string().max(256),
  host: peerIdSchema,
  state: z.enum(INSTANCE_STATES),
  owner: z.string().regex(OWNER_ID_PATTERN),
  endpoints: z.array(z.strictObject({ name: z.string().max(31), url: z.string().max(256) })).max(32),
  services: z.array(z.strictObject({
    name: z.string().max(31),
    url: z.string().max(256),
    registered: z.boolean(),
    health: z.enum(['passing', 'failing', 'unknown']),
    checkedAt: z.number().int().nonnegative(),
  })).max(32),
  resources: resourcesSchema,
  createdAt: z.number().int().nonnegative(),
  updatedAt: z.number().int().nonnegative(),
  bootedAt: z.number().int().nonnegative().optional(),
  healthyAt: z.number().int().nonnegative().optional(),
  error: z.string().max(16_384).optional(),
  exitCode: z.number().int().optional(),
})

export const instanceMetricsSchema = z.strictObject({
  id: instanceIdSchema,
  host: peerIdSchema,
  state: z.enum(INSTANCE_STATES),
  cpuSeconds: z.number().nonnegative(),
  memoryBytes: z.number().nonnegative(),
  uptimeSeconds: z.number().nonnegative(),
  sampledAt: z.number().int().nonnegative(),
})

export const deployReplySchema = z.strictObject({
  instances: z.array(instanceViewSchema).max(100),
  timing: deployTimingSchema,
  /** Why the instances made did not all come up healthy, when waited for. */
  error: z.strictObject({ code: z.string().max(64), message: z.string().max(16_384) }).nullable(),
})

/** Where the hosts with most room would take `count` instances of a template: what a client then signs tokens for. */
export const placementPlanSchema = z.strictObject({
  hosts: z.array(z.strictObject({ host: peerIdSchema, count: z.number().int().min(1).max(100) })).min(1).max(100),
})
export type PlacementPlan = z.infer<typeof placementPlanSchema>

/** A template as another host describes it. */
export const templateSummarySchema = z.strictObject({
  id: templateIdSchema,
  name: z.string().max(63),
  version: z.string().max(63),
  driver: z.string().max(16),
  tags: z.record(z.string().max(63), z.string().max(256)),
  resources: resourcesSchema,
  hosts: z.array(peerIdSchema).max(1000),
})

/** A file of the data repository as hosts and the API show it (core's DataFileView). */
export const dataFileViewSchema = z.strictObject({
  uri: z.string(),
  owner: z.string(),
  path: z.string(),
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  host: z.string(),
  updatedAt: z.number(),
})

/** A file an instance left at /out that was not stored, and why. */
export const refusedOutputSchema = z.strictObject({ path: z.string(), reason: z.string() })

/** A task as its host reports it: how far it got, how it ended, and the outputs it left. */
export const taskViewSchema = z.strictObject({
  id: instanceIdSchema,
  host: peerIdSchema,
  owner: z.string().regex(OWNER_ID_PATTERN),
  template: templateIdSchema,
  inputs: z.array(z.string().max(2048)).max(64),
  /** The data:// directory its outputs go to. */
  outputs: z.string().max(2048),
  keep: z.boolean(),
  state: z.enum(TASK_STATES),
  /** The state of its instance; null once the instance is gone. */
  instanceState: z.enum(INSTANCE_STATES).nullable(),
  exitCode: z.number().int().nullable(),
  error: z.string().max(16_384).nullable(),
  files: z.array(dataFileViewSchema).max(100_000),
  refused: z.array(refusedOutputSchema).max(100_000),
  createdAt: z.number().int().nonnegative(),
  /** When its VM had ended and the collecting of its outputs began. */
  collectingAt: z.number().int().nonnegative().nullable(),
  endedAt: z.number().int().nonnegative().nullable(),
})
export type TaskView = z.infer<typeof taskViewSchema>
