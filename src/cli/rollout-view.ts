import type { HostRollout } from '../core/index.ts'
import { barOf } from './progress.ts'
import { hostLabel, table } from './table.ts'

/** How often the table is redrawn on a terminal, so the time column moves while nothing else does. */
const REDRAW_MS = 1000

/**
 * Shows every host's part of a deploy as it goes, on stderr: on a terminal a table redrawn in
 * place, otherwise a line each time a host moves on to another phase or fetches another quarter.
 */
export class RolloutView {
  readonly #names: Map<string, string>
  readonly #tty = process.stderr.isTTY
  readonly #startedAt = Date.now()
  readonly #endedAt = new Map<string, number>()
  readonly #said = new Map<string, string>()
  #parts: HostRollout[] = []
  #drawnLines = 0
  readonly #ticker: NodeJS.Timeout | undefined

  constructor (names: Map<string, string>) {
    this.#names = names
    if (this.#tty) this.#ticker = setInterval(() => { this.#draw() }, REDRAW_MS).unref()
  }

  update (parts: HostRollout[]): void {
    this.#parts = parts
    for (const p of parts) if ((p.phase === 'done' || p.phase === 'failed') && !this.#endedAt.has(p.host)) this.#endedAt.set(p.host, Date.now())
    if (this.#tty) this.#draw()
    else this.#sayChanges()
  }

  /** Leaves the last picture in place; the deploy's result follows on stdout. */
  stop (): void {
    clearInterval(this.#ticker)
  }

  #name (host: string): string {
    return hostLabel(this.#names, host)
  }

  #draw (): void {
    if (this.#parts.length === 0) return
    const now = Date.now()
    const text = table(['HOST', 'PHASE', 'PROGRESS', 'TIME'], this.#parts.map(p => [
      this.#name(p.host), p.phase, progressOf(p), `${(((this.#endedAt.get(p.host) ?? now) - this.#startedAt) / 1000).toFixed(1)} s`,
    ]))
    // Back to the first line of the last picture, and clear it before drawing anew.
    process.stderr.write(`${this.#drawnLines > 0 ? `\x1b[${this.#drawnLines}F\x1b[J` : ''}${text}\n`)
    this.#drawnLines = text.split('\n').length
  }

  #sayChanges (): void {
    for (const p of this.#parts) {
      const quarter = p.phase === 'fetching' && p.fetching !== null && p.fetching.size > 0 ? Math.floor(4 * p.fetching.held / p.fetching.size) : 0
      const key = `${p.phase}/${quarter}`
      if (this.#said.get(p.host) === key) continue
      this.#said.set(p.host, key)
      process.stderr.write(`${this.#name(p.host)}: ${p.phase} ${progressOf(p)}`.trimEnd() + '\n')
    }
  }
}

function progressOf (p: HostRollout): string {
  if (p.phase === 'fetching') return p.fetching === null ? 'starting' : barOf(p.fetching.held, p.fetching.size, 20)
  if (p.phase === 'failed') return `${p.error?.code ?? ''}: ${p.error?.message ?? ''}`
  if (p.phase === 'done') return `${p.instances.length} instance(s)`
  return ''
}
