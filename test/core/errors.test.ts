import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { ERROR_CODES, toXenosError, XenosError } from '../../src/core/index.ts'
import { ROOT } from '../helpers/cluster.ts'

describe('error registry', () => {
  it('matches docs/errors.md row for row', async () => {
    const doc = await readFile(join(ROOT, 'docs/errors.md'), 'utf8')
    const rows = [...doc.matchAll(/^\| `([A-Z_]+)` \| (\d+) \| (.+) \|$/gm)].map(m => [m[1], Number(m[2]), m[3]])
    assert.deepEqual(rows, Object.entries(ERROR_CODES).map(([code, v]) => [code, v.status, v.meaning]))
  })

  it('keeps codes of XenosErrors and wraps anything else as INTERNAL', () => {
    const e = new XenosError('FORBIDDEN', 'no')
    assert.equal(toXenosError(e), e)
    assert.equal(e.status, 403)
    assert.deepEqual(e.toJSON(), { code: 'FORBIDDEN', message: 'no' })
    assert.equal(toXenosError(new Error('boom')).code, 'INTERNAL')
    assert.equal(toXenosError('text').message, 'text')
  })
})
