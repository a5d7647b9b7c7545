import { readFile } from 'node:fs/promises'

/** Small statistics helpers shared by the benchmarks. */
export function percentile (values: number[], p: number): number {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i] ?? NaN
}

export function summary (values: number[]): { n: number, p50: number, p95: number, max: number, mean: number } {
  return {
    n: values.length,
    p50: round(percentile(values, 50)),
    p95: round(percentile(values, 95)),
    max: round(Math.max(...values)),
    mean: round(values.reduce((a, b) => a + b, 0) / Math.max(1, values.length)),
  }
}

export function round (n: number, digits = 1): number {
  const f = 10 ** digits
  return Math.round(n * f) / f
}

/** Seconds `fn` takes. */
export async function timed (fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now()
  await fn()
  return (performance.now() - t0) / 1000
}

/**
 * CPU seconds (user and system) process `pid` has used so far, and its resident memory now: all
 * of it, and the part that is its own (anonymous: heap, stacks), without the pages of files it
 * maps (the runtime's binary, shared by every process that runs it).
 */
export async function procStat (pid: number | undefined): Promise<{ cpuSeconds: number, rssMiB: number, anonMiB: number }> {
  const [stat, status] = await Promise.all([readFile(`/proc/${pid}/stat`, 'utf8'), readFile(`/proc/${pid}/status`, 'utf8')])
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // Ticks are 1/100 s on Linux.
  const kib = (field: string): number => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0)
  return { cpuSeconds: (Number(fields[11]) + Number(fields[12])) / 100, rssMiB: kib('VmRSS') / 1024, anonMiB: kib('RssAnon') / 1024 }
}
