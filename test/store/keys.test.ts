import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, it } from 'node:test'
import { loadOrCreateOwnerKeySync, readOwnerKeySync } from '../../src/store/index.ts'
import { NODE, ROOT, tempDir } from '../helpers/cluster.ts'

const run = promisify(execFile)

describe('owner keys', () => {
  it('makes a key once, readable by its user only, and reads it back after', async () => {
    const path = join(await tempDir('keys'), 'sub', 'user.pem')
    assert.equal(readOwnerKeySync(path), undefined, 'none yet, and none made by reading')
    const made = loadOrCreateOwnerKeySync(path)
    assert.equal(made.created, true)
    assert.equal((await stat(path)).mode & 0o777, 0o600)
    const again = loadOrCreateOwnerKeySync(path)
    assert.deepEqual([again.created, again.key.id], [false, made.key.id])
    assert.deepEqual(await readdir(join(path, '..')), ['user.pem'], 'no file left beside it')
  })

  it('gives processes that make it at the same moment one key between them', async () => {
    const path = join(await tempDir('keys-race'), 'user.pem')
    const code = `import { loadOrCreateOwnerKeySync } from ${JSON.stringify(join(ROOT, 'src/store/index.ts'))}; process.stdout.write(loadOrCreateOwnerKeySync(${JSON.stringify(path)}).key.id)`
    const ids = await Promise.all(Array.from({ length: 6 }, async () => (await run(NODE, ['--disable-warning=ExperimentalWarning', '--input-type=module', '-e', code])).stdout))
    assert.equal(new Set(ids).size, 1, ids.join(' '))
    assert.equal(readOwnerKeySync(path)?.id, ids[0])
  })
})
