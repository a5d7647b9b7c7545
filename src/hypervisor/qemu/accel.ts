import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'

export type Accelerator = 'kvm' | 'tcg'

const PROBE_TIMEOUT_MS = 8000

/**
 * KVM when it really works, else TCG. `/dev/kvm` can exist and still fail (nested
 * virtualisation that asserts or hangs), so the probe boots the guest kernel under KVM with no
 * root disk: a working KVM reaches the kernel's panic, reboots and exits within a second or two.
 */
export async function probeAccelerator (qemu: string, kernel: string): Promise<Accelerator> {
  if (!existsSync('/dev/kvm')) return 'tcg'
  return await new Promise<Accelerator>(resolve => {
    const child = spawn(qemu, [
      '-M', 'q35', '-accel', 'kvm', '-cpu', 'host', '-m', '64', '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
      '-kernel', kernel, '-append', 'console=ttyS0 panic=-1', '-serial', 'stdio',
    ], { stdio: ['ignore', 'pipe', 'ignore'] })
    let output = ''
    child.stdout.on('data', (d: Buffer) => { output += d.toString() })
    const timer = setTimeout(() => { child.kill('SIGKILL') }, PROBE_TIMEOUT_MS)
    child.once('exit', code => {
      clearTimeout(timer)
      resolve(code === 0 && /Kernel panic|Linux version/.test(output) ? 'kvm' : 'tcg')
    })
    child.once('error', () => { clearTimeout(timer); resolve('tcg') })
  })
}
