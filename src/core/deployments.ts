import { z } from 'zod'
import { blobIdSchema } from './chunks.ts'
import { instanceEnvSchema, linkSchema } from './deploy.ts'
import { deploymentGrantSchema, grantPlaceSchema } from './placement.ts'
import { instanceIdSchema, peerIdSchema, snapshotIdSchema } from './views.ts'

/** Descriptions are small: a larger one is a mistake. */
export const MAX_DESCRIPTION_TEXT = 256 * 1024

/** A description to run: its text, and its owner's grant over the text's digest naming the hosts that may act for them. */
export const applyRequestSchema = z.strictObject({
  text: z.string().min(1).max(MAX_DESCRIPTION_TEXT),
  grant: deploymentGrantSchema,
})
export type ApplyRequest = z.infer<typeof applyRequestSchema>

/** `completed`: a task that ran to its end, its outputs stored. */
export const COMPONENT_STATES = ['waiting', 'deploying', 'running', 'completed', 'failed', 'terminating', 'terminated'] as const
export const DEPLOYMENT_STATES = ['applying', 'running', 'failed', 'terminating', 'terminated'] as const
/**
 * How a component ended (SmartFrog's termination record): at its owner's word or with the rest
 * of its deployment (`normal`), of its own death or failure (`abnormal`), or because one it
 * depends on ended abnormally (`dependency lost`); `cause` says what happened.
 */
export const TERMINATION_KINDS = ['normal', 'abnormal', 'dependency lost'] as const
export const terminationSchema = z.strictObject({ kind: z.enum(TERMINATION_KINDS), cause: z.string().max(4096), at: z.number().int() })
export type Termination = z.infer<typeof terminationSchema>

/** How many of the latest events of each component a supervisor keeps and shows. */
export const COMPONENT_EVENTS_KEPT = 20

/** Where the latest checkpoint of instance `index` of a component is kept: snapshot `snapshot` on host `host`, taken of instance `instance` at `at`. */
export const checkpointSchema = z.strictObject({
  index: z.number().int().min(0).max(99),
  instance: instanceIdSchema,
  generation: z.number().int().min(0),
  host: peerIdSchema,
  snapshot: snapshotIdSchema,
  at: z.number().int(),
  /** The signature of the grant its instance was placed under, when that is an earlier one than the deployment's. */
  grant: z.string().max(200).optional(),
})
export type Checkpoint = z.infer<typeof checkpointSchema>

/** A deployment as its owner sees it: each component (by path) with its state, instances and last event. */
export const deploymentViewSchema = z.strictObject({
  name: z.string(),
  owner: z.string(),
  /** The host that supervises it now. */
  supervisor: peerIdSchema,
  /** The hosts that hold it and may take over, in the order they would. */
  supervisors: z.array(peerIdSchema),
  state: z.enum(DEPLOYMENT_STATES),
  error: z.string().nullable(),
  components: z.array(z.strictObject({
    path: z.string(),
    state: z.enum(COMPONENT_STATES),
    instances: z.array(z.strictObject({ id: instanceIdSchema, host: peerIdSchema, index: z.number().int(), generation: z.number().int() })),
    /** The latest checkpoint of each of its instances that has one (components with `checkpoint`). */
    checkpoints: z.array(checkpointSchema),
    event: z.string().nullable(),
    /** What happened to it lately, oldest first. */
    events: z.array(z.strictObject({ at: z.number().int(), event: z.string() })).max(COMPONENT_EVENTS_KEPT),
    /** How it ended, once it has (or failed). */
    termination: terminationSchema.nullable(),
    updatedAt: z.number().int(),
  })),
  /** How the deployment ended, once it has (or failed): its first component that ended abnormally, named in the cause, else normally. */
  termination: terminationSchema.extend({ component: z.string().optional() }).nullable(),
  createdAt: z.number().int(),
  updatedAt: z.number().int(),
})
export type DeploymentView = z.infer<typeof deploymentViewSchema>

/** Where a deployment is supervised: the host acting for it now, and every host that holds it. */
export const supervisionSchema = z.strictObject({ acting: peerIdSchema, supervisors: z.array(peerIdSchema), state: z.enum(DEPLOYMENT_STATES) })
export type Supervision = z.infer<typeof supervisionSchema>

/** The most files a directory staged at /in may hold. */
export const MAX_STAGED_FILES = 10_000

/**
 * What a supervisor asks the host it placed an instance on to make: the description it is under,
 * the place, and what the instance is given; with `snapshot`, the checkpoint (held by that host)
 * it resumes from.
 */
