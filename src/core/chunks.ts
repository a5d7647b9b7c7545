import { z } from 'zod'
import { contentId } from './canonical.ts'

/**
 * Image files (kernels, initramfs images, disks) travel and are stored as fixed-size chunks. A
 * blob's id is the content id of its chunk index, so an index fetched from anyone is checked
 * against the id, and every chunk against the index, before a byte of it is kept.
 */
export const CHUNK_SIZE = 1024 * 1024
/** 64 GiB: also keeps an index (about 67 bytes a chunk) small enough for one message. */
export const MAX_CHUNKS = 65_536

export const BLOB_ID_PATTERN = /^sha256:[0-9a-f]{64}$/
export const blobIdSchema = z.string().regex(BLOB_ID_PATTERN, 'expected sha256: and 64 hex digits')

export const chunkIndexSchema = z.strictObject({
  v: z.literal(1),
  size: z.number().int().nonnegative().max(MAX_CHUNKS * CHUNK_SIZE),
  chunkSize: z.literal(CHUNK_SIZE),
  /** Hex SHA-256 of each chunk, in order; the last may be shorter than chunkSize. */
  chunks: z.array(z.string().regex(/^[0-9a-f]{64}$/)).max(MAX_CHUNKS),
}).refine(i => i.chunks.length === Math.ceil(i.size / i.chunkSize), { message: 'the number of chunks does not match the size' })

export type ChunkIndex = z.infer<typeof chunkIndexSchema>

export function blobIdOf (index: ChunkIndex): string {
  return contentId(index)
}

/** Length in bytes of chunk `i` of a blob. */
export function chunkLength (index: Pick<ChunkIndex, 'size' | 'chunkSize'>, i: number): number {
  return Math.min(index.chunkSize, index.size - i * index.chunkSize)
}
