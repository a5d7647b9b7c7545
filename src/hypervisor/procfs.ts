import { open, readFile } from 'node:fs/promises'

/**
 * Process facts from /proc. A pid alone can be reused after a restart; a pid together with its
 * start time (field 22 of /proc/PID/stat) names one process for good.
 */
export async function processStartTime (pid: number, includeZombie = false): Promise<number | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    if (fields[0] === 'Z' && !includeZombie) return undefined
    return Number(fields[19])
  } catch {
    return undefined
  }
}

export async function isSameProcess (pid: number, startTime: number): Promise<boolean> {
  return (await processStartTime(pid)) === startTime
}

/** CPU seconds and resident bytes of one process (used where there are no cgroups). */
export async function processUsage (pid: number): Promise<{ cpuSeconds: number, memoryBytes: number }> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const ticks = Number(fields[11]) + Number(fields[12])
    const status = await readFile(`/proc/${pid}/status`, 'utf8')
    const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0)
    return { cpuSeconds: ticks / 100, memoryBytes: rssKb * 1024 }
  } catch {
    return { cpuSeconds: 0, memoryBytes: 0 }
  }
}

/** The last `lines` lines of a log file, reading at most its last 64 KiB. */
export async function tailFile (path: string, lines: number): Promise<string> {
  let fh
  try {
    fh = await open(path, 'r')
  } catch {
    return ''
  }
  try {
    const { size } = await fh.stat()
    const length = Math.min(size, 64 * 1024)
    const buf = Buffer.alloc(length)
    await fh.read(buf, 0, length, size - length)
    // Consoles carry terminal control sequences (a firmware clearing the screen): keep the text.
    const text = buf.toString('utf8').replace(/\x1b(\[[0-9;?]*[A-Za-z]|c)/g, '').replace(/\r/g, '').replace(/\n$/, '')
    return text.split('\n').slice(-lines).join('\n')
  } finally {
    await fh.close()
  }
}
