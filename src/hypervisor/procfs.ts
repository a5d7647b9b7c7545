import { open, readFile, type FileHandle } from 'node:fs/promises'
import type { LogPiece } from '../core/index.ts'

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

/** The last `lines` lines of a log file (none if there is no such file), reading at most its last 64 KiB. */
export async function tailFile (path: string | undefined, lines: number): Promise<string> {
  return (await tailFileFrom(path, lines)).text
}

/** Like tailFile, with the offset where the file ends now: where a reader that follows it goes on. */
export async function tailFileFrom (path: string | undefined, lines: number): Promise<LogPiece> {
  return await readLog(path, async fh => {
    const { size } = await fh.stat()
    const length = Math.min(size, 64 * 1024)
    const buf = Buffer.alloc(length)
    await fh.read(buf, 0, length, size - length)
    return { text: consoleText(buf).replace(/\n$/, '').split('\n').slice(-lines).join('\n'), next: size }
  })
}

/** What a log file holds from byte `from` on, at most `max` bytes of it. */
export async function readFileFrom (path: string | undefined, from: number, max = 256 * 1024): Promise<LogPiece> {
  return await readLog(path, async fh => {
    const { size } = await fh.stat()
    // A log that shrank was started anew: read it from its start.
    const start = from > size ? 0 : from
    const buf = Buffer.alloc(Math.min(size - start, max))
    const { bytesRead } = await fh.read(buf, 0, buf.length, start)
    const whole = wholeCharacters(buf.subarray(0, bytesRead))
    return { text: consoleText(buf.subarray(0, whole)), next: start + whole }
  }, from)
}

/** The length of `buf` without a UTF-8 character it ends inside of: that one comes with the next read. */
function wholeCharacters (buf: Buffer): number {
  for (let back = 1; back <= Math.min(3, buf.length); back++) {
    const b = buf[buf.length - back] ?? 0
    if ((b & 0xc0) === 0x80) continue
    const length = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1
    return length > back ? buf.length - back : buf.length
  }
  return buf.length
}

async function readLog (path: string | undefined, read: (fh: FileHandle) => Promise<LogPiece>, next = 0): Promise<LogPiece> {
  let fh
  try {
    if (path === undefined) throw new Error('no log')
    fh = await open(path, 'r')
  } catch {
    return { text: '', next }
  }
  try {
    return await read(fh)
  } finally {
    await fh.close()
  }
}

/** Consoles carry terminal control sequences (a firmware clearing the screen): the text without them. */
function consoleText (buf: Buffer): string {
  return buf.toString('utf8').replace(/\x1b(\[[0-9;?]*[A-Za-z]|c)/g, '').replace(/\r/g, '')
}
