import { execFileSync } from 'node:child_process'
import { get } from 'node:http'
import { httpGet } from './cluster.ts'

function hasQemu (): boolean {
  try {
    execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

/** Skips a suite of real-VM tests where QEMU is missing, saying how to get it. */
export const skipWithoutQemu = hasQemu() ? false : 'QEMU is not installed (apt-get install qemu-system-x86 qemu-utils)'

/** The value the `counter` example serves, or undefined when it does not answer. */
export async function count (url: string): Promise<number | undefined> {
  const text = await httpGet(`${url}/count`, 1500)
  const n = Number(text?.trim())
  return text === undefined || !Number.isFinite(n) || text.trim() === '' ? undefined : n
}

/** The counter's value read over a fresh connection to 127.0.0.1:`port` (as a client looping with curl does); rejects when the request fails or takes over `timeoutMs`. */
export async function countOnce (port: number, timeoutMs = 30_000): Promise<number> {
  return await new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path: '/count', agent: false, timeout: timeoutMs }, res => {
      let body = ''
      res.on('data', (d: Buffer) => { body += d.toString() })
      res.on('end', () => {
        const n = Number(body.trim())
        if (res.statusCode === 200 && body.trim() !== '' && Number.isFinite(n)) resolve(n)
        else reject(new Error(`HTTP ${res.statusCode ?? '?'}: ${body.slice(0, 80)}`))
      })
      res.on('error', reject)
    })
    req.on('timeout', () => { req.destroy(new Error('timed out')) })
    req.on('error', reject)
  })
}
