import type { FastifyDynamicSwaggerOptions } from '@fastify/swagger'
import type { FastifySchema } from 'fastify'
import { jsonSchemaTransform, jsonSchemaTransformObject } from 'fastify-type-provider-zod'
import { z } from 'zod'
import {
  accountViewSchema, allowanceSchema, budgetViewSchema, collectResultSchema, dataFileViewSchema, deploymentViewSchema, deployResultSchema, deploySpecSchema, drainResultSchema,
  ERROR_CODES, instanceMetricsSchema, instanceViewSchema, ledgerEntrySchema, migrationResultSchema, nameRecordSchema, placementPlanSchema, receiptSchema,
  requestAuthSchema, snapshotViewSchema, taskViewSchema, XENOS_VERSION,
} from '../core/index.ts'
import { SECURITY_SCHEMES } from './auth.ts'
import { ERROR_STATUSES, errorResponses, errorSchema, hostInfoSchema, searchResultSchema, templateSummarySchema, transferSchema } from './schemas.ts'

/** The schemas the document names (components.schemas), so that a generated client has types by these names. */
const COMPONENTS = {
  Error: errorSchema,
  HostInfo: hostInfoSchema,
  SearchResult: searchResultSchema,
  TemplateSummary: templateSummarySchema,
  Transfer: transferSchema,
  NameRecord: nameRecordSchema,
  InstanceView: instanceViewSchema,
  InstanceMetrics: instanceMetricsSchema,
  PlacementPlan: placementPlanSchema,
  DeploySpec: deploySpecSchema,
  DeployResult: deployResultSchema,
  MigrationResult: migrationResultSchema,
  DrainResult: drainResultSchema,
  SnapshotView: snapshotViewSchema,
  DataFileView: dataFileViewSchema,
  CollectResult: collectResultSchema,
  TaskView: taskViewSchema,
  DeploymentView: deploymentViewSchema,
  RequestAuth: requestAuthSchema,
  Receipt: receiptSchema,
  LedgerEntry: ledgerEntrySchema,
  AccountView: accountViewSchema,
  Allowance: allowanceSchema,
  BudgetView: budgetViewSchema,
}
for (const [id, schema] of Object.entries(COMPONENTS)) if (!z.globalRegistry.has(schema)) z.globalRegistry.add(schema, { id })

/** The groups routes are listed under, by the first part of their path after /v1. */
const TAGS = {
  hosts: { paths: ['host', 'peers', 'placement', 'connect'], description: 'This host, the hosts of the overlay, where instances fit, and ports that reach services' },
  search: { paths: ['search'], description: 'Adverts of hosts, templates and instances, from the overlay' },
  templates: { paths: ['templates', 'names', 'blobs', 'transfers'], description: 'Templates, their image files, template:// names, and pulls in progress' },
  instances: { paths: ['instances', 'snapshots', 'migrations', 'deploys'], description: 'Deploying, controlling, measuring, replicating and migrating instances; snapshots' },
  data: { paths: ['data', 'tasks'], description: 'The data repository: files, uploads, grants; tasks and their outputs' },
  deployments: { paths: ['deployments'], description: 'Whole deployments from descriptions (docs/descriptions.md)' },
  market: { paths: ['bank', 'market', 'budgets'], description: 'The bank, bids\' refunds and budgets spent by a host\'s bidder (docs/market.md)' },
} as const

const SECURITY_DOCS = 'A signed request carries `X-Xenos-Auth: v2 owner=KEY host=PEER ts=MS nonce=HEX sig=BASE64`: an ed25519 signature by the user key, over the action, its target, its parameters and the host that carries it out (docs/security.md says what is signed; `xenos sign` makes one). Each route\'s `x-xenos-signature` says who signs and what; a route with no security scheme is open, or carries its signatures in its body.'

/**
 * How a route's answer or body is carried when it is not JSON: the document says so, the
 * handlers write the bytes themselves. Given in a route's schema as `x-xenos-media`.
 */
export interface Media {
  /** The answer is only server-sent events (their events in the summary). */
  events?: true
  /** With `Accept: text/event-stream` the answer is server-sent events: `progress`, then `result` or `error`. */
  progress?: true
  /** The answer (at this status) is the bytes of a file. */
  file?: number
  /** The body is the bytes of a file, as application/octet-stream. */
  upload?: true
}

/** Marks a route's answer or body as something other than JSON (see `Media`). */
export function media (m: Media): { 'x-xenos-media': Media } {
  return { 'x-xenos-media': m }
}

