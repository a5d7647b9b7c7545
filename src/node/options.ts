import { createHash } from 'node:crypto'
import { cpus, homedir, tmpdir, totalmem } from 'node:os'
import { join, resolve } from 'node:path'
import { z } from 'zod'
import { hostTagsSchema, MAX_ADVERT_TTL_MS, OWNER_ID_PATTERN } from '../core/index.ts'
import { DEFAULT_ADVERT_TTL_MS } from '../overlay/index.ts'

export const DEFAULT_API_PORT = 7380
export const DEFAULT_P2P_PORT = 7381
export const DEFAULT_DATA_DIR = join(homedir(), '.local', 'share', 'xenos')
export const DEFAULT_STOP_TIMEOUT_MS = 10_000
export const KNOWN_DRIVERS = ['process', 'qemu'] as const

/** Everything `xenosd` can be told; validated at the edge, unknown keys refused. */
export const hostOptionsSchema = z.strictObject({
  /** Identity key, state database, instance directories and logs. @default ~/.local/share/xenos */
  dataDir: z.string().min(1).default(DEFAULT_DATA_DIR),
  /** HTTP API address. @default 127.0.0.1:7380 */
  api: z.strictObject({ host: z.string().min(1), port: z.number().int().min(0).max(65535) }).default({ host: '127.0.0.1', port: DEFAULT_API_PORT }),
  /** Overlay listen multiaddrs. @default ['/ip4/0.0.0.0/tcp/7381'] */
  listen: z.array(z.string().startsWith('/')).min(1).default([`/ip4/0.0.0.0/tcp/${DEFAULT_P2P_PORT}`]),
  /** Multiaddrs (ending in /p2p/<peer id>) of hosts to join through. */
  bootstrap: z.array(z.string().regex(/\/p2p\/[1-9A-HJ-NP-Za-km-z]+$/, 'a bootstrap address must end in /p2p/<peer id>')).default([]),
  /** Find hosts on the local network with mDNS. @default false */
  mdns: z.boolean().default(false),
  /** Drivers this host offers; only those whose fingerprint is healthy are advertised. @default ['process', 'qemu'] */
  drivers: z.array(z.enum(KNOWN_DRIVERS)).min(1).default(['process', 'qemu']),
  /** How VMs are accelerated: KVM when a probe boots a guest with it, else TCG. @default auto */
  accel: z.enum(['auto', 'kvm', 'tcg']).default('auto'),
  /** Short directory for VM sockets (unix socket paths are limited to ~108 bytes). @default /run/xenos as root */
  runDir: z.string().min(1).max(60).optional(),
  /** Human-readable host name shown in search results. */
  name: z.string().max(63).optional(),
  /** What the host is, for descriptions to place components by (`placement: {tags: {region: eu}}`). */
  tags: hostTagsSchema.default({}),
  /** Address services bind to and endpoints name; by default the first non-wildcard listen IP, else 127.0.0.1. */
  advertiseAddress: z.string().optional(),
  /** CPU cores and MiB this host offers. @default all cores and 75% of memory */
  capacity: z.strictObject({ cpu: z.number().positive(), memory: z.number().int().positive() }).optional(),
  /**
   * How much more than its capacity the host admits: CPU shares are only enforced as weights and
   * quotas, so CPU can be overcommitted safely; memory overcommit risks the kernel's OOM killer.
   * @default { cpu: 1, memory: 1 }
   */
  overcommit: z.strictObject({ cpu: z.number().min(1).max(64), memory: z.number().min(1).max(4) }).default({ cpu: 1, memory: 1 }),
  /** @default 1800000 (half an hour; at most an hour: a host that is gone leaves every cache within it where no probe finds it out sooner) */
  advertTtlMs: z.number().int().min(1000).max(MAX_ADVERT_TTL_MS).default(DEFAULT_ADVERT_TTL_MS),
  /** @default 10000 */
  stopTimeoutMs: z.number().int().min(0).max(600_000).default(DEFAULT_STOP_TIMEOUT_MS),
  /** How long a host keeps forwarding the old endpoints of an instance that moved away. @default 600000 */
  forwardGraceMs: z.number().int().min(0).max(86_400_000).default(600_000),
  /** The most bytes of data (files, and image files uploaded) one owner may keep on this host. @default 10 GiB */
  dataQuotaBytes: z.number().int().min(0).max(2 ** 50).default(10 * 2 ** 30),
  /** The most bytes all owners together may keep on this host. @default 80% of the data dir's file system */
  hostQuotaBytes: z.number().int().min(0).max(2 ** 60).optional(),
  /**
   * The keys (owner ids) that operate this host: they may drain it, pull and remove templates,
   * upload image files without a quota. @default the key in DATA/operator.pem, made on first start
   */
  operators: z.array(z.string().regex(OWNER_ID_PATTERN, 'an operator is an owner id (43 characters)')).max(16).default([]),
  /**
   * Let VMs whose template asks for it reach the network beyond their own endpoints. QEMU's user
   * networking then lets them reach every address this host reaches, its loopback (and so its
   * API) included: only for hosts whose every template is trusted. @default false
   */
  guestOutbound: z.boolean().default(false),
  /**
   * Receive a migrating VM's memory straight from the host it leaves, over TCP on the overlay's
   * listen IP (inside TLS with a key made for that move), instead of only through the overlay's
   * streams, which carry it several times slower. Turn off where only the overlay's port is open
   * between hosts (a source that cannot connect falls back to the overlay after a few seconds).
   * @default true
   */
  directMigration: z.boolean().default(true),
  /** Run a bank (the market's ledger of credits), with its key in DATA/bank.pem, made on first start. @default false */
  bank: z.boolean().default(false),
  /** What the bank gives each new account when it is first opened. @default 0 */
  bankGrant: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
  /** The banks (by key) this host and its users deal with; a bank host deals with its own too. @default none */
  /**
   * The share of the CPU each instance without a bid gets while others bid (all of them
   * together at most half). @default 0.05
   */
  marketFloor: z.number().min(0.0001).max(0.5).default(0.05),
  /** Refuse deploys without a bid for each instance: every instance here pays for its share. @default false */
  marketOnly: z.boolean().default(false),
  acceptBanks: z.array(z.string().regex(OWNER_ID_PATTERN, 'a bank is named by its key (43 characters)')).max(8).default([]),
  /** pino log level. @default info */
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
})

