import type { MigrationStatus } from '../core/index.ts'
import type { ApiClient } from './client.ts'

/**
 * A one-line progress bar on stderr (redrawn in place on a terminal, a line per 10% otherwise).
 */
export function progressBar (label: string, total: number): { update: (done: number) => void, done: () => void, stop: () => void } {
  const tty = process.stderr.isTTY
  let lastTenth = -1
  const draw = (done: number): void => {
    const frac = total > 0 ? Math.min(1, done / total) : 1
    if (tty) {
      process.stderr.write(`\r${label} ${barOf(done, total)}`)
    } else if (Math.floor(frac * 10) > lastTenth) {
      lastTenth = Math.floor(frac * 10)
      process.stderr.write(`${label} ${lastTenth * 10}%\n`)
    }
  }
  return {
    update: draw,
    done: () => {
      draw(total)
      if (tty) process.stderr.write('\n')
    },
    stop: () => {
      if (tty) process.stderr.write('\n')
    },
  }
}

/** `[#####.....] 50% 5.0/10.0 MiB` */
export function barOf (done: number, total: number, width = 30): string {
  const frac = total > 0 ? Math.min(1, done / total) : 1
  const filled = Math.round(frac * width)
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${Math.round(frac * 100)}% ${mib(done)}/${mib(total)} MiB`
}

function mib (n: number): string {
  return (n / 1024 / 1024).toFixed(1)
}

/** Passes chunks through, reporting the running byte count. */
export async function * counting (source: AsyncIterable<Uint8Array | string>, onBytes: (n: number) => void): AsyncGenerator<Uint8Array> {
  let n = 0
  for await (const chunk of source) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
    n += bytes.byteLength
    onBytes(n)
    yield bytes
  }
}

interface Transfer { template: string, blob: string, size: number, held: number }

/**
 * Runs `work` (a request that makes the host fetch template `template`) and meanwhile shows a
 * progress bar for each image file the host fetches for it, fed by the host's transfer events.
 */
export async function withTransferProgress<T> (api: ApiClient, template: string, work: () => Promise<T>): Promise<T> {
  const bars = new Map<string, ReturnType<typeof progressBar>>()
  const stop = new AbortController()
  const listening = (async () => {
    try {
      for await (const { data } of api.events('/v1/transfers/events', stop.signal)) {
        const t = data as Transfer
        if (t.template !== template) continue
        let bar = bars.get(t.blob)
        if (bar === undefined) {
          bar = progressBar(`pull ${t.blob.slice(7, 19)}`, t.size)
          bars.set(t.blob, bar)
        }
        bar.update(t.held)
      }
    } catch {}
  })()
  let ok = false
  try {
    const result = await work()
    ok = true
    return result
  } finally {
    stop.abort()
    await listening
    for (const bar of bars.values()) if (ok) bar.done(); else bar.stop()
  }
}

/**
 * Shows a live migration as it goes, on stderr: on a terminal one line redrawn in place (phase,
 * disk copied, memory sent, how fast the guest dirties it, the downtime QEMU expects), otherwise
 * a line per phase.
 */
export function migrationView (): { update: (s: MigrationStatus) => void, stop: () => void } {
  const tty = process.stderr.isTTY
  let phase = ''
  return {
    update: s => {
      const detail = s.phase === 'copying disk' && s.disk !== undefined
        ? ` ${barOf(s.disk.copiedBytes, s.disk.totalBytes, 20)} of what the instance wrote`
        : s.totalBytes === undefined
          ? ''
          : ` ${barOf(s.totalBytes - (s.remainingBytes ?? 0), s.totalBytes, 20)} sent ${mib(s.transferredBytes ?? 0)} MiB, dirty ${s.dirtyPagesRate ?? 0} pages/s${s.expectedDowntimeMs == null ? '' : `, expected downtime ${s.expectedDowntimeMs} ms`}`
      if (tty) process.stderr.write(`\r\x1b[K${s.phase}${detail}`)
      else if (s.phase !== phase) process.stderr.write(`${s.phase}${detail}\n`)
      phase = s.phase
    },
    stop: () => {
      if (tty && phase !== '') process.stderr.write('\n')
    },
  }
}
