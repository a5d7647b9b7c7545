import { z } from 'zod'
import { durationMs, nameSchema } from '../core/index.ts'

/** `500ms`, `30s`, `5m`, `1h30m`, as milliseconds. */
export const durationSchema = z.string()
  .refine(d => durationMs(d) !== undefined && !/^\d+$/.test(d), 'a duration is whole numbers with units ms, s, m, h or d: 500ms, 30s, 5m, 1h30m')
  .transform(d => durationMs(d) ?? 0)

const runtimeRefSchema = z.strictObject({
  component: z.string(),
  attribute: z.enum(['id', 'host', 'endpoint']),
  endpoint: z.string().optional(),
})
const runtimeValueSchema = z.strictObject({ runtime: z.array(z.union([z.string(), runtimeRefSchema])).min(1) })

/** What a component does when it dies: start it again where it was, make it again elsewhere, end the deployment, or nothing. */
export const FAILURE_POLICIES = ['restart', 'replace', 'terminate', 'ignore'] as const

const common = {
  /** Components (siblings, or outer ones) that must be healthy before this one starts. */
  after: z.array(z.string().min(1)).max(64).default([]),
  onFailure: z.enum(FAILURE_POLICIES).optional(),
}

/** SmartDomains' storage part of a VM component. */
const storageSchema = z.strictObject({
  /** Files of the owner's data repository, staged read-only at /in. */
  inputs: z.array(z.string().startsWith('data://')).max(64).optional(),
  /** Start from this snapshot of the template instead of booting. */
  snapshot: z.string().optional(),
  /** The size of the disk a task writes its outputs on, in MiB (1024 unless given). */
  size: z.number().int().min(1).max(2 ** 20).optional(),
  /** What stays when the deployment terminates: nothing, or the outputs (tasks). */
  keep: z.enum(['nothing', 'outputs']).default('nothing'),
})

/** The domain part: how often liveness is checked, and after how many failed checks the component counts as dead. */
const livenessSchema = z.strictObject({
  every: durationSchema.prefault('5s'),
  failAfter: z.number().int().min(1).max(100).default(3),
})

const placementSchema = z.strictObject({
  /** Each instance on another host. */
  spread: z.boolean().optional(),
  /** On this host (peer id or host name). */
  host: z.string().min(1).optional(),
  /** On hosts whose tags include these. */
  tags: z.record(z.string(), z.string()).optional(),
})

/** Instances of a template (SmartDomains' VM component), or a task that runs to its end. */
export const workloadSchema = z.strictObject({
  ...common,
  template: z.string().min(1).max(256),
  count: z.number().int().min(1).max(100).default(1),
  resources: z.strictObject({ cpu: z.number().positive().max(256), memory: z.number().int().positive().max(1 << 20) }).optional(),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable is letters, digits and _'), z.union([z.string(), z.number().transform(String), z.boolean().transform(String), runtimeValueSchema])).default({}),
  /** Restarts in place before a restart policy replaces the component elsewhere (Nomad's restart, then reschedule). */
  restarts: z.strictObject({ attempts: z.number().int().min(0).max(100).default(3), backoff: durationSchema.prefault('5s') }).prefault({}),
  checkpoint: durationSchema.optional(),
  placement: placementSchema.prefault({}),
  liveness: livenessSchema.prefault({}),
  storage: storageSchema.optional(),
  task: z.strictObject({ outputs: z.string().min(1).max(1024), keep: z.boolean().default(false) }).optional(),
})

/** Components that live and die together (SmartFrog's Compound), or run one after another (`kind: sequence`); each child is checked on its own. */
export const compoundSchema = z.strictObject({
  ...common,
  kind: z.enum(['compound', 'sequence']).default('compound'),
  components: z.record(nameSchema, z.unknown()).refine(c => Object.keys(c).length > 0, 'a compound has at least one component'),
})

export const descriptionSchema = z.strictObject({
  name: nameSchema,
  components: z.record(nameSchema, z.unknown()).refine(c => Object.keys(c).length > 0, 'a description has at least one component'),
})
