import { setTimeout as sleep } from 'node:timers/promises'
import { XenosError, type DiskCopyProgress } from '../../core/index.ts'
import { DISK_EXPORT } from './disk-server.ts'
import { QmpClient } from './qmp.ts'

const POLL_MS = 50

/** One image a disk server serves, and the export of the other host's server it is copied into. */
export interface MirroredImage {
  node: string
  export: string
}

/** The disk server's own disk (see disk-server.ts). */
export const DISK_IMAGE: MirroredImage = { node: 'disk', export: DISK_EXPORT }

/** What `query-jobs` reports of a job (the parts used here). */
interface JobInfo {
  id: string
  status: string
  'current-progress': number
  'total-progress': number
  error?: string
}

// The disk's job and target keep the names of the time only the disk was copied, so that a copy
// a host of that time left unfinished is cleared too.
const jobOf = (image: MirroredImage): string => image === DISK_IMAGE ? 'mirror' : `mirror-${image.node}`
const targetOf = (image: MirroredImage): string => image === DISK_IMAGE ? 'mirror-target' : `mirror-target-${image.node}`

/**
 * Mirrors the images a disk server serves into the NBD exports on unix socket `target`: another
 * host's fresh overlay on the same template image, and empty images as large as the staged ones,
 * reached through a tunnel. Of the disk only what the instance itself wrote is copied (sync=top),
 * while the VM runs on. Resolves once every copy has caught up; from then on every write reaches
 * both sides before the VM sees it done (write-blocking), so the copies stay whole until
 * `finishMirror`.
 */
export async function startMirror (monitor: string, target: string, images: MirroredImage[], onProgress: (p: DiskCopyProgress) => void): Promise<void> {
  await withMonitor(monitor, async qmp => {
    // A copy an earlier run of the host left unfinished (it stopped mid-way) is in the way.
    await clear(qmp, images)
    for (const image of images) {
      await qmp.execute('blockdev-add', { driver: 'nbd', 'node-name': targetOf(image), server: { type: 'unix', path: target }, export: image.export })
      await qmp.execute('blockdev-mirror', { 'job-id': jobOf(image), device: image.node, target: targetOf(image), sync: image === DISK_IMAGE ? 'top' : 'full', 'copy-mode': 'write-blocking', 'auto-dismiss': false })
    }
    for (;;) {
      const jobs = await jobsOf(qmp, images)
      onProgress({ copiedBytes: sum(jobs, j => j['current-progress']), totalBytes: sum(jobs, j => j['total-progress']) })
      if (jobs.every(j => j.status === 'ready')) return
      const failed = jobs.find(j => j.error !== undefined || j.status === 'concluded' || j.status === 'aborting')
      if (failed !== undefined) throw new XenosError('DRIVER_FAILED', `the disk copy failed: ${failed.error ?? failed.status}`)
      await sleep(POLL_MS)
    }
  })
}

/** Ends the mirrors once nothing writes to the images any more: the copies are then whole and on their own. */
export async function finishMirror (monitor: string, images: MirroredImage[]): Promise<void> {
  await withMonitor(monitor, async qmp => {
    for (const image of images) {
      // Cancelling a mirror that is ready completes it without switching the source over to the copy.
      await qmp.execute('block-job-cancel', { device: jobOf(image) })
      for (;;) {
        const [job] = await jobsOf(qmp, [image])
        if (job?.status === 'concluded') {
          if (job.error !== undefined) throw new XenosError('DRIVER_FAILED', `the disk copy failed at the end: ${job.error}`)
          break
        }
        await sleep(POLL_MS)
      }
      await qmp.execute('job-dismiss', { id: jobOf(image) })
      await qmp.execute('blockdev-del', { 'node-name': targetOf(image) })
    }
  })
}

/** Stops the mirrors at whatever stage they are, and forgets their targets; quiet when there are none. */
export async function dropMirror (monitor: string, images: MirroredImage[]): Promise<void> {
  await withMonitor(monitor, async qmp => { await clear(qmp, images) })
}

async function clear (qmp: QmpClient, images: MirroredImage[]): Promise<void> {
  for (const image of images) {
    const id = jobOf(image)
    await qmp.execute('block-job-cancel', { device: id, force: true }).catch(() => {})
    for (let i = 0; i < 200; i++) {
      const job = (await qmp.execute<JobInfo[]>('query-jobs')).find(j => j.id === id)
      if (job === undefined) break
      if (job.status === 'concluded') {
        await qmp.execute('job-dismiss', { id })
        break
      }
      await sleep(POLL_MS)
    }
    await qmp.execute('blockdev-del', { 'node-name': targetOf(image) }).catch(() => {})
  }
}

async function withMonitor<T> (path: string, fn: (qmp: QmpClient) => Promise<T>): Promise<T> {
  const qmp = await QmpClient.connect(path)
  try {
    return await fn(qmp)
  } finally {
    qmp.close()
  }
}

async function jobsOf (qmp: QmpClient, images: MirroredImage[]): Promise<JobInfo[]> {
  const all = await qmp.execute<JobInfo[]>('query-jobs')
  return images.map(image => {
    const job = all.find(j => j.id === jobOf(image))
    if (job === undefined) throw new XenosError('DRIVER_FAILED', 'the disk copy ended unexpectedly')
    return job
  })
}

function sum<T> (items: T[], of: (t: T) => number): number {
  return items.reduce((n, t) => n + of(t), 0)
}
