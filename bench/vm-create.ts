/**
 * Instance creation: everything a host does before a VM's guest starts booting (admission,
 * ports, the instance's qcow2 overlay on the template's disk, starting QEMU and taking control of
 * it), timed from the deploy API call on a real xenosd, for template disks of 64 MiB, 512 MiB and
 * 2 GiB. The baseline is the full copy other systems make of the image (`cp`, the disk filled
 * with data so the copy cannot skip holes). Creation must stay flat as the template grows.
 * Writes bench/results/vm-create-latest.json.
 *
 *   npm run bench:create
 */
import { execFileSync } from 'node:child_process'
import { createReadStream } from 'node:fs'
import { rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { cli, ROOT, startHost, stopHost, tempDir } from '../test/helpers/cluster.ts'
import { ApiClient, loadOrCreateUserKey } from '../src/cli/index.ts'
import { blobIdOfFile } from '../src/images/index.ts'
import type { TemplateManifest } from '../src/core/index.ts'
import { round, summary } from './stats.ts'

const SIZES_MIB = [64, 512, 2048]
const RUNS = 5

async function timed<T> (fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = performance.now()
  const out = await fn()
  return [performance.now() - t0, out]
}

const dir = await tempDir('bench-create')
const host = await startHost({ name: 'bench-create', extraArgs: ['--cpu', '4', '--memory', '2048'] })
const user = join(dir, 'user.pem')
const rows: unknown[] = []
try {
  // The counter's kernel and initramfs boot every disk below: its service does not need /srv.
  const counter = await cli(host, user, ['template', 'build', join(ROOT, 'examples/counter')])
  const api = new ApiClient({ api: host.api, key: (await loadOrCreateUserKey(user)).key })
  const base = (await api.get<{ manifest: TemplateManifest }>(`/v1/templates/${counter.id as string}`)).manifest
  for (const mib of SIZES_MIB) {
    const image = join(dir, `disk-${mib}.raw`)
    execFileSync('dd', ['if=/dev/urandom', `of=${image}`, 'bs=1M', `count=${mib}`, 'status=none'])
    const digest = await blobIdOfFile(image)
    await api.signedUpload(`/v1/blobs/${digest}`, 'blob.put', digest, {}, createReadStream(image), (await stat(image)).size)
    const manifest = { ...base, name: `disk-${mib}`, image: { ...base.image!, disk: digest, diskBytes: mib * 1024 * 1024 } }
    const template = await api.signed<{ id: string }>('POST', '/v1/templates', 'template.import', 'templates', { manifest }, { manifest })
    if (mib === SIZES_MIB[0]) {
      // Untimed: the first VM start also probes whether KVM works, once per host.
      const probe = (await api.deploy(template.id, { hosts: null, count: 1, spec: { name: null } })).instances[0]!
      await api.signed('POST', `/v1/instances/${probe.id}/destroy`, 'destroy', probe.id, {})
    }
    const create: number[] = []
    const copy: number[] = []
    let overlayBytes = 0
    // All Xenos runs first, after the upload has reached the disk: writeback would slow them.
    execFileSync('sync')
    for (let i = 0; i < RUNS; i++) {
      const [ms, deployed] = await timed(async () => await api.deploy(template.id, { hosts: null, count: 1, spec: { name: null } }))
      create.push(ms)
      const instance = deployed.instances[0]!
      overlayBytes = (await stat(join(host.dataDir, 'instances', instance.id, 'disk.qcow2'))).size
      await api.signed('POST', `/v1/instances/${instance.id}/destroy`, 'destroy', instance.id, {})
    }
    for (let i = 0; i < RUNS; i++) {
      const target = join(dir, `copy-${mib}-${i}.raw`)
      copy.push((await timed(async () => { execFileSync('cp', [image, target]) }))[0])
      execFileSync('sync')
      await rm(target)
    }
    const xenos = summary(create)
    const cp = summary(copy)
    rows.push({ templateMiB: mib, createMs: xenos, copyMs: cp, overlayBytes, copyOverCreateP50: round(cp.p50 / xenos.p50, 1) })
    await rm(image)
  }
} finally {
  await stopHost(host)
  await rm(dir, { recursive: true, force: true })
}
const result = { benchmark: 'vm-create', date: new Date().toISOString(), runs: RUNS, rows }
await writeFile(join(ROOT, 'bench/results/vm-create-latest.json'), JSON.stringify(result, null, 2) + '\n')
console.log('| template disk | Xenos: deploy call → QEMU running, p50 / max (ms) | overlay size | full copy (`cp`) p50 / max (ms) | copy / Xenos |')
console.log('|---|---|---|---|---|')
for (const r of rows as any[]) {
  console.log(`| ${r.templateMiB} MiB | ${r.createMs.p50} / ${r.createMs.max} | ${Math.round(r.overlayBytes / 1024)} KiB | ${r.copyMs.p50} / ${r.copyMs.max} | ${r.copyOverCreateP50}× |`)
}
