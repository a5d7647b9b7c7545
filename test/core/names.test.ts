import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { generateOwnerKey, parseTemplateUri, signNameRecord, supersedes, verifyNameRecord } from '../../src/core/index.ts'
import { NameRegistry } from '../../src/images/index.ts'
import { openStore } from '../../src/store/index.ts'

const T1 = `sha256:${'1'.repeat(64)}`
const T2 = `sha256:${'2'.repeat(64)}`

describe('template names', () => {
  const alice = generateOwnerKey()
  const mallory = generateOwnerKey()

  it('parses template://OWNER/NAME/TAG, with "me" for the user', () => {
    assert.deepEqual(parseTemplateUri(`template://${alice.id}/web/1.0`), { owner: alice.id, name: 'web', tag: '1.0' })
    assert.deepEqual(parseTemplateUri('template://me/web/current', alice.id), { owner: alice.id, name: 'web', tag: 'current' })
    for (const bad of ['template://me/web', 'template://short/web/1', `template://${alice.id}/Web/1`, `template://${alice.id}/web/../x`, 'http://x/y/z']) {
      assert.throws(() => parseTemplateUri(bad, alice.id), /not a template name/, bad)
    }
  })

  it('accepts only records their owner signed', () => {
    const record = signNameRecord(alice, { name: 'web', tag: 'current', kind: 'alias', template: T1 })
    assert.deepEqual(verifyNameRecord(JSON.parse(JSON.stringify(record))), record)
    assert.throws(() => verifyNameRecord({ ...record, template: T2 }), /not signed by its owner/)
    const byMallory = signNameRecord(mallory, { name: 'web', tag: 'current', kind: 'alias', template: T2 })
    assert.throws(() => verifyNameRecord({ ...byMallory, owner: alice.id }), /not signed by its owner/)
    assert.throws(() => verifyNameRecord({ ...record, extra: 1 }), /malformed/)
  })

  it('moves aliases forward only, and never moves a version', () => {
    const a1 = signNameRecord(alice, { name: 'web', tag: 'current', kind: 'alias', template: T1, seq: 1 })
    const a2 = signNameRecord(alice, { name: 'web', tag: 'current', kind: 'alias', template: T2, seq: 2 })
    assert.equal(supersedes(a2, a1), 'replace')
    assert.equal(supersedes(a1, a2), 'keep', 'an old record arriving late changes nothing')
    const v1 = signNameRecord(alice, { name: 'web', tag: '1.0', kind: 'version', template: T1, seq: 1 })
    const v1again = signNameRecord(alice, { name: 'web', tag: '1.0', kind: 'version', template: T1, seq: 5 })
    const v1moved = signNameRecord(alice, { name: 'web', tag: '1.0', kind: 'version', template: T2, seq: 9 })
    assert.equal(supersedes(v1again, v1), 'replace')
    assert.equal(supersedes(v1moved, v1), 'conflict')
    assert.equal(supersedes(a1, v1), 'conflict')
  })

  it('keeps the standing record of each name in the host store', () => {
    const store = openStore(':memory:')
    const names = new NameRegistry(store)
    const v1 = signNameRecord(alice, { name: 'web', tag: '1.0', kind: 'version', template: T1 })
    assert.equal(names.accept(v1).changed, true)
    assert.equal(names.accept(v1).changed, false)
    assert.throws(() => names.accept(signNameRecord(alice, { name: 'web', tag: '1.0', kind: 'version', template: T2 })), (e: Error & { code?: string }) => e.code === 'NAME_CONFLICT')
    assert.equal(names.resolve({ owner: alice.id, name: 'web', tag: '1.0' })?.template, T1)
    assert.deepEqual(names.newerThan({ [`${alice.id}/web/1.0`]: v1.seq }), [])
    assert.equal(names.newerThan({}).length, 1)
    store.close()
  })
})
