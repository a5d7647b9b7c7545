import { z } from 'zod'
import type { DiskCopyProgress, MigrationProgress } from './driver.ts'
import { instanceIdSchema, peerIdSchema } from './views.ts'

/** Where a live migration is, for the progress view. */
export interface MigrationStatus extends Partial<MigrationProgress> {
  phase: 'preparing' | 'copying disk' | 'copying' | 'switching' | 'done'
  /** How far the copy of the disk got, when it moves too. */
  disk?: DiskCopyProgress
}

export const migrationResultSchema = z.strictObject({
  id: instanceIdSchema,
  from: peerIdSchema,
  to: peerIdSchema,
  totalMs: z.number().nonnegative(),
  downtimeMs: z.number().nonnegative().nullable(),
  transferredBytes: z.number().nonnegative(),
  /** Bytes of disk copied to the destination: 0 when the disk stayed with the source. */
  copiedDiskBytes: z.number().nonnegative(),
  /** How the memory went: straight to the destination's port, or through the overlay (slower). */
  memoryPath: z.enum(['direct', 'overlay']),
})
export type MigrationResult = z.infer<typeof migrationResultSchema>

/** Where a drain is: which instance moves where, and that move's progress. */
export interface DrainStatus {
  instance: string
  to: string
  index: number
  total: number
  migration: MigrationStatus
}

export const drainResultSchema = z.strictObject({
  moved: z.array(migrationResultSchema),
  stayed: z.array(z.strictObject({ id: instanceIdSchema, reason: z.string() })),
})
export type DrainResult = z.infer<typeof drainResultSchema>
