import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { buildInputImage, collectOutputs } from '../../src/data/index.ts'
import { tempDir } from '../helpers/cluster.ts'

describe('staged inputs image', () => {
  it('holds exactly the inputs at its root, and refuses names that clash or leave the root', async () => {
    const dir = await tempDir('stage-unit')
    await writeFile(join(dir, 'blob-a'), 'alpha\n')
    await writeFile(join(dir, 'blob-b'), 'beta\n')
    const image = join(dir, 'in.img')
    await buildInputImage([{ name: 'a.txt', path: join(dir, 'blob-a'), size: 6 }, { name: 'b.txt', path: join(dir, 'blob-b'), size: 5 }], image)
    const listing = execFileSync('debugfs', ['-R', 'ls -p /', image], { stdio: ['ignore', 'pipe', 'ignore'] }).toString()
    const names = listing.split('\n').map(l => l.split('/')[5]).filter(n => n !== undefined && n !== '' && n !== '.' && n !== '..')
    assert.deepEqual(names.sort(), ['a.txt', 'b.txt'])
    assert.equal(execFileSync('debugfs', ['-R', 'cat /b.txt', image], { stdio: ['ignore', 'pipe', 'ignore'] }).toString(), 'beta\n')

    await assert.rejects(buildInputImage([{ name: 'x', path: join(dir, 'blob-a'), size: 6 }, { name: 'x', path: join(dir, 'blob-b'), size: 5 }], join(dir, 'dup.img')), /two inputs are named x/)
    await assert.rejects(buildInputImage([{ name: '..', path: join(dir, 'blob-a'), size: 6 }], join(dir, 'up.img')), /cannot name a staged file/)
    await assert.rejects(buildInputImage([{ name: 'set/../../etc', path: join(dir, 'blob-a'), size: 6 }], join(dir, 'up.img')), /cannot name a staged file/)
    assert.equal(existsSync(join(dir, 'dup.img')), false)
  })

  it('puts a directory\'s files under it, and refuses a name that is both a file and a directory', async () => {
    const dir = await tempDir('stage-dirs')
    await writeFile(join(dir, 'blob-a'), 'alpha\n')
    await writeFile(join(dir, 'blob-b'), 'beta\n')
    const image = join(dir, 'in.img')
    await buildInputImage([{ name: 'set/a.txt', path: join(dir, 'blob-a'), size: 6 }, { name: 'set/deep/b.txt', path: join(dir, 'blob-b'), size: 5 }, { name: 'top.txt', path: join(dir, 'blob-a'), size: 6 }], image)
    assert.equal(execFileSync('debugfs', ['-R', 'cat /set/deep/b.txt', image], { stdio: ['ignore', 'pipe', 'ignore'] }).toString(), 'beta\n')
    assert.equal(execFileSync('debugfs', ['-R', 'cat /set/a.txt', image], { stdio: ['ignore', 'pipe', 'ignore'] }).toString(), 'alpha\n')
    await assert.rejects(buildInputImage([{ name: 'set', path: join(dir, 'blob-a'), size: 6 }, { name: 'set/a.txt', path: join(dir, 'blob-b'), size: 5 }], join(dir, 'clash.img')), /both a file and a directory/)
  })

  it('takes only regular files with data-path names from an outputs disk, and follows nothing', async () => {
    const dir = await tempDir('collect-unit')
    const tree = join(dir, 'tree')
    await mkdir(join(tree, 'sub'), { recursive: true })
    await writeFile(join(tree, 'a.txt'), 'alpha\n')
    await writeFile(join(tree, 'sub', 'b.txt'), 'beta\n')
    await writeFile(join(tree, 'bad\nname'), 'x')
    await symlink('/etc/passwd', join(tree, 'link'))
    execFileSync('mkfifo', [join(tree, 'fifo')])
    const image = join(dir, 'out.img')
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', tree, image, '16M'], { stdio: 'ignore' })
    const work = join(dir, 'work')
    await mkdir(work)
    const got = await collectOutputs(image, work)
    assert.deepEqual(got.files.map(f => f.path).sort(), ['a.txt', 'sub/b.txt'])
    assert.equal(await readFile(got.files.find(f => f.path === 'sub/b.txt')?.file ?? '', 'utf8'), 'beta\n')
    // A name holding a newline breaks debugfs's listing: the entry is refused unread.
    assert.deepEqual(got.refused.map(r => r.path).sort(), ['/', 'fifo', 'link'])
    assert.ok(got.files.every(f => f.file.startsWith(work)), 'files are copied out under names chosen here')
  })
})
