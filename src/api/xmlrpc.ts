import type { XmlRpcValue } from '@foxglove/xmlrpc'
import type { FastifyInstance, InjectOptions } from 'fastify'
import { AUTH_HEADER } from './auth.ts'

/** Largest XML-RPC call accepted: calls carry ids, queries and deploy parts, never files. */
const MAX_CALL_BYTES = 1024 * 1024

type Args = XmlRpcValue[]

/** A call's failure, sent as an XML-RPC fault with `code` (the HTTP status the API answered). */
class Fault extends Error {
  readonly code: number
  constructor (message: string, code: number) {
    super(message)
    this.code = code
  }
}

/**
 * The XML-RPC wire format, loaded at the first call: the library is 14 MiB of a host's memory,
 * for a route most hosts are never asked on (BENCHMARKS.md).
 */
let wire: Promise<typeof import('@foxglove/xmlrpc')> | undefined

/** One XML-RPC method: what it does, its XML-RPC signature, and the HTTP API request it makes. */
interface Method {
  help: string
  /** Return type first, then each parameter's (system.methodSignature). */
  signature: string[]
  /** Where the signature is among the arguments, if the method takes one. */
  auth?: number
  request: (args: Args) => Pick<InjectOptions, 'method' | 'url' | 'payload' | 'query'>
}

const str = (args: Args, i: number, what: string): string => {
  const v = args[i]
  if (typeof v !== 'string' || v === '') throw new Fault(`argument ${i + 1} (${what}) must be a string`, 400)
  return v
}
const struct = (args: Args, i: number, what: string): Record<string, XmlRpcValue> => {
  const v = args[i] ?? {}
  if (typeof v !== 'object' || Array.isArray(v) || v instanceof Date || v instanceof Uint8Array) throw new Fault(`argument ${i + 1} (${what}) must be a struct`, 400)
  return v
}
/** Query parameters of a struct: its strings, numbers and arrays of strings (repeated keys). */
const query = (s: Record<string, XmlRpcValue>): Record<string, string | string[]> =>
  Object.fromEntries(Object.entries(s).flatMap(([k, v]): Array<[string, string | string[]]> => typeof v === 'string' || typeof v === 'number' ? [[k, String(v)]] : Array.isArray(v) ? [[k, v.map(String)]] : []))
const json = (args: Args, i: number, what: string): unknown => {
  try {
    return JSON.parse(str(args, i, what))
  } catch (err) {
    if (err instanceof Fault) throw err
    throw new Fault(`argument ${i + 1} (${what}) must be JSON text: ${(err as Error).message}`, 400)
  }
}
const id = (args: Args): string => encodeURIComponent(str(args, 0, 'instance id'))

const CONTROL = ['start', 'stop', 'pause', 'resume', 'destroy'] as const

/**
 * The Xenos paper's XML-RPC interface: search, instance control, metrics, replication and
 * migration, each a request to the HTTP API of the host (the same checks, relays and signatures).
 * A signed method takes the X-Xenos-Auth header's value (`xenos sign ACTION TARGET`) as its last
 * argument, or the call carries the header itself.
 */
export const XMLRPC_METHODS: Record<string, Method> = {
  'host.info': { help: 'This host: its id, name, resources, price, drivers.', signature: ['struct'], request: () => ({ method: 'GET', url: '/v1/host' }) },
  'hosts.list': { help: 'Connected peers, advertised hosts and hosts taken for dead.', signature: ['struct'], request: () => ({ method: 'GET', url: '/v1/peers' }) },
  search: {
    help: 'Adverts of hosts, templates and instances: a struct of GET /v1/search\'s parameters (q, kind, tag, host, limit, sort).',
    signature: ['struct', 'struct'],
    request: args => ({ method: 'GET', url: '/v1/search', query: query(struct(args, 0, 'query')) }),
  },
  'templates.search': { help: 'Templates advertised on the overlay whose name or tags match the text.', signature: ['struct', 'string'], request: args => ({ method: 'GET', url: '/v1/search', query: { kind: 'template', q: str(args, 0, 'text') } }) },
  'templates.get': { help: 'A template by id, id prefix, name or name:version.', signature: ['struct', 'string'], request: args => ({ method: 'GET', url: `/v1/templates/${encodeURIComponent(str(args, 0, 'template'))}` }) },
  'instances.search': { help: 'Instances advertised on the overlay whose name or tags match the text.', signature: ['struct', 'string'], request: args => ({ method: 'GET', url: '/v1/search', query: { kind: 'instance', q: str(args, 0, 'text') } }) },
  'instances.list': { help: 'Instances, as their adverts show them; a struct of filters (owner, host, state).', signature: ['struct', 'struct'], request: args => ({ method: 'GET', url: '/v1/instances', query: query(struct(args, 0, 'filters')) }) },
  'instances.deploy': {
    help: 'Deploy instances of a template id with spec (a struct, at least its name) and parts, the owner\'s signed token for each host, as the JSON text `xenos deploy-parts` prints (their times do not fit XML-RPC\'s 32-bit int); waits for them to boot when the fourth argument is true.',
    signature: ['struct', 'string', 'struct', 'string', 'boolean'],
    request: args => ({ method: 'POST', url: '/v1/instances', payload: { template: str(args, 0, 'template id'), spec: struct(args, 1, 'spec'), parts: json(args, 2, 'parts'), wait: args[3] === true } }),
  },
  'instance.get': { help: 'One instance, from the host that runs it (signed: get on its id).', signature: ['struct', 'string', 'string'], auth: 1, request: args => ({ method: 'GET', url: `/v1/instances/${id(args)}` }) },
  'instance.metrics': { help: 'CPU, memory and uptime of an instance (signed: metrics on its id).', signature: ['struct', 'string', 'string'], auth: 1, request: args => ({ method: 'GET', url: `/v1/instances/${id(args)}/metrics` }) },
  ...Object.fromEntries(CONTROL.map(action => [`instance.${action}`, {
    help: `${action[0]?.toUpperCase() ?? ''}${action.slice(1)} an instance (signed: ${action} on its id).`,
    signature: ['struct', 'string', 'string'],
    auth: 1,
    request: (args: Args) => ({ method: 'POST' as const, url: `/v1/instances/${id(args)}/${action}` }),
  }])),
  'instance.migrate': {
    help: 'Move a running instance live to the host with this peer id (signed: migrate on its id, params {to, copyDisk: false}).',
    signature: ['struct', 'string', 'string', 'string'],
    auth: 2,
    request: args => ({ method: 'POST', url: `/v1/instances/${id(args)}/migrate`, payload: { to: str(args, 1, 'destination host') } }),
  },
  'instance.replicate': {
    help: 'Start a copy of an instance on another host: a struct of POST /v1/instances/{id}/replicate\'s body (signed: replicate on its id).',
    signature: ['struct', 'string', 'struct', 'string'],
    auth: 2,
    request: args => ({ method: 'POST', url: `/v1/instances/${id(args)}/replicate`, payload: struct(args, 1, 'replica') }),
  },
}

