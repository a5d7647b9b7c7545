import type { BlobStore } from '../../src/images/index.ts'
import type { ChunkSource } from '../../src/transfer/index.ts'

/** A chunk source that is honest about what it holds but flips a byte in every chunk it sends. */
export function corrupting (store: BlobStore): ChunkSource {
  return {
    index: async b => await store.index(b),
    holding: async b => await store.holding(b),
    readChunk: async (b, i) => {
      const chunk = Buffer.from((await store.readChunk(b, i))!)
      chunk[7] = chunk[7]! ^ 0x40
      return chunk
    },
  }
}
