/**
 * Per-VM overhead on a host: resident memory of each QEMU next to the guest RAM it was given,
 * broken down by what holds it (from /proc/PID/smaps), and of xenosd itself with no VM and with
 * 10 running `counter` VMs. Writes bench/results/vm-overhead-latest.json.
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

interface QemuMemory {
  rss: number
  pss: number
  /** The guest's RAM: the anonymous mapping of the guest's size. */
  guestRam: number
  /** TCG's buffer of translated guest code (the anonymous executable mapping); none under KVM. */
  tcgCode: number
  /** QEMU's own heap, stacks, device state and firmware copies. */
  qemuPrivate: number
  /** QEMU's binary, libraries and the boot files it maps, as PSS: shared by all VMs on the host. */
  sharedFiles: number
}

/** Resident memory of one QEMU by what holds it, in MiB. */
async function qemuMemory (pid: number, guestMiB: number): Promise<QemuMemory> {
  const out: QemuMemory = { rss: 0, pss: 0, guestRam: 0, tcgCode: 0, qemuPrivate: 0, sharedFiles: 0 }
  let kind: 'guestRam' | 'tcgCode' | 'qemuPrivate' | 'sharedFiles' = 'qemuPrivate'
  for (const line of (await readFile(`/proc/${pid}/smaps`, 'utf8')).split('\n')) {
    const mapping = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+\s*(.*)$/.exec(line)
    if (mapping !== null) {
      const mib = (parseInt(mapping[2]!, 16) - parseInt(mapping[1]!, 16)) / 2 ** 20
      const file = mapping[4]!.startsWith('/')
      kind = file ? 'sharedFiles' : mapping[3] === 'rwxp' ? 'tcgCode' : mapping[4] === '' && Math.abs(mib - guestMiB) < 1 ? 'guestRam' : 'qemuPrivate'
      continue
    }
    const field = /^(Rss|Pss):\s+(\d+) kB/.exec(line)
    if (field === null) continue
    const mib = Number(field[2]) / 1024
    if (field[1] === 'Rss') out.rss += mib
    else {
      out.pss += mib
      out[kind] += mib
    }
  }
  return out
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
  const qemu: QemuMemory[] = []
  for (const i of deployed) {
    const pid = Number(execFileSync('pgrep', ['-f', `xenos.id=${i.id}`]).toString().trim().split('\n')[0])
    qemu.push(await qemuMemory(pid, GUEST_MIB))
  }
  const mean = (k: keyof QemuMemory): number => summary(qemu.map(m => m[k])).mean
  const busy = await rssMiB(host.info.pid)
  for (const i of deployed) await cli(host, user, ['instance', 'destroy', i.id])
  const result = {
    benchmark: 'vm-overhead',
    date: new Date().toISOString(),
    vms: VMS,
    guestMiB: GUEST_MIB,
    qemuRssMiB: summary(qemu.map(m => m.rss)),
    qemuRssMinusGuestMiB: round(mean('rss') - GUEST_MIB),
    qemuMeanPssMiB: { total: mean('pss'), guestRam: mean('guestRam'), tcgCode: mean('tcgCode'), qemuPrivate: mean('qemuPrivate'), sharedFiles: mean('sharedFiles') },
    xenosdRssMiB: { idle: round(idle), withVms: round(busy), perVm: round((busy - idle) / VMS, 2) },
  }
  await writeFile(join(ROOT, 'bench/results/vm-overhead-latest.json'), JSON.stringify(result, null, 2) + '\n')
  console.log('| measure | value |')
  console.log('|---|---|')
  console.log(`| QEMU RSS per VM, mean / max (MiB) | ${result.qemuRssMiB.mean} / ${result.qemuRssMiB.max} |`)
  console.log(`| guest RAM per VM (MiB) | ${GUEST_MIB} |`)
  console.log(`| QEMU RSS minus guest RAM, mean (MiB) | ${result.qemuRssMinusGuestMiB} |`)
  const pss = result.qemuMeanPssMiB
  console.log(`| QEMU PSS per VM, mean (MiB) | ${pss.total} |`)
  console.log(`| … guest RAM | ${pss.guestRam} |`)
  console.log(`| … TCG translated code | ${pss.tcgCode} |`)
  console.log(`| … QEMU's own heap, stacks, device state | ${pss.qemuPrivate} |`)
  console.log(`| … binary, libraries, boot files (shared) | ${pss.sharedFiles} |`)
  console.log(`| xenosd RSS idle / with ${VMS} VMs (MiB) | ${result.xenosdRssMiB.idle} / ${result.xenosdRssMiB.withVms} |`)
  console.log(`| xenosd RSS per VM (MiB) | ${result.xenosdRssMiB.perVm} |`)
} finally {
  await stopHost(host)
}
