import { z } from 'zod'
import {
  ADVERT_KINDS, ERROR_CODES, type ErrorCode, hostRolloutSchema, blobIdSchema, CONTROL_ACTIONS, deployPartSchema, deploySpecSchema, INSTANCE_STATES, instanceIdSchema, nameRecordSchema, peerIdSchema, snapshotIdSchema,
  templateIdSchema, templateSummarySchema as templateSummaryBase,
} from '../core/index.ts'

/** Request and response schemas of the HTTP API; they also make up /openapi.json. */
export const errorSchema = z.object({
  error: z.object({
    code: z.enum(Object.keys(ERROR_CODES) as [ErrorCode, ...ErrorCode[]]).describe('what went wrong, from the registry of docs/errors.md'),
    message: z.string().describe('what went wrong and what to do about it'),
    details: z.record(z.string(), z.unknown()).optional(),
  }),
})

/** Each HTTP status an error can have, and the codes that have it. */
export const ERROR_STATUSES: ReadonlyMap<number, ErrorCode[]> = Map.groupBy(Object.keys(ERROR_CODES) as ErrorCode[], code => ERROR_CODES[code].status)

/** The error answers a route may give: every status of the registry's codes. */
export const errorResponses = Object.fromEntries([...ERROR_STATUSES.keys()].map(status => [status, errorSchema])) as Record<number, typeof errorSchema>

/** A host's resources; its free ones may be below zero after a restart with less capacity than its instances hold. */
const hostResourcesSchema = z.object({ cpu: z.number(), memory: z.number() })

export const hostInfoSchema = z.object({
  id: z.string(),
  operators: z.array(z.string()).describe('the keys that operate this host'),
  name: z.string(),
  addrs: z.array(z.string()),
  api: z.string(),
  drivers: z.array(z.string()),
  capacity: hostResourcesSchema,
  free: hostResourcesSchema,
  instances: z.number(),
  version: z.string(),
  tags: z.record(z.string(), z.string()).describe('what the operator says the host is (xenosd --tag)'),
  bank: z.string().optional().describe('the key of the bank this host runs, if it runs one'),
  escrow: z.string().optional().describe('the host\'s escrow account: bids for its CPU are paid into it'),
  price: z.number().optional().describe('credits per second of all bids on the host, per CPU it offers'),
  agent: z.string().optional().describe('the key of this host\'s bidder, which owners name in the allowances it spends their budgets under'),
})

/** A template as the API shows it: with its manifest when asked for one by reference. */
export const templateSummarySchema = templateSummaryBase.extend({ manifest: z.record(z.string(), z.unknown()).optional() })

export const importTemplateBody = z.union([
  z.strictObject({ text: z.string().min(1).max(64 * 1024).describe('manifest as YAML or JSON text') }),
  z.strictObject({ manifest: z.record(z.string(), z.unknown()).describe('manifest as a JSON object') }),
])

export const transferSchema = z.object({
  template: z.string(),
  blob: z.string(),
  size: z.number(),
  held: z.number(),
  fetched: z.number(),
  peers: z.number(),
  startedAt: z.number(),
})

export const nameRecordBody = z.strictObject({ record: z.record(z.string(), z.unknown()).describe('a name record signed by its owner (see docs/names.md)') })
export const nameListQuery = z.strictObject({ owner: z.string().max(64).optional() })
export const namePublishSchema = z.object({ record: nameRecordSchema, changed: z.boolean() })

export const searchQuery = z.strictObject({
  q: z.string().max(256).optional(),
  kind: z.enum(ADVERT_KINDS).optional(),
  host: peerIdSchema.optional(),
  tag: z.union([z.string(), z.array(z.string())]).optional().describe('KEY=VALUE; repeat for several'),
  waitMs: z.coerce.number().int().min(0).max(60_000).default(0).describe('when nothing matches yet, wait this long for a matching advert to arrive'),
  from: z.enum(['any', 'cache', 'dht']).default('any').describe('any: the cache, then the DHT for an exact id or name; dht: only the DHT'),
  limit: z.coerce.number().int().min(1).max(1000).default(100).describe('the most results, newest first'),
  sort: z.enum(['newest', 'price']).default('newest').describe('price: hosts cheapest first (credits per second of all bids on a host, per CPU it offers), then the rest'),
})

export const searchResultSchema = z.object({
  results: z.array(z.object({
    kind: z.enum(ADVERT_KINDS),
    id: z.string(),
    host: z.string(),
    issuedAt: z.number(),
    expiresAt: z.number(),
    body: z.record(z.string(), z.unknown()),
  })),
})

