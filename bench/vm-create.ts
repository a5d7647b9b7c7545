/**
 * Instance disk creation: what Xenos does for a VM instance (a qcow2 overlay backed by the
 * template's disk) against the full-copy baseline (`cp` of the image), for template disks of
 * 64 MiB, 512 MiB and 2 GiB filled with data (so the copy cannot skip holes). Creation must stay
 * flat as the template grows. Writes bench/results/vm-create-latest.json.
 *
 *   npm run bench:create
 */
import { execFileSync } from 'node:child_process'
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ROOT } from '../test/helpers/cluster.ts'
import { round, summary } from './stats.ts'

const SIZES_MIB = [64, 512, 2048]
const RUNS = 5

function time (fn: () => void): number {
  const t0 = performance.now()
  fn()
  return performance.now() - t0
}

const dir = await mkdtemp(join(tmpdir(), 'xenos-bench-create-'))
const rows: unknown[] = []
try {
  for (const mib of SIZES_MIB) {
    const base = join(dir, `base-${mib}.raw`)
    execFileSync('dd', ['if=/dev/urandom', `of=${base}`, 'bs=1M', `count=${mib}`, 'status=none'])
    const overlay: number[] = []
    const copy: number[] = []
    let overlayBytes = 0
    for (let i = 0; i < RUNS; i++) {
      const o = join(dir, `overlay-${mib}-${i}.qcow2`)
      overlay.push(time(() => { execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', base, o]) }))
      overlayBytes = (await stat(o)).size
      const c = join(dir, `copy-${mib}-${i}.raw`)
      copy.push(time(() => { execFileSync('cp', [base, c]) }))
      execFileSync('sync')
      await rm(o)
      await rm(c)
    }
    const xenos = summary(overlay)
    const cp = summary(copy)
    rows.push({ templateMiB: mib, overlayMs: xenos, copyMs: cp, overlayBytes, speedupP50: round(cp.p50 / xenos.p50, 1) })
    await rm(base)
  }
} finally {
  await rm(dir, { recursive: true, force: true })
}
const result = { benchmark: 'vm-create', date: new Date().toISOString(), runs: RUNS, rows }
await writeFile(join(ROOT, 'bench/results/vm-create-latest.json'), JSON.stringify(result, null, 2) + '\n')
console.log('| template disk | overlay (Xenos) p50 / max (ms) | overlay size | full copy p50 / max (ms) | copy / overlay |')
console.log('|---|---|---|---|---|')
for (const r of rows as any[]) {
  console.log(`| ${r.templateMiB} MiB | ${r.overlayMs.p50} / ${r.overlayMs.max} | ${Math.round(r.overlayBytes / 1024)} KiB | ${r.copyMs.p50} / ${r.copyMs.max} | ${r.speedupP50}× |`)
}
