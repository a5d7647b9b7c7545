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
    const names = new NameRegistry(store, { known: () => true })
    const v1 = signNameRecord(alice, { name: 'web', tag: '1.0', kind: 'version', template: T1 })
    assert.equal(names.accept(v1).changed, true)
    assert.equal(names.accept(v1).changed, false)
    assert.throws(() => names.accept(signNameRecord(alice, { name: 'web', tag: '1.0', kind: 'version', template: T2 })), (e: Error & { code?: string }) => e.code === 'NAME_CONFLICT')
    assert.equal(names.resolve({ owner: alice.id, name: 'web', tag: '1.0' })?.template, T1)
    assert.deepEqual(names.digest(null, 10), [[`${alice.id}/web/1.0`, v1.seq]])
    assert.deepEqual(names.pick([`${alice.id}/web/1.0`, `${alice.id}/none/1`], 1 << 20), { records: [v1], taken: 2 })
    store.close()
  })

  it('refuses names of templates no host holds, and more names than an owner or a host may have', () => {
    const store = openStore(':memory:')
    const names = new NameRegistry(store, { known: id => id === T1, limits: { perOwner: 3, total: 5 } })
    assert.throws(() => names.accept(signNameRecord(alice, { name: 'ghost', tag: '1', kind: 'version', template: T2 })), (e: Error & { code?: string }) => e.code === 'TEMPLATE_NOT_FOUND')
    for (const tag of ['1', '2', '3']) names.accept(signNameRecord(mallory, { name: 'spam', tag, kind: 'version', template: T1 }))
    assert.throws(() => names.accept(signNameRecord(mallory, { name: 'spam', tag: '4', kind: 'version', template: T1 })), (e: Error & { code?: string }) => e.code === 'QUOTA_EXCEEDED')
    for (const tag of ['1', '2']) names.accept(signNameRecord(generateOwnerKey(), { name: 'other', tag, kind: 'version', template: T1 }))
    assert.throws(() => names.accept(signNameRecord(alice, { name: 'web', tag: '1', kind: 'version', template: T1 })), /as many as it keeps/)
    store.close()
  })

  it('drops names whose template no host has held for a while', () => {
    const store = openStore(':memory:')
    let held = true
    const names = new NameRegistry(store, { known: () => held, limits: { unseenMs: 1000 } })
    names.accept(signNameRecord(alice, { name: 'web', tag: '1', kind: 'version', template: T1 }), 0)
    assert.equal(names.sweep(5000), 0, 'still held: seen now')
    held = false
    assert.equal(names.sweep(5500), 0, 'gone for less than a while')
    assert.equal(names.sweep(7000), 1)
    assert.equal(names.list().length, 0)
    store.close()
  })
})