export const placeRequestSchema = z.strictObject({
  text: z.string().min(1).max(MAX_DESCRIPTION_TEXT),
  place: grantPlaceSchema,
  env: instanceEnvSchema,
  links: z.array(linkSchema).max(8),
  snapshot: snapshotIdSchema.optional(),
  /** The files under each input of the component that is a directory a task of the deployment stored, as its supervisor learnt them from that task. */
  inputs: z.array(z.strictObject({ uri: z.string().min(1).max(2048), files: z.array(z.string().min(1).max(1024)).min(1).max(MAX_STAGED_FILES).optional() })).max(64).optional(),
})
export type PlaceRequest = z.infer<typeof placeRequestSchema>

/**
 * What lets the host an instance of a deployment was placed on read the inputs its description
 * names, in the owner's stead: the description and the place (see `placedReaderOf`).
 */
export const placedReadSchema = z.strictObject({ text: z.string().min(1).max(MAX_DESCRIPTION_TEXT), place: grantPlaceSchema })
export type PlacedRead = z.infer<typeof placedReadSchema>

/** What a supervisor may have a host do to an instance of its deployment: end it, start it again where it is, checkpoint it, or say how its task is. */
export const SUPERVISED_ACTIONS = ['release', 'restart', 'checkpoint', 'status'] as const
export type SupervisedAction = typeof SUPERVISED_ACTIONS[number]

/** A supervisor of the deployment an instance was placed under acts on it: signed by the supervisor (see `supervisedBytes`). */
export const supervisedRequestSchema = z.strictObject({
  id: instanceIdSchema,
  action: z.enum(SUPERVISED_ACTIONS),
  by: peerIdSchema,
  at: z.number().int().nonnegative(),
  sig: z.string().max(200),
})
export type SupervisedRequest = z.infer<typeof supervisedRequestSchema>

/** What a supervisor signs to have `action` done to instance `id` of the deployment whose grant carries `grantSig`. */
export function supervisedBytes (action: SupervisedAction, id: string, grantSig: string, by: string, at: number): Uint8Array {
  return new TextEncoder().encode(`xenos-supervised-v1\n${action}\n${id}\n${grantSig}\n${by}\n${at}`)
}

/**
 * A supervisor has the host of an instance checkpoint it (a snapshot of memory and disk, the VM
 * running on) for host `keeper` to fetch: with the description, which must ask for checkpoints.
 */
export const checkpointTakeSchema = z.strictObject({
  request: supervisedRequestSchema,
  text: z.string().min(1).max(MAX_DESCRIPTION_TEXT),
  keeper: peerIdSchema,
})
export type CheckpointTake = z.infer<typeof checkpointTakeSchema>

const offeredFileSchema = z.strictObject({ blob: blobIdSchema, size: z.number().int().nonnegative(), ticket: z.string().regex(/^[0-9a-f]{32}$/) })

/** What a checkpoint's host offers its keeper: the snapshot's memory and disk as blobs, each with a ticket to fetch it. */
export const checkpointOfferSchema = z.strictObject({
  template: z.string().min(1).max(256),
  at: z.number().int(),
  state: offeredFileSchema,
  disk: offeredFileSchema,
})
export type CheckpointOffer = z.infer<typeof checkpointOfferSchema>

/**
 * A supervisor has host `keeper` keep the checkpoint of instance `index` (of `generation`) of
 * `component` that host `from` offers, as snapshot `snapshot`, in place of snapshot `replaces`.
 */
export const checkpointKeepSchema = z.strictObject({
  text: z.string().min(1).max(MAX_DESCRIPTION_TEXT),
  grant: deploymentGrantSchema,
  component: z.string().min(1).max(256),
  index: z.number().int().min(0).max(99),
  generation: z.number().int().min(0),
  from: peerIdSchema,
  snapshot: snapshotIdSchema,
  offer: checkpointOfferSchema,
  replaces: snapshotIdSchema.optional(),
})
export type CheckpointKeep = z.infer<typeof checkpointKeepSchema>

/** A supervisor has a host drop the checkpoint it keeps of an instance of a deployment (its `generation`-th, `index` of `component`). */
export const checkpointDropSchema = z.strictObject({
  grant: deploymentGrantSchema,
  component: z.string().min(1).max(256),
  index: z.number().int().min(0).max(99),
  generation: z.number().int().min(0),
  snapshot: snapshotIdSchema,
})
export type CheckpointDrop = z.infer<typeof checkpointDropSchema>
