/**
 * Work asked for in bursts, done once: the first `ask` sets `fn` to run `delayMs` later, and asks
 * until then join it (unlike a debounce, later asks do not put it off).
 */
export class Soon {
  readonly #delayMs: number
  readonly #fn: () => void
  #timer: NodeJS.Timeout | undefined

  constructor (delayMs: number, fn: () => void) {
    this.#delayMs = delayMs
    this.#fn = fn
  }

  ask (): void {
    if (this.#timer !== undefined) return
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      this.#fn()
    }, this.#delayMs)
  }

  cancel (): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
  }
}