/** The options of @fastify/swagger that make /openapi.json: the frame, and `document` applied to every route. */
export function swaggerOptions (): FastifyDynamicSwaggerOptions {
  return {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Xenos host API',
        version: XENOS_VERSION,
        license: { name: 'Apache-2.0', url: 'https://www.apache.org/licenses/LICENSE-2.0' },
        description: `Search, deploy, control and measure services on a Xenos cloud through any host.\n\n${SECURITY_DOCS}`,
      },
      servers: [{ url: '/', description: 'the host that serves this document; every host serves the same API' }],
      tags: Object.entries(TAGS).map(([name, t]) => ({ name, description: t.description })),
      components: { securitySchemes: SECURITY_SCHEMES },
    },
    transform: input => documented(jsonSchemaTransform({ ...input, schema: withErrors(input.schema) }), input.route.method),
    transformObject: input => withoutUnused(jsonSchemaTransformObject(input)),
  }
}

type Schema = FastifySchema & Record<string, unknown>

/** Every route that answers JSON documents the errors it can answer with. */
function withErrors (schema: FastifySchema | undefined): FastifySchema {
  const s = (schema ?? {}) as Schema
  if (s.hide === true) return s
  const response = (s.response ?? {}) as Record<string, unknown>
  return { ...s, response: { ...response, ...errorResponses } }
}

const BYTES = { schema: { type: 'string', format: 'binary' } }
const EVENTS = { schema: { type: 'string', description: 'server-sent events: `event: NAME` and `data: JSON` lines' } }

const SUCCESS: Record<number, string> = { 200: 'The answer', 201: 'Made; the answer describes what was made', 204: 'Done; nothing to answer' }

interface Answer { description: string, content?: Record<string, { schema: unknown }> }

/** A response as the document gives it: what its status means, and its JSON. */
function answer (status: number, json: Record<string, unknown>): Answer {
  const codes = ERROR_STATUSES.get(status)
  const description = codes === undefined
    ? (typeof json.description === 'string' ? json.description : SUCCESS[status] ?? 'The answer')
    : codes.map(code => `${code}: ${ERROR_CODES[code].meaning}`).join(' ')
  return status === 204 ? { description } : { description, content: { 'application/json': { schema: json } } }
}

/** Fills in what every route's entry needs: its tag, its security (none: open), and its non-JSON media. */
function documented ({ schema, url }: { schema: FastifySchema, url: string }, method: string | string[]): { schema: FastifySchema, url: string } {
  const s = { ...schema } as Schema
  if (s.hide === true) return { schema: s, url }
  // @fastify/swagger marks the id of a HEAD route, in case it was made from a GET's; ours are declared.
  if (method === 'HEAD' && typeof s.operationId === 'string') s.operationId = s.operationId.replace(/-head$/, '')
  const part = url.split('/')[2] ?? ''
  const tag = Object.entries(TAGS).find(([, t]) => (t.paths as readonly string[]).includes(part))?.[0]
  if (tag === undefined) throw new Error(`route ${url} belongs to no tag of the OpenAPI document`)
  s.tags = [tag]
  s.security ??= []
  const m = s['x-xenos-media'] as Media | undefined
  delete s['x-xenos-media']
  const response = Object.fromEntries(Object.entries(s.response as Record<string, Record<string, unknown>>).map(([status, json]) => [status, answer(Number(status), json)]))
  if (!Object.keys(response).some(status => status.startsWith('2'))) response[200] = { description: SUCCESS[200] ?? '' }
  if (m?.events === true) response[200] = { description: 'A stream of server-sent events (see the summary)', content: { 'text/event-stream': EVENTS } }
  if (m?.file !== undefined) response[m.file] = { description: 'The file\'s bytes', content: { 'application/octet-stream': BYTES } }
  if (m?.progress === true) {
    const ok = Object.entries(response).find(([status]) => status.startsWith('2'))?.[1]
    if (ok?.content === undefined) throw new Error(`route ${url} streams progress but has no answer to stream`)
    ok.content['text/event-stream'] = EVENTS
  }
  s.response = response
  if (m?.upload === true) s.body = { content: { 'application/octet-stream': BYTES } }
  return { schema: s, url }
}

type Document = ReturnType<typeof jsonSchemaTransformObject>

/** The document without the component schemas nothing refers to (each named schema makes an input and an output variant). */
function withoutUnused (doc: Document): Document {
  const { components } = doc as { components?: { schemas?: Record<string, unknown> } }
  let schemas = { ...components?.schemas }
  for (;;) {
    const text = JSON.stringify({ paths: doc.paths, schemas })
    const used = Object.entries(schemas).filter(([id]) => text.includes(`"#/components/schemas/${id}"`))
    if (used.length === Object.keys(schemas).length) return { ...doc, components: { ...components, schemas } } as Document
    schemas = Object.fromEntries(used)
  }
}
