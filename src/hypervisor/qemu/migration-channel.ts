import { mkdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { XenosError, type MigrationChannel, type MigrationProgress } from '../../core/index.ts'
import type { QmpClient } from './qmp.ts'

/**
 * How a VM's memory travels between hosts: straight from QEMU to QEMU over TCP, which the kernel
 * carries far faster than any relay, inside TLS with a pre-shared key made for that one move.
 * Whoever reaches the port cannot read or send memory without the key: a connection that fails
 * the handshake is dropped and the destination goes on waiting for the right one.
 */

/** The identity both sides present with the key. */
const PSK_IDENTITY = 'xenos'
const TLS_OBJECT = 'migration-tls'
/** How long the source waits to connect on one channel before trying the next. */
const CONNECT_DEADLINE_MS = 3000
const POLL_MS = 5
/**
 * The longest QEMU may pause the VM for the last round. Its default, 300 ms, paused a 1 GiB guest
 * for 200-300 ms; at 50 ms QEMU sends a few more rounds while the VM runs and pauses it for 15-45 ms
 * (bench/migration.ts). A guest that dirties its memory faster than it can be sent would then never
 * finish: auto-converge slows such a guest's vCPUs until it does.
 */
const DOWNTIME_LIMIT_MS = 50

/** The QEMU arguments of a destination that waits for a VM (see `listenForMigration`); writes the key to `dir`. */
export async function incomingArgs (dir: string, key: string): Promise<string[]> {
  await writeKey(dir, key)
  return ['-object', `tls-creds-psk,id=${TLS_OBJECT},endpoint=server,dir=${dir}`, '-incoming', 'defer', '-S']
}

/** On a destination started with `incomingArgs`: waits for the VM on a TCP port of `address`; returns the port. */
export async function listenForMigration (monitor: QmpClient, address: string): Promise<number> {
  await monitor.execute('migrate-set-parameters', { 'tls-creds': TLS_OBJECT })
  await monitor.execute('migrate-incoming', { uri: uriOf({ host: address, port: 0 }) })
  const info = await monitor.execute<{ 'socket-address'?: Array<{ port?: string }> }>('query-migrate')
  const port = Number(info['socket-address']?.[0]?.port)
  if (!Number.isInteger(port) || port <= 0) throw new XenosError('DRIVER_FAILED', 'QEMU did not say which port it waits for the migrating VM on')
  return port
}

/**
 * Sends the VM's memory through the first of `channels` that connects (a channel that cannot
 * connect within a few seconds is given up for the next); `dir` holds the key meanwhile.
 * Resolves with that channel when all of it is there; the VM is then paused for good.
 */
export async function sendMigration (monitor: QmpClient, channels: MigrationChannel[], dir: string, onProgress: (p: MigrationProgress) => void): Promise<MigrationChannel> {
  const reasons: string[] = []
  await monitor.execute('migrate-set-parameters', { 'downtime-limit': DOWNTIME_LIMIT_MS })
  await monitor.execute('migrate-set-capabilities', { capabilities: [{ capability: 'auto-converge', state: true }] })
  try {
    for (const channel of channels) {
      await useKey(monitor, dir, channel.key)
      const uri = uriOf(channel.to)
      await monitor.execute('migrate', { uri })
      const failure = await follow(monitor, onProgress)
      if (failure === undefined) return channel
      reasons.push(`${uri}: ${failure.reason}`)
      if (failure.connected) break
    }
  } finally {
    // Later saves of this VM (snapshots) go to files, without TLS.
    await monitor.execute('migrate-set-parameters', { 'tls-creds': '' }).catch(() => {})
    await monitor.execute('object-del', { id: TLS_OBJECT }).catch(() => {})
    await rm(dir, { recursive: true, force: true })
  }
  throw new XenosError('DRIVER_FAILED', `the migration failed: ${reasons.join('; ')}`)
}

function uriOf (to: MigrationChannel['to']): string {
  if ('path' in to) return `unix:${to.path}`
  return `tcp:${to.host.includes(':') ? `[${to.host}]` : to.host}:${to.port}`
}

/** What `query-migrate` reports (the parts used here). */
interface MigrationInfo {
  status?: string
  'error-desc'?: string
  'expected-downtime'?: number
  downtime?: number
  ram?: { transferred: number, remaining: number, total: number, 'dirty-pages-rate'?: number }
}

/** Follows one attempt to its end: undefined once completed, else why it failed and whether it had connected. */
async function follow (monitor: QmpClient, onProgress: (p: MigrationProgress) => void): Promise<{ reason: string, connected: boolean } | undefined> {
  const deadline = Date.now() + CONNECT_DEADLINE_MS
  let connected = false
  for (;;) {
    const info = await monitor.execute<MigrationInfo>('query-migrate')
    // Before it connects QEMU reports `setup` (or nothing yet, just after the command).
    if (info.status === 'active' || info.status === 'completed' || (info.ram?.transferred ?? 0) > 0) connected = true
    if (info.ram !== undefined) {
      onProgress({
        status: info.status ?? 'active',
        transferredBytes: info.ram.transferred,
        remainingBytes: info.ram.remaining,
        totalBytes: info.ram.total,
        dirtyPagesRate: info.ram['dirty-pages-rate'] ?? 0,
        expectedDowntimeMs: info['expected-downtime'] ?? null,
        downtimeMs: info.downtime ?? null,
      })
    }
    if (info.status === 'completed') return undefined
    if (info.status === 'failed' || info.status === 'cancelled') {
      return { reason: info['error-desc'] ?? info.status, connected: connected && (info.ram?.transferred ?? 0) > 0 }
    }
    if (!connected && Date.now() > deadline) {
      await monitor.execute('migrate_cancel')
      await settled(monitor)
      return { reason: `no connection within ${CONNECT_DEADLINE_MS / 1000} s`, connected: false }
    }
    await sleep(POLL_MS)
  }
}

/** Waits until a cancelled attempt has ended, so that another may start. */
async function settled (monitor: QmpClient): Promise<void> {
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline) {
    const { status } = await monitor.execute<MigrationInfo>('query-migrate')
    if (status !== 'cancelling' && status !== 'setup') return
    await sleep(50)
  }
  throw new XenosError('TIMEOUT', 'QEMU did not give up connecting to the destination')
}

/** Makes `key` the one the next attempt presents. */
async function useKey (monitor: QmpClient, dir: string, key: string): Promise<void> {
  await monitor.execute('object-del', { id: TLS_OBJECT }).catch(() => {})
  await writeKey(dir, key)
  await monitor.execute('object-add', { 'qom-type': 'tls-creds-psk', id: TLS_OBJECT, endpoint: 'client', dir, username: PSK_IDENTITY })
  await monitor.execute('migrate-set-parameters', { 'tls-creds': TLS_OBJECT })
}

async function writeKey (dir: string, key: string): Promise<void> {
  if (!/^[0-9a-f]{64}$/.test(key)) throw new XenosError('INVALID_ARGUMENT', 'a migration key is 32 bytes in hex')
  await mkdir(dir, { recursive: true, mode: 0o700 })
  await writeFile(join(dir, 'keys.psk'), `${PSK_IDENTITY}:${key}\n`, { mode: 0o600 })
}
