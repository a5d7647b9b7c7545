/** Renders rows as an aligned text table with a header line. */
export function table (headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map(r => (r[i] ?? '').length)))
  const line = (cells: string[]): string => cells.map((c, i) => i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()
  return [line(headers), ...rows.map(line)].join('\n')
}

/** Peer ids are long: tables show their last characters, which are the distinctive part. */
export function shortId (id: string, keep = 10): string {
  return id.length <= keep + 1 ? id : `…${id.slice(-keep)}`
}

/** A host as tables show it: its name when known, else the end of its peer id. */
export function hostLabel (names: ReadonlyMap<string, string>, id: string): string {
  return names.get(id) ?? shortId(id)
}

export function ago (ms: number, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - ms) / 1000))
  if (s < 60) return `${s}s ago`
  if (s < 3600) return `${Math.round(s / 60)}m ago`
  if (s < 86400) return `${Math.round(s / 3600)}h ago`
  return `${Math.round(s / 86400)}d ago`
}

export function bytes (n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024
    i++
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`
}

/** A share (0–1) as a percentage. */
export function percent (share: number): string {
  return `${(share * 100).toFixed(1)}%`
}