export type HostOptions = z.output<typeof hostOptionsSchema>
export type HostOptionsInput = z.input<typeof hostOptionsSchema>

/**
 * A short name for the host with data dir `dataDir`, unique on this machine: it keeps apart the
 * sockets and cgroups of several hosts on one machine, which may hold the same instance while
 * it migrates between them.
 */
export function hostTag (dataDir: string): string {
  return createHash('sha256').update(resolve(dataDir)).digest('hex').slice(0, 8)
}

export function defaultRunDir (dataDir: string): string {
  const uid = process.getuid?.() ?? 0
  return join(uid === 0 ? '/run/xenos' : join(process.env.XDG_RUNTIME_DIR ?? tmpdir(), `xenos-${uid}`), hostTag(dataDir))
}

export function defaultCapacity (): { cpu: number, memory: number } {
  return { cpu: cpus().length, memory: Math.floor(totalmem() / 1024 / 1024 * 0.75) }
}

/** The IP listen addresses, in order: `/ip4/10.0.0.2/tcp/7381` is `{ version: '4', ip: '10.0.0.2', transport: 'tcp' }`. */
function listenIps (listen: string[]): Array<{ version: string, ip: string, transport: string }> {
  return listen.flatMap(addr => {
    const [, version = '', ip = '', transport = ''] = /^\/ip([46])\/([^/]+)\/([^/]+)\//.exec(addr) ?? []
    return ip === '' ? [] : [{ version, ip, transport }]
  })
}

/** The IP of the first TCP listen address (a wildcard too): where sources of migrating VMs connect. */
export function incomingMigrationAddress (listen: string[]): string {
  return listenIps(listen).find(a => a.transport === 'tcp')?.ip ?? '0.0.0.0'
}

/** The IP in the first IPv4 listen address that is not a wildcard, else loopback. */
export function defaultAdvertiseAddress (listen: string[]): string {
  return listenIps(listen).find(a => a.version === '4' && a.ip !== '0.0.0.0')?.ip ?? '127.0.0.1'
}