export const deployBody = z.strictObject({
  template: templateIdSchema.describe('template id; resolve names first with GET /v1/templates/{ref}'),
  spec: deploySpecSchema.describe('what every host does: `name`; `snapshot` to start from instead of booting; `inputs`, files of the data repository staged read-only at /in (`{uri}`, or `{uri, files}` for files under the directory `uri`, at /in/DIR/…); `outputBytes`, an empty disk at /out whose files `POST /v1/instances/{id}/collect` stores; `task`, to run the one instance as a task whose /out files its host stores under `outputs` (see GET /v1/tasks/{id})'),
  parts: z.array(deployPartSchema).min(1).max(100).describe('for each host: the owner\'s deploy token for it (host, template, key, count, the SHA-256 of the canonical JSON of `spec`, signed), and for each input the owner\'s `data.get` signature on it for that host'),
  wait: z.boolean().default(false).describe('answer once the instances have booted and passed their health checks (not signed: it changes only when the answer comes)'),
  waitMs: z.number().int().min(1000).max(3_600_000).optional(),
})

export const migrateBody = z.strictObject({
  to: peerIdSchema.describe('peer id of the host to move the instance to'),
  copyDisk: z.boolean().default(false).describe('copy the disk to the new host too (while the VM runs, before its memory), so that the old host keeps nothing of it'),
})

export const drainBody = z.strictObject({
  to: z.array(peerIdSchema).min(1).max(256).optional().describe('hosts to move the instances to (default: those with most room)'),
})

export const connectBody = z.strictObject({
  target: z.string().min(1).max(256).describe('instance id, or instance name (any running instance of it)'),
  endpoint: z.string().min(1).max(31).optional().describe('endpoint name (default: the first TCP endpoint)'),
  port: z.number().int().min(0).max(65535).default(0).describe('local port to listen on (0: any free port)'),
  address: z.union([z.ipv4(), z.ipv6()]).default('127.0.0.1').describe('local address to listen on'),
})

export const instanceListQuery = z.strictObject({ owner: z.string().max(64).optional(), host: peerIdSchema.optional(), state: z.enum(INSTANCE_STATES).optional() })
export const instanceParams = z.strictObject({ id: instanceIdSchema })
export const controlParams = z.strictObject({ id: instanceIdSchema, action: z.enum(CONTROL_ACTIONS) })
export const logsQuery = z.strictObject({
  lines: z.coerce.number().int().min(1).max(10_000).default(100),
  from: z.coerce.number().int().min(0).optional().describe('give what the instance printed from this byte on (the `next` of an earlier answer) in place of its last lines'),
})
export const blobParams = z.strictObject({ digest: blobIdSchema })
export const refParams = z.strictObject({ ref: z.string().min(1).max(200) })
export const snapshotParams = z.strictObject({ id: snapshotIdSchema })
export const templateRemovalSchema = z.object({ id: z.string(), blobsRemoved: z.number(), bytesFreed: z.number() })

export const peersSchema = z.object({
  connected: z.array(z.object({ id: z.string(), addrs: z.array(z.string()) })),
  hosts: z.array(hostInfoSchema.omit({ id: true }).extend({ id: z.string(), expiresAt: z.number() })),
  unreachable: z.array(z.object({ id: z.string(), name: z.string(), since: z.number() })).describe('hosts taken for dead (they did not answer probes) that have not answered since, and since when'),
})

export const moveInProgressSchema = z.object({
  id: z.string(),
  name: z.string(),
  owner: z.string(),
  to: z.string().describe('the host it moves to'),
  startedAt: z.number(),
  status: z.object({
    phase: z.enum(['preparing', 'copying disk', 'copying', 'switching', 'done']),
    transferredBytes: z.number().optional(),
    remainingBytes: z.number().optional(),
    totalBytes: z.number().optional(),
    dirtyPagesRate: z.number().optional(),
    expectedDowntimeMs: z.number().nullable().optional(),
    downtimeMs: z.number().nullable().optional(),
    status: z.string().optional(),
    disk: z.object({ copiedBytes: z.number(), totalBytes: z.number() }).optional(),
  }),
})

export const deployInProgressSchema = z.object({
  key: z.string().describe('the deploy key the client chose for it'),
  owner: z.string(),
  template: z.string(),
  name: z.string().nullable(),
  startedAt: z.number(),
  hosts: z.array(hostRolloutSchema),
})
