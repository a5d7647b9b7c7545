import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { DEFAULT_CACHE_DIR } from '../../src/cli/build.ts'
import { cli, eventually, httpGet, startHost, stopHosts, tempDir, type TestHost } from '../helpers/cluster.ts'
import { ownSystemImage } from '../helpers/own-system.ts'
import { skipWithoutQemu } from '../helpers/vm.ts'

const TEMPLATE = `name: own-system
version: "1"
diskImage: disk.raw
boot: image
ports: [{ name: http, protocol: http, guest: 80, health: / }]
resources: { cpu: 1, memory: 128 }
`

/** A disk image an owner brings with its own kernel, initramfs and init, booted as it is on real QEMU. */
describe('images that boot their own system', { skip: skipWithoutQemu }, () => {
  let a: TestHost, b: TestHost
  let alice: string
  let dir: string

  before(async () => {
    dir = await tempDir('own-system')
    alice = join(dir, 'alice.pem')
    a = await startHost({ name: 'own-a' })
    b = await startHost({ name: 'own-b', bootstrap: [a] })
  })

  after(async () => {
    await stopHosts([a, b])
  })

  it('boots the kernel and initramfs in the image\'s /boot with its root partition, on another host, where its own init serves', async () => {
    const image = join(dir, 'image')
    await mkdir(join(image, 'work'), { recursive: true })
    await writeFile(join(image, 'template.yaml'), TEMPLATE)
    await ownSystemImage(join(image, 'work'), join(image, 'disk.raw'), DEFAULT_CACHE_DIR)
    const built = await cli(a, alice, ['template', 'build', image])
    const manifest = (await cli(a, alice, ['template', 'show', built.id])).manifest
    assert.equal(manifest.image.system.root, '/dev/vda1', 'the partition holding /boot is the root')
    assert.match(manifest.image.system.release, /^\d+\.\d+/)
    assert.equal(manifest.command, undefined)
    await assert.rejects(cli(a, alice, ['template', 'derive', 'own-system', '--add', image]), /boots its image's own system/)

    const vm = (await cli(a, alice, ['deploy', 'own-system', '--host', 'own-b', '--wait'])).instances[0]
    assert.equal(vm.host, b.info.peerId)
    const url = vm.endpoints[0].url as string
    assert.equal((await eventually(async () => await httpGet(url), 30_000, 'its own init to serve'))?.trim(), `its own system, kernel ${manifest.image.system.release}`)
    assert.equal((await httpGet(`${url}/booted`))?.trim(), 'root=/dev/vda1', 'its kernel was given the root its initramfs mounted')
    const shown = await cli(a, alice, ['instance', 'show', vm.id])
    assert.ok(shown.healthyAt !== undefined, 'healthy by its health check, with no agent to report')

    // What QEMU does for every VM, it does for this one.
    assert.equal((await cli(a, alice, ['instance', 'suspend', vm.id])).state, 'suspended')
    assert.equal((await cli(a, alice, ['instance', 'resume', vm.id])).state, 'running')
    assert.match(await eventually(async () => await httpGet(url), 20_000, 'it to serve after resume'), /its own system/)
    await cli(a, alice, ['migrate', vm.id, '--to', 'own-a'])
    const moved = await cli(a, alice, ['instance', 'show', vm.id])
    assert.equal(moved.host, a.info.peerId)
    assert.match(await eventually(async () => await httpGet(moved.endpoints[0].url), 30_000, 'it to serve where it moved'), /its own system/)
    await cli(a, alice, ['instance', 'destroy', vm.id])

    await mkdir(join(dir, 'in'), { recursive: true })
    await writeFile(join(dir, 'in', 'a.txt'), 'x')
    await cli(a, alice, ['data', 'put', join(dir, 'in'), 'data://me/in'])
    await assert.rejects(cli(a, alice, ['run', 'own-system', '--in', 'data://me/in', '--out', 'results/own', '--host', 'own-a']), /no Xenos init to mount inputs and outputs/)
  })

  it('fails a build of an image without a kernel, or without an image, saying what is missing', async () => {
    const bare = join(dir, 'bare')
    await mkdir(join(bare, 'root', 'etc'), { recursive: true })
    await writeFile(join(bare, 'root', 'etc', 'hostname'), 'bare\n')
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', join(bare, 'root'), join(bare, 'disk.raw'), '8M'])
    await writeFile(join(bare, 'template.yaml'), TEMPLATE)
    await assert.rejects(cli(a, alice, ['template', 'build', bare]), /no file system of the image holds a kernel \(\/boot\/vmlinuz-\*\)/)
    await writeFile(join(bare, 'template.yaml'), TEMPLATE.replace('diskImage: disk.raw\n', ''))
    await assert.rejects(cli(a, alice, ['template', 'build', bare]), /boots its own system from a diskImage/)
    await writeFile(join(bare, 'template.yaml'), TEMPLATE.replace('boot: image\n', 'boot: image\ncommand: "exec true"\n'))
    await assert.rejects(cli(a, alice, ['template', 'build', bare]), /command: an image that boots its own system runs its own kernel and services/)
  })
})
