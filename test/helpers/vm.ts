import { execFileSync } from 'node:child_process'
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
