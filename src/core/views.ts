import { z } from 'zod'
import { INSTANCE_ID_PATTERN, INSTANCE_STATES, SNAPSHOT_ID_PATTERN, TASK_STATES } from './instance.ts'
import { nameSchema, versionSchema } from './template.ts'
import { OWNER_ID_PATTERN, PEER_ID_PATTERN } from './owner.ts'
import { marketViewSchema } from './market.ts'

/**
 * What hosts tell each other and their clients about instances, snapshots, templates, files and
 * tasks. A peer's answer is as untrusted as its request: replies are checked with these too.
 */
export const templateIdSchema = z.string().regex(/^sha256:[0-9a-f]{64}$/, 'a template id is sha256: and 64 hex digits')
export const instanceIdSchema = z.string().regex(INSTANCE_ID_PATTERN, 'an instance id is i- and 16 hex digits')
export const peerIdSchema = z.string().regex(PEER_ID_PATTERN, 'not a peer id')
export const snapshotIdSchema = z.string().regex(SNAPSHOT_ID_PATTERN, 'a snapshot id is s- and 16 hex digits')
const ownerIdSchema = z.string().regex(OWNER_ID_PATTERN)
const timeSchema = z.number().int().nonnegative()

export const resourcesSchema = z.strictObject({ cpu: z.number().nonnegative(), memory: z.number().nonnegative() })

export const instanceViewSchema = z.strictObject({
  id: instanceIdSchema,
  name: z.string().max(256),
  template: z.string().max(80),
  templateName: z.string().max(256),
  host: peerIdSchema,
  state: z.enum(INSTANCE_STATES),
  owner: ownerIdSchema,
  endpoints: z.array(z.strictObject({ name: z.string().max(31), url: z.string().max(256) })).max(32),
  services: z.array(z.strictObject({
    name: z.string().max(31),
    url: z.string().max(256),
    registered: z.boolean(),
    health: z.enum(['passing', 'failing', 'unknown']),
    checkedAt: timeSchema,
  })).max(32),
  resources: resourcesSchema,
  createdAt: timeSchema,
  updatedAt: timeSchema,
  bootedAt: timeSchema.optional(),
  healthyAt: timeSchema.optional(),
  error: z.string().max(16_384).optional(),
  exitCode: z.number().int().optional(),
  unreachableSince: timeSchema.optional(),
  ...marketViewSchema.shape,
})

export const instanceMetricsSchema = z.strictObject({
  id: instanceIdSchema,
  host: peerIdSchema,
  state: z.enum(INSTANCE_STATES),
  cpuSeconds: z.number().nonnegative(),
  memoryBytes: z.number().nonnegative(),
  uptimeSeconds: z.number().nonnegative(),
  diskReadBytes: z.number().int().nonnegative().optional(),
  diskWriteBytes: z.number().int().nonnegative().optional(),
  netRxBytes: z.number().int().nonnegative().optional(),
  netTxBytes: z.number().int().nonnegative().optional(),
  sampledAt: timeSchema,
})

export const snapshotViewSchema = z.strictObject({
  id: snapshotIdSchema,
  instanceId: instanceIdSchema,
  templateId: z.string().max(80),
  owner: ownerIdSchema,
  createdAt: timeSchema,
})

/** What a template derived from an instance is called. */
export const deriveParamsSchema = z.strictObject({
  name: nameSchema,
  version: versionSchema.optional(),
})
export type DeriveParams = z.infer<typeof deriveParamsSchema>

/** A template as a host describes it, with the hosts that advertise holding it. */
export const templateSummarySchema = z.strictObject({
  id: templateIdSchema,
  name: z.string().max(63),
  version: z.string().max(63),
  driver: z.string().max(16),
  tags: z.record(z.string().max(63), z.string().max(256)),
  resources: resourcesSchema,
  hosts: z.array(peerIdSchema).max(1000),
})
export type TemplateSummary = z.infer<typeof templateSummarySchema>

/** A file of the data repository as hosts and the API show it (see `DataFileView`). */
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

/** What a collect of an instance's outputs stored, and what it refused. */
export const collectResultSchema = z.strictObject({
  files: z.array(dataFileViewSchema),
  refused: z.array(refusedOutputSchema),
})
export type CollectResult = z.infer<typeof collectResultSchema>

/** A task as its host reports it: how far it got, how it ended, and the outputs it left. */
export const taskViewSchema = z.strictObject({
  id: instanceIdSchema,
  host: peerIdSchema,
  owner: ownerIdSchema,
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
  createdAt: timeSchema,
  /** When its VM had ended and the collecting of its outputs began. */
  collectingAt: timeSchema.nullable(),
  endedAt: timeSchema.nullable(),
})
export type TaskView = z.infer<typeof taskViewSchema>
