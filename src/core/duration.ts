/** Milliseconds in each unit a duration may be written in. */
const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/**
 * `500ms`, `30s`, `5m`, `1h30m`, `2d` (a bare number is seconds), as milliseconds; undefined
 * for anything else. One grammar for durations wherever a user writes one: descriptions and
 * the CLI's options.
 */
export function durationMs (text: string): number | undefined {
  if (/^\d{1,9}$/.test(text)) return Number(text) * 1000
  const parts = [...text.matchAll(/(\d{1,9})(ms|s|m|h|d)/g)]
  if (parts.length === 0 || parts.map(p => p[0]).join('') !== text) return undefined
  return parts.reduce((n, [, count = '0', unit = 's']) => n + Number(count) * (UNITS[unit] ?? 1000), 0)
}
