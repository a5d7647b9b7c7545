import type { Command } from 'commander'
import { XenosError, type OwnerKey } from '../core/index.ts'
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

/** Host names by peer id, for tables (empty when the peers cannot be listed). */
export async function hostNames (api: ApiClient): Promise<Map<string, string>> {
  const { hosts } = await api.get<{ hosts: Array<{ id: string, name: string }> }>('/v1/peers').catch(() => ({ hosts: [] }))
  return new Map(hosts.map(h => [h.id, h.name]))
}
