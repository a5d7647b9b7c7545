import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { BlobStore, deriveDisk } from '../../src/images/index.ts'
import { adoptOverlay, checkTailoredDisk, readQcow2 } from '../../src/images/qcow2.ts'
import { tempDir } from '../helpers/cluster.ts'

function has (tool: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

const skip = has('qemu-img') && has('mke2fs') && has('debugfs') ? false : 'needs qemu-img and e2fsprogs'

/** Tailored disks: small overlays on a base, which must reach nothing but that base. */
describe('tailored disks', { skip }, () => {
  async function base (): Promise<{ dir: string, store: BlobStore, id: string }> {
    const dir = await tempDir('qcow2')
    const raw = join(dir, 'base.raw')
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'xenos', raw, '32M'])
    const store = new BlobStore(join(dir, 'blobs'))
    return { dir, store, id: await store.putFile(raw) }
  }

  it('holds only what changed, names its base by blob id, and reads back the added files', async () => {
    const { dir, store, id } = await base()
    await mkdir(join(dir, 'add', 'www'), { recursive: true })
    await writeFile(join(dir, 'add', 'www', 'index.html'), 'tailored\n')
    const derived = await deriveDisk({ base: store.path(id), baseId: id, add: join(dir, 'add') })
    const disk = await store.putFile(derived.path)
    await derived.cleanup()
    await checkTailoredDisk(store.path(disk), id, 32 * 1024 * 1024)
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', store.path(disk)]).toString())
    assert.ok(info['actual-size'] < 1024 * 1024, `the overlay holds ${info['actual-size']} bytes`)
    // Read the file back through the chain, as QEMU sees it.
    const flat = join(dir, 'flat.raw')
    execFileSync('qemu-img', ['convert', '-O', 'raw', store.path(disk), flat])
    const out = execFileSync('debugfs', ['-R', 'cat /www/index.html', flat], { stdio: ['ignore', 'pipe', 'ignore'] }).toString()
    assert.equal(out, 'tailored\n')
    assert.notEqual((await readFile(store.path(id))).length, 0)
  })

  it('refuses a disk that reaches other files, another base or the wrong size', async () => {
    const { dir, id } = await base()
    const hex = id.slice(7)
    const make = (name: string, args: string[]): string => {
      const path = join(dir, name)
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...args, path, '32M'])
      return path
    }
    await assert.rejects(checkTailoredDisk(make('passwd.qcow2', ['-u', '-F', 'raw', '-b', '/etc/passwd']), id, 32 * 1024 * 1024), /must be an overlay on its base/)
    await assert.rejects(checkTailoredDisk(make('other.qcow2', ['-u', '-F', 'raw', '-b', '0'.repeat(64)]), id, 32 * 1024 * 1024), /must be an overlay on its base/)
    await assert.rejects(checkTailoredDisk(make('fmt.qcow2', ['-u', '-F', 'qcow2', '-b', hex]), id, 32 * 1024 * 1024), /format raw/)
    await assert.rejects(checkTailoredDisk(make('data.qcow2', ['-o', `data_file=${join(dir, 'data.raw')}`]), id, 32 * 1024 * 1024), /external data file/)
    await assert.rejects(checkTailoredDisk(make('size.qcow2', ['-u', '-F', 'raw', '-b', hex]), id, 16 * 1024 * 1024), /not the 16777216/)
    await assert.rejects(checkTailoredDisk(join(dir, 'base.raw'), id, 32 * 1024 * 1024), /not a qcow2 image/)
  })
  it('adopts a snapshot\'s disk from another host only as an overlay on the template\'s image, named anew here', async () => {
    const { dir, store, id } = await base()
    const here = store.path(id)
    const make = (name: string, args: string[]): string => {
      const path = join(dir, name)
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...args, path, '32M'])
      return path
    }
    // What a rogue host could offer as a checkpoint's disk: one that reads the keeper's files.
    await assert.rejects(adoptOverlay(make('passwd.qcow2', ['-u', '-F', 'raw', '-b', '/etc/passwd']), here, 'raw'), /must be an overlay on its template's image/)
    await assert.rejects(adoptOverlay(make('fmt.qcow2', ['-u', '-F', 'qcow2', '-b', `/elsewhere/${id.slice(7)}`]), here, 'raw'), /must be an overlay on its template's image/)
    await assert.rejects(adoptOverlay(make('data.qcow2', ['-o', `data_file=${join(dir, 'data.raw')}`]), here, 'raw'), /external data file/)
    // The other host's path to the same image becomes this host's.
    const theirs = make('theirs.qcow2', ['-u', '-F', 'raw', '-b', `/var/lib/other/blobs/sha256/${id.slice(7)}`])
    await adoptOverlay(theirs, here, 'raw')
    assert.equal((await readQcow2(theirs)).backingFile, here)
  })
})
