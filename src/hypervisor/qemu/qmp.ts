import { connect, type Socket } from 'node:net'
import { XenosError } from '../../core/index.ts'

interface Pending {
  resolve: (value: unknown) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

export const QMP_TIMEOUT_MS = 10_000

/**
 * A small client for QEMU's machine protocol over a unix socket: negotiates capabilities, sends
 * commands with ids and matches their replies. Never the
 * human monitor: QMP replies are structured and every command's completion is awaited. The
 * driver asks for state (query-status, query-migrate) rather than following events.
 */
export class QmpClient {
  readonly #socket: Socket
  readonly #pending = new Map<number, Pending>()
  #nextId = 1
  #buffer = ''
  #closed = false
  readonly closed: Promise<void>

  private constructor (socket: Socket) {
    this.#socket = socket
    this.closed = new Promise(resolve => {
      socket.once('close', () => {
        this.#closed = true
        for (const p of this.#pending.values()) {
          clearTimeout(p.timer)
          p.reject(new XenosError('DRIVER_FAILED', 'the QEMU monitor connection closed'))
        }
        this.#pending.clear()
        resolve()
      })
    })
    socket.on('error', () => {})
  }

  /** Connects, reads the greeting and leaves capability negotiation mode. */
  static async connect (path: string, timeoutMs = QMP_TIMEOUT_MS): Promise<QmpClient> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(path)
      const timer = setTimeout(() => { s.destroy(); reject(new XenosError('TIMEOUT', `QMP socket ${path} did not answer`)) }, timeoutMs)
      s.once('connect', () => { clearTimeout(timer); resolve(s) })
      s.once('error', err => { clearTimeout(timer); reject(new XenosError('DRIVER_FAILED', `cannot connect to QMP at ${path}: ${err.message}`)) })
    })
    const client = new QmpClient(socket)
    const greeting = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new XenosError('TIMEOUT', 'QEMU sent no QMP greeting')) }, timeoutMs)
      client.#onGreeting = () => { clearTimeout(timer); resolve() }
    })
    socket.on('data', chunk => { client.#onData(chunk.toString('utf8')) })
    await greeting
    await client.execute('qmp_capabilities')
    return client
  }

  #onGreeting: (() => void) | undefined

  #onData (text: string): void {
    this.#buffer += text
    for (;;) {
      const nl = this.#buffer.indexOf('\n')
      if (nl < 0) break
      const line = this.#buffer.slice(0, nl).trim()
      this.#buffer = this.#buffer.slice(nl + 1)
      if (line === '') continue
      let msg: Record<string, unknown>
      try {
        msg = JSON.parse(line) as Record<string, unknown>
      } catch {
        continue
      }
      if ('QMP' in msg) {
        this.#onGreeting?.()
        this.#onGreeting = undefined
      } else if (typeof msg.id === 'number') {
        // Replies carry our ids; asynchronous events (no id) are not needed: state is queried.
        const p = this.#pending.get(msg.id)
        if (p === undefined) continue
        this.#pending.delete(msg.id)
        clearTimeout(p.timer)
        if ('error' in msg) {
          const e = msg.error as { class?: string, desc?: string }
          p.reject(new XenosError('DRIVER_FAILED', `QEMU refused: ${e.desc ?? e.class ?? 'unknown error'}`))
        } else {
          p.resolve(msg.return)
        }
      }
    }
  }

  async execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = QMP_TIMEOUT_MS): Promise<T> {
    if (this.#closed) throw new XenosError('DRIVER_FAILED', 'the QEMU monitor connection is closed')
    const id = this.#nextId++
    return await new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id)
        reject(new XenosError('TIMEOUT', `QEMU did not answer ${command} within ${timeoutMs} ms`))
      }, timeoutMs)
      this.#pending.set(id, { resolve: v => { resolve(v as T) }, reject, timer })
      this.#socket.write(JSON.stringify(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id }) + '\n')
    })
  }

  get isClosed (): boolean {
    return this.#closed
  }

  close (): void {
    this.#socket.destroy()
  }
}
