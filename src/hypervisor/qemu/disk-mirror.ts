import { setTimeout as sleep } from 'node:timers/promises'
import { XenosError, type DiskCopyProgress } from '../../core/index.ts'
import { DISK_EXPORT } from './disk-server.ts'
import { QmpClient } from './qmp.ts'

/** The disk server's image node (see disk-server.ts), the node copied from. */
const SOURCE_NODE = 'disk'
const TARGET_NODE = 'mirror-target'
const JOB = 'mirror'
const POLL_MS = 50

/** What `query-jobs` reports of a job (the parts used here). */
interface JobInfo {
  id: string
  status: string
  'current-progress': number
  'total-progress': number
  error?: string
}

/**
 * Mirrors the disk a disk server serves into the NBD export on unix socket `target`: another
 * host's fresh overlay on the same template image, reached through a tunnel. Only what the
 * instance itself wrote is copied (sync=top), while the VM runs on. Resolves once the copy has
 * caught up; from then on every write reaches both disks before the VM sees it done
 * (write-blocking), so the copy stays whole until `finishMirror`.
 */
export async function startMirror (monitor: string, target: string, onProgress: (p: DiskCopyProgress) => void): Promise<void> {
  await withMonitor(monitor, async qmp => {
    // A copy an earlier run of the host left unfinished (it stopped mid-way) is in the way.
    await clear(qmp)
    await qmp.execute('blockdev-add', { driver: 'nbd', 'node-name': TARGET_NODE, server: { type: 'unix', path: target }, export: DISK_EXPORT })
    await qmp.execute('blockdev-mirror', { 'job-id': JOB, device: SOURCE_NODE, target: TARGET_NODE, sync: 'top', 'copy-mode': 'write-blocking', 'auto-dismiss': false })
    for (;;) {
      const job = await jobOf(qmp)
      onProgress({ copiedBytes: job['current-progress'], totalBytes: job['total-progress'] })
      if (job.status === 'ready') return
      if (job.error !== undefined || job.status === 'concluded' || job.status === 'aborting') throw new XenosError('DRIVER_FAILED', `the disk copy failed: ${job.error ?? job.status}`)
      await sleep(POLL_MS)
    }
  })
}

/** Ends a mirror once nothing writes to the disk any more: the copy is then whole and on its own. */
export async function finishMirror (monitor: string): Promise<void> {
  await withMonitor(monitor, async qmp => {
    // Cancelling a mirror that is ready completes it without switching the source over to the copy.
    await qmp.execute('block-job-cancel', { device: JOB })
    for (;;) {
      const job = await jobOf(qmp)
      if (job.status === 'concluded') {
        if (job.error !== undefined) throw new XenosError('DRIVER_FAILED', `the disk copy failed at the end: ${job.error}`)
        break
      }
      await sleep(POLL_MS)
    }
    await qmp.execute('job-dismiss', { id: JOB })
    await qmp.execute('blockdev-del', { 'node-name': TARGET_NODE })
  })
}

/** Stops a mirror at whatever stage it is, and forgets its target; quiet when there is none. */
export async function dropMirror (monitor: string): Promise<void> {
  await withMonitor(monitor, clear)
}

async function clear (qmp: QmpClient): Promise<void> {
    await qmp.execute('block-job-cancel', { device: JOB, force: true }).catch(() => {})
    for (let i = 0; i < 200; i++) {
      const job = (await qmp.execute<JobInfo[]>('query-jobs')).find(j => j.id === JOB)
      if (job === undefined) break
      if (job.status === 'concluded') {
        await qmp.execute('job-dismiss', { id: JOB })
        break
      }
      await sleep(POLL_MS)
    }
    await qmp.execute('blockdev-del', { 'node-name': TARGET_NODE }).catch(() => {})
}

async function withMonitor<T> (path: string, fn: (qmp: QmpClient) => Promise<T>): Promise<T> {
  const qmp = await QmpClient.connect(path)
  try {
    return await fn(qmp)
  } finally {
    qmp.close()
  }
}

async function jobOf (qmp: QmpClient): Promise<JobInfo> {
  const job = (await qmp.execute<JobInfo[]>('query-jobs')).find(j => j.id === JOB)
  if (job === undefined) throw new XenosError('DRIVER_FAILED', 'the disk copy ended unexpectedly')
  return job
}
