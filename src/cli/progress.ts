/**
 * A one-line progress bar on stderr (redrawn in place on a terminal, a line per 10% otherwise).
 */
export function progressBar (label: string, total: number): { update: (done: number) => void, done: () => void } {
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
