/**
 * Per-VM overhead on a host: resident memory of each QEMU next to the guest RAM it was given,
 * and of xenosd itself with no VM and with 10 running `counter` VMs. Writes
 * bench/results/vm-overhead-latest.json.
 *
 *   npm run bench:overhead
 */
import { execFileSync } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { cli, eventually, httpGet, ROOT, startHost, stopHost, tempDir } from '../test/helpers/cluster.ts'
import { round, summary } from './stats.ts'

const VMS = 10
const GUEST_MIB = 96

async function rssMiB (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024
}

const host = await startHost({ name: 'bench-overhead', extraArgs: ['--cpu', '2', '--memory', '4096', '--overcommit-cpu', '8'] })
const user = join(await tempDir('bench-keys'), 'user.pem')
try {
  await cli(host, user, ['template', 'build', join(ROOT, 'examples/counter')])
  await sleep(2000)
  const idle = await rssMiB(host.info.pid)
  const deployed = (await cli(host, user, ['deploy', 'counter', '--count', String(VMS)])).instances
  await Promise.all(deployed.map(async (i: any) => await eventually(async () => await httpGet(`${i.endpoints[0].url}/count`, 1000), 600_000, `VM ${i.id}`)))
  await sleep(5000)
  const qemu: number[] = []
  for (const i of deployed) {
    const pid = Number(execFileSync('pgrep', ['-f', `xenos.id=${i.id}`]).toString().trim().split('\n')[0])
    qemu.push(await rssMiB(pid))
  }
  const busy = await rssMiB(host.info.pid)
  for (const i of deployed) await cli(host, user, ['instance', 'destroy', i.id])
  const result = {
    benchmark: 'vm-overhead',
    date: new Date().toISOString(),
    vms: VMS,
    guestMiB: GUEST_MIB,
    qemuRssMiB: summary(qemu),
    qemuRssMinusGuestMiB: round(summary(qemu).mean - GUEST_MIB),
    xenosdRssMiB: { idle: round(idle), withVms: round(busy), perVm: round((busy - idle) / VMS, 2) },
  }
  await writeFile(join(ROOT, 'bench/results/vm-overhead-latest.json'), JSON.stringify(result, null, 2) + '\n')
  console.log('| measure | value |')
  console.log('|---|---|')
  console.log(`| QEMU RSS per VM, mean / max (MiB) | ${result.qemuRssMiB.mean} / ${result.qemuRssMiB.max} |`)
  console.log(`| guest RAM per VM (MiB) | ${GUEST_MIB} |`)
  console.log(`| QEMU RSS minus guest RAM, mean (MiB) | ${result.qemuRssMinusGuestMiB} |`)
  console.log(`| xenosd RSS idle / with ${VMS} VMs (MiB) | ${result.xenosdRssMiB.idle} / ${result.xenosdRssMiB.withVms} |`)
  console.log(`| xenosd RSS per VM (MiB) | ${result.xenosdRssMiB.perVm} |`)
} finally {
  await stopHost(host)
}
