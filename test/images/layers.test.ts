import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { chmod, chown, copyFile, lstat, mkdir, mkdtemp, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { applyChanges, growDisk, treeChanges } from '../../src/images/guest/layers.ts'

/** A layer: the change from one root file system to another, written into a copy of the first's ext4 image. */
describe('a layer on a root file system', () => {
  let work: string
  before(async () => { work = await mkdtemp(join(tmpdir(), 'xenos-layers-')) })
  after(async () => { await rm(work, { recursive: true, force: true }) })

  it('turns the base image into the new tree: new, changed and removed files, modes, owners and links', async () => {
    const [base, tree, out] = ['base', 'tree', 'out'].map(d => join(work, d)) as [string, string, string]
    for (const root of [base, tree]) {
      await mkdir(join(root, 'etc'), { recursive: true })
      await mkdir(join(root, 'usr/bin'), { recursive: true })
      await writeFile(join(root, 'etc/kept'), 'the same in both\n')
      await symlink('/usr/bin/tool', join(root, 'etc/link'))
    }
    await writeFile(join(base, 'etc/changed'), 'before\n')
    await writeFile(join(base, 'etc/gone'), 'only in the base\n')
    await mkdir(join(base, 'var/old'), { recursive: true })
    await writeFile(join(base, 'var/old/file'), 'x')
    await writeFile(join(tree, 'etc/changed'), 'after, and longer\n')
    await writeFile(join(tree, 'usr/bin/tool'), '#!/bin/sh\necho tool\n')
    await chmod(join(tree, 'usr/bin/tool'), 0o755)
    await mkdir(join(tree, 'srv/www'), { recursive: true })
    await writeFile(join(tree, 'srv/www/index.html'), 'hello\n')
    await chown(join(tree, 'srv/www/index.html'), 33, 33)
    await symlink('/srv/www', join(tree, 'etc/www'))

    // File capabilities: on a new file, and as the only change of a file the base has.
    const capability = '0x0100000200200000000000000000000000000000'
    execFileSync('setfattr', ['-n', 'security.capability', '-v', capability, join(tree, 'usr/bin/tool')])
    execFileSync('setfattr', ['-n', 'security.capability', '-v', capability, join(tree, 'etc/kept')])

    const disk = join(work, 'disk.raw')
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', base, disk, '16M'])
    await growDisk(disk, 24)
    assert.equal((await lstat(disk)).size, 24 * 1024 * 1024)
    const { commands, changed, removed } = await treeChanges(base, tree, work)
    assert.equal(removed, 4, 'etc/gone, var/old/file, var/old and var')
    assert.ok(changed >= 5 && !commands.some(c => c.includes('"/etc/link"')), 'what is the same is not written')
    await applyChanges(disk, commands, work)

    await mkdir(out)
    for (const top of ['etc', 'usr', 'srv', 'var']) execFileSync('debugfs', ['-R', `rdump /${top} ${out}`, disk], { stdio: 'ignore' })
    const read = async (p: string): Promise<string> => await readFile(join(out, p), 'utf8')
    assert.equal(await read('etc/changed'), 'after, and longer\n')
    assert.equal(await read('usr/bin/tool'), '#!/bin/sh\necho tool\n')
    assert.equal(await read('etc/kept'), 'the same in both\n')
    for (const path of ['/usr/bin/tool', '/etc/kept']) {
      const attrs = execFileSync('debugfs', ['-R', `ea_list ${path}`, disk], { stdio: ['ignore', 'pipe', 'ignore'] }).toString()
      assert.match(attrs, /security\.capability/, `${path} keeps its file capability`)
    }
    assert.equal((await lstat(join(out, 'usr/bin/tool'))).mode & 0o777, 0o755)
    assert.equal((await lstat(join(out, 'srv/www/index.html'))).uid, 33)
    assert.equal(await readlink(join(out, 'etc/www')), '/srv/www')
    await assert.rejects(lstat(join(out, 'etc/gone')))
    await assert.rejects(lstat(join(out, 'var')), 'a directory emptied in the new tree is gone')
  })

  it('grows the same image to the same bytes whenever it is grown', async () => {
    const tree = join(work, 'grown')
    await mkdir(join(tree, 'etc'), { recursive: true })
    await writeFile(join(tree, 'etc/file'), 'x\n')
    const first = join(work, 'first.raw')
    const second = join(work, 'second.raw')
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', tree, '-U', '0c0ffee0-0000-4000-8000-000000000000', '-E', 'hash_seed=0c0ffee0-0000-4000-8000-000000000000', first, '16M'], { env: { ...process.env, E2FSPROGS_FAKE_TIME: '1' } })
    await copyFile(first, second)
    await growDisk(first, 24)
    // e2fsck stamps the time of its check in the superblock: a second later, it would differ.
    await sleep(1100)
    await growDisk(second, 24)
    assert.ok((await readFile(first)).equals(await readFile(second)))
  })
})
