import { constants } from 'node:fs'
import { access, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import pino from 'pino'
import pretty from 'pino-pretty'
import { buildApp } from '../api/index.ts'
import { XenosError } from '../core/index.ts'
import { Host, type HostOptionsInput } from '../node/index.ts'
import { writeFileAtomic } from '../store/index.ts'

/** What `xenosd` writes to `DATA/host.json` so scripts can chain hosts. */
export interface HostFile {
  peerId: string
  multiaddrs: string[]
  api: string
  /** The keys that operate the host (their owner ids). */
  operators: string[]
  pid: number
}

/**
 * Runs one host until SIGTERM or SIGINT: starts it, serves the API, writes `host.json`, logs to
 * stdout and `DATA/xenosd.log`. A clean stop leaves instances running for the next start.
 */
export async function runDaemon (options: HostOptionsInput & { dataDir: string }): Promise<void> {
  await prepareDataDir(options.dataDir)
  // Levels by name, and the host and process each line is from (journald and log shippers keep them).
  const log = pino({ level: options.logLevel ?? 'info', formatters: { level: label => ({ level: label }) } }, pino.multistream([
    // A person at a terminal reads lines; journald, a pipe and the file get JSON.
    { level: 'trace', stream: process.stdout.isTTY ? pretty({ sync: true, singleLine: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' }) : process.stdout },
    { level: 'trace', stream: pino.destination({ dest: join(options.dataDir, 'xenosd.log'), append: true, sync: true }) },
  ]))
  const host = await Host.create(options, log)
  const app = await buildApp(host)
  const api = host.options.api
  // Listen first so the host's first advert already carries its API address.
  host.apiUrl = await app.listen({ host: api.host, port: api.port }).catch((err: unknown) => { throw inUse(err, `the API address ${api.host}:${api.port}`, '--api') })
  await host.start().catch((err: unknown) => { throw inUse(err, `an overlay address (${host.options.listen.join(', ')})`, '--listen') })
  const address = host.apiUrl
  const file: HostFile = { peerId: host.overlay.peerId, multiaddrs: host.overlay.multiaddrs(), api: address, operators: [...host.verifier.operators], pid: process.pid }
  await writeFileAtomic(join(options.dataDir, 'host.json'), JSON.stringify(file, null, 2) + '\n')
  log.info({ api: address, peerId: file.peerId }, 'xenosd ready')

  let stopping = false
  const shutdown = async (signal: string): Promise<void> => {
    if (stopping) return
    stopping = true
    log.info({ signal }, 'shutting down; instances keep running')
    const force = setTimeout(() => { process.exit(1) }, 10_000)
    force.unref()
    await app.close()
    await host.stop()
    process.exit(0)
  }
  process.on('SIGTERM', () => { void shutdown('SIGTERM') })
  process.on('SIGINT', () => { void shutdown('SIGINT') })
}

/** Makes the data dir and checks that it can be written: else the first to fail is SQLite, with a message about a database. */
async function prepareDataDir (dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 })
    await access(dir, constants.W_OK | constants.X_OK)
  } catch (err) {
    throw new XenosError('DATA_DIR_UNUSABLE', `cannot use ${dir} as the data dir (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): give xenosd one it can write with --data, or fix its owner and mode`)
  }
}

/** ADDRESS_IN_USE when `err`, or an error under it, is a listen that found `what` taken; else `err`. */
function inUse (err: unknown, what: string, flag: string): unknown {
  const taken = (e: unknown): boolean => {
    if (!(e instanceof Error)) return false
    if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE' || /EADDRINUSE/.test(e.message)) return true
    return taken(e.cause) || (e instanceof AggregateError && e.errors.some(taken))
  }
  return taken(err) ? new XenosError('ADDRESS_IN_USE', `${what} is in use by another program (another xenosd?): stop it, or choose another address with ${flag}`) : err
}
