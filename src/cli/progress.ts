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
      const width = 30
      const filled = Math.round(frac * width)
      process.stderr.write(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${Math.round(frac * 100)}% ${mib(done)}/${mib(total)} MiB`)
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
 * progress bar for each image file the host fetches for it.
 */
export async function withTransferProgress<T> (api: ApiClient, template: string, work: () => Promise<T>): Promise<T> {
  const bars = new Map<string, ReturnType<typeof progressBar>>()
  let running = true
  const poll = (async () => {
    while (running) {
      const { transfers } = await api.get<{ transfers: Transfer[] }>('/v1/transfers').catch(() => ({ transfers: [] }))
      for (const t of transfers.filter(t => t.template === template)) {
        let bar = bars.get(t.blob)
        if (bar === undefined) {
          bar = progressBar(`pull ${t.blob.slice(7, 19)}`, t.size)
          bars.set(t.blob, bar)
        }
        bar.update(t.held)
      }
      await new Promise(resolve => setTimeout(resolve, 300))
    }
  })()
  let ok = false
  try {
    const result = await work()
    ok = true
    return result
  } finally {
    running = false
    await poll
    for (const bar of bars.values()) if (ok) bar.done(); else bar.stop()
  }
}
