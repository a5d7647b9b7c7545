import { connect, type Socket } from 'node:net'
import { z } from 'zod'

/** What the guest agent reports every two seconds (see guest/xenos-agent). */
export const guestStateSchema = z.object({
  type: z.literal('state'),
  uptime: z.number().nonnegative(),
  memTotalKiB: z.number().int().nonnegative(),
  memAvailableKiB: z.number().int().nonnegative(),
  rxBytes: z.number().int().nonnegative(),
  txBytes: z.number().int().nonnegative(),
  exit: z.number().int().nullable(),
  services: z.array(z.object({
    name: z.string().max(31),
    port: z.number().int().min(1).max(65535),
    protocol: z.string().max(8),
    health: z.string().max(256),
  })).max(32),
})

export type GuestState = z.infer<typeof guestStateSchema> & { receivedAt: number }

/** Longest line accepted from a guest; a guest is no more trusted than a peer. */
const MAX_LINE = 16 * 1024

/**
 * The host's end of the notice board: a connection to the VM's virtio-serial port that keeps the
 * guest's latest report and carries requests to it. It reconnects while the VM lives, so a
 * restarted xenosd hears its guests again.
 */
export class AgentLink {
  readonly #path: string
  #socket: Socket | undefined
  #buffer = ''
  #closed = false
  #retry: NodeJS.Timeout | undefined
  latest: GuestState | undefined

  constructor (path: string) {
    this.#path = path
    this.#connect()
  }

  #connect (): void {
    if (this.#closed) return
    const socket = connect(this.#path)
    socket.on('data', chunk => { this.#onData(chunk.toString('utf8')) })
    socket.on('error', () => {})
    socket.on('close', () => {
      if (this.#socket === socket) this.#socket = undefined
      if (!this.#closed) this.#retry = setTimeout(() => { this.#connect() }, 1000)
    })
    this.#socket = socket
  }

  #onData (text: string): void {
    this.#buffer += text
    if (this.#buffer.length > MAX_LINE && !this.#buffer.includes('\n')) this.#buffer = ''
    for (;;) {
      const nl = this.#buffer.indexOf('\n')
      if (nl < 0) return
      const line = this.#buffer.slice(0, nl)
      this.#buffer = this.#buffer.slice(nl + 1)
      try {
        const parsed = guestStateSchema.safeParse(JSON.parse(line))
        if (parsed.success) this.latest = { ...parsed.data, receivedAt: Date.now() }
      } catch {}
    }
  }

  /** Asks the guest to shut down cleanly; false when the guest is not listening. */
  requestShutdown (): boolean {
    if (this.#socket === undefined || !this.#socket.writable || this.latest === undefined) return false
    this.#socket.write('{"type":"shutdown"}\n')
    return true
  }

  close (): void {
    this.#closed = true
    clearTimeout(this.#retry)
    this.#socket?.destroy()
  }
}
