/**
 * Blobs held by work under way (a pull, a read of another host's file, a checkpoint being kept),
 * counted: a blob two pieces of work hold stays held until both let it go. Garbage collection
 * keeps what is held.
 */
export class HeldBlobs {
  readonly #counts = new Map<string, number>()

  hold (blobs: Iterable<string>): void {
    for (const b of blobs) this.#counts.set(b, (this.#counts.get(b) ?? 0) + 1)
  }

  /** Lets `blobs` go once each; returns those no work holds any more. */
  release (blobs: Iterable<string>): string[] {
    const freed: string[] = []
    for (const b of blobs) {
      const n = (this.#counts.get(b) ?? 1) - 1
      if (n > 0) {
        this.#counts.set(b, n)
        continue
      }
      this.#counts.delete(b)
      freed.push(b)
    }
    return freed
  }

  /** Holds `blobs` while `work` runs. */
  async during<T> (blobs: string[], work: () => Promise<T>): Promise<T> {
    this.hold(blobs)
    try {
      return await work()
    } finally {
      this.release(blobs)
    }
  }

  has (blob: string): boolean {
    return this.#counts.has(blob)
  }

  list (): string[] {
    return [...this.#counts.keys()]
  }
}