const INTROSPECTION = {
  'system.listMethods': { help: 'The methods this server has.', signature: ['array'] },
  'system.methodHelp': { help: 'What a method does.', signature: ['string', 'string'] },
  'system.methodSignature': { help: 'A method\'s return and parameter types.', signature: ['array', 'string'] },
}

/** XML-RPC has no null: it goes as <nil/>, which Python's xmlrpc.client reads as None. */
function xmlValue (v: unknown): XmlRpcValue {
  if (v === null || v === undefined) return undefined
  if (Array.isArray(v)) return v.map(xmlValue)
  if (typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, xmlValue(x)]))
  return v as XmlRpcValue
}

/** Serves XML-RPC at /RPC2 (`text/xml` POSTs): each call becomes a request to this host's HTTP API. */
export function registerXmlRpc (app: FastifyInstance): void {
  app.addContentTypeParser('text/xml', { parseAs: 'string', bodyLimit: MAX_CALL_BYTES }, (_req, body, done) => { done(null, body) })
  app.post('/RPC2', { schema: { hide: true } }, async (req, reply) => {
    void reply.type('text/xml')
    wire ??= import('@foxglove/xmlrpc')
    const { Deserializer, serializeFault, serializeMethodResponse, XmlRpcFault } = await wire
    try {
      const [name, args] = await new Deserializer().deserializeMethodCall(String(req.body))
      return serializeMethodResponse(await call(app, name, args, req.headers[AUTH_HEADER]))
    } catch (err) {
      const fault = err instanceof Fault ? err : new Fault(`malformed XML-RPC call: ${(err as Error).message}`, 400)
      return serializeFault(new XmlRpcFault(fault.message, fault.code))
    }
  })
}

async function call (app: FastifyInstance, name: string, args: Args, header: string | string[] | undefined): Promise<XmlRpcValue> {
  if (name === 'system.listMethods') return [...Object.keys(INTROSPECTION), ...Object.keys(XMLRPC_METHODS)].sort()
  if (name === 'system.methodHelp' || name === 'system.methodSignature') {
    const asked = str(args, 0, 'method')
    const m = XMLRPC_METHODS[asked] ?? INTROSPECTION[asked as keyof typeof INTROSPECTION]
    if (m === undefined) throw new Fault(`no method ${asked}`, 404)
    return name === 'system.methodHelp' ? m.help : [m.signature]
  }
  const method = XMLRPC_METHODS[name]
  if (method === undefined) throw new Fault(`no method ${name}; system.listMethods lists them`, 404)
  const auth = method.auth === undefined ? undefined : args[method.auth] ?? header
  if (auth !== undefined && typeof auth !== 'string') throw new Fault(`argument ${(method.auth ?? 0) + 1} must be the X-Xenos-Auth value (xenos sign)`, 400)
  const res = await app.inject({ ...method.request(args), headers: auth === undefined ? {} : { [AUTH_HEADER]: auth } })
  const body: unknown = res.body === '' ? null : res.json()
  if (res.statusCode >= 400) {
    const error = (body as { error?: { code?: string, message?: string } } | null)?.error
    throw new Fault(`${error?.code ?? 'INTERNAL'}: ${error?.message ?? res.body}`, res.statusCode)
  }
  return xmlValue(body)
}
