/** Runs actions on one key one after another (e.g. pause and stop on the same instance). */
export class KeyedLock {
  readonly #tails = new Map<string, Promise<unknown>>()

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(key) ?? Promise.resolve()
    const next = previous.catch(() => {}).then(fn)
    this.#tails.set(key, next)
    try {
      return await next
    } finally {
      if (this.#tails.get(key) === next) this.#tails.delete(key)
    }
  }
}
