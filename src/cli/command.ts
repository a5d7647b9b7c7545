import type { Command } from 'commander'
import { INSTANCE_ID_PATTERN, XenosError, type InstanceView, type OwnerKey } from '../core/index.ts'
import { loadOrCreateOwnerKeySync, readOwnerKeySync } from '../store/index.ts'
import { ApiClient } from './client.ts'

/** The options every command takes (see `buildProgram`). */
export interface GlobalFlags {
  api: string
  json?: boolean
  key: string
}

/** A host as `/v1/peers` lists it. */
export interface HostRow { id: string, name: string, api: string, drivers: string[], capacity: { cpu: number, memory: number }, free: { cpu: number, memory: number }, instances: number, expiresAt: number, escrow?: string, price?: number }

/** For an option given several times. */
export const collect = (value: string, previous: string[] = []): string[] => [...previous, value]

/** A deploy's --count: a whole number of instances a host takes at once. */
export function checkCount (count: number): void {
  if (!Number.isInteger(count) || count < 1 || count > 100) throw new XenosError('INVALID_ARGUMENT', '--count must be a whole number from 1 to 100')
}

/** Prints a command's answer: as JSON with --json, else as `human` says. */
export function out (flags: Pick<GlobalFlags, 'json'>, json: unknown, human: () => string): void {
  process.stdout.write((flags.json === true ? JSON.stringify(json, null, 2) : human()) + '\n')
}

/** The API client of a command, signing with the user's key (made on first use). */
export async function client (cmd: Command): Promise<{ api: ApiClient, flags: GlobalFlags }> {
  const flags = cmd.optsWithGlobals<GlobalFlags>()
  // Made when a request is first signed: a command that only reads leaves no key behind.
  const key = (create: boolean): OwnerKey | undefined => {
    if (!create) return readOwnerKeySync(flags.key)
    const { key, created } = loadOrCreateOwnerKeySync(flags.key)
    if (created) process.stderr.write(`created your user key ${flags.key} (owner id ${key.id})\n`)
    return key
  }
  return { api: new ApiClient({ api: flags.api, key }), flags }
}

/** Accepts a full peer id, a unique suffix or prefix of one, or a host name. */
export async function resolveHost (api: ApiClient, ref: string): Promise<string> {
  if (/^[1-9A-HJ-NP-Za-km-z]{46,}$/.test(ref)) return ref
  const { hosts } = await api.get<{ hosts: HostRow[] }>('/v1/peers')
  const self = await api.get<{ id: string, name: string }>('/v1/host')
  const all = [...new Map([...hosts, { id: self.id, name: self.name }].map(h => [h.id, h])).values()]
  const named = all.filter(h => h.name === ref)
  const bare = ref.replace(/^…/, '')
  const matches = named.length > 0 || bare.length < 4 ? named : all.filter(h => h.id.endsWith(bare) || h.id.startsWith(bare))
  if (matches.length === 1 && matches[0] !== undefined) return matches[0].id
  if (matches.length === 0) throw new XenosError('HOST_NOT_FOUND', `no advertised host is named "${ref}" or has a peer id starting or ending with it: see "xenos peers"`)
  throw new XenosError('INVALID_ARGUMENT', `"${ref}" matches ${matches.length} hosts: give more of the peer id`)
}

/**
 * Accepts an instance id, a unique prefix of one (4 hex digits at least, with or without `i-`),
 * or the name of one of the user's instances: the user's first, then everyone's (an operator
 * acts on others' on its host).
 */
export async function resolveInstance (api: ApiClient, ref: string): Promise<string> {
  if (INSTANCE_ID_PATTERN.test(ref)) return ref
  const list = async (owner?: string): Promise<InstanceView[]> => (await api.get<{ instances: InstanceView[] }>(`/v1/instances${owner === undefined ? '' : `?owner=${encodeURIComponent(owner)}`}`)).instances
  const owner = api.knownOwner
  const own = owner === undefined ? [] : await list(owner)
  const one = (found: InstanceView[], what: string): string | undefined => {
    if (found.length > 1) throw new XenosError('INVALID_ARGUMENT', `${found.length} instances ${what}: give one of their ids, ${found.map(v => v.id).join(', ')}`)
    return found[0]?.id
  }
  const named = one(own.filter(v => v.name === ref), `of yours are named ${ref} (replicas share a name)`)
  if (named !== undefined) return named
  const hex = ref.replace(/^i-/, '')
  if (/^[0-9a-f]{4,15}$/.test(hex)) {
    const starting = (vs: InstanceView[]): InstanceView[] => vs.filter(v => v.id.startsWith(`i-${hex}`))
    const id = one(starting(own), `of yours have ids starting with i-${hex}`) ?? one(starting(await list()), `have ids starting with i-${hex}`)
    if (id !== undefined) return id
  }
  throw new XenosError('INSTANCE_NOT_FOUND', `no instance is named "${ref}" or has an id starting with it: see "xenos instance list"`)
}

/** Host names by peer id, for tables (empty when the peers cannot be listed). */
export async function hostNames (api: ApiClient): Promise<Map<string, string>> {
  type Named = Array<{ id: string, name: string }>
  const { hosts, unreachable } = await api.get<{ hosts: Named, unreachable: Named }>('/v1/peers').catch(() => ({ hosts: [], unreachable: [] }))
  return new Map([...unreachable, ...hosts].filter(h => h.name !== '').map(h => [h.id, h.name]))
}
