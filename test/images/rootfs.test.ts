import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { mirrorsFor } from '../../src/images/guest/rootfs.ts'

/** Which mirrors a distribution's root file system comes from: the machine's own, for the suite asked. */
describe('the mirrors of a root file system', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'xenos-mirrors-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('reads deb822 and one-line sources, renaming the machine\'s suites to the one asked, leaving out source packages', async () => {
    const deb822 = join(dir, 'debian.sources')
    await writeFile(deb822, [
      'Types: deb', 'URIs: http://deb.debian.org/debian', 'Suites: bookworm bookworm-updates', 'Components: main', 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg', '',
      'Types: deb-src', 'URIs: http://deb.debian.org/debian', 'Suites: bookworm', 'Components: main', '',
      'Types: deb', 'URIs: http://deb.debian.org/debian-security', 'Suites: bookworm-security', 'Components: main contrib', '',
    ].join('\n'))
    const list = join(dir, 'sources.list')
    await writeFile(list, '# a comment\ndeb [arch=amd64] http://mirror.example/debian bookworm main\ndeb-src http://mirror.example/debian bookworm main\n')
    assert.deepEqual(await mirrorsFor('trixie', [list, deb822, join(dir, 'missing')]), [
      'deb http://mirror.example/debian trixie main',
      'deb http://deb.debian.org/debian trixie main',
      'deb http://deb.debian.org/debian trixie-updates main',
      'deb http://deb.debian.org/debian-security trixie-security main contrib',
    ])
    assert.deepEqual(await mirrorsFor('bookworm', [join(dir, 'missing')]), [], 'a machine without Debian sources has none')
  })
})
