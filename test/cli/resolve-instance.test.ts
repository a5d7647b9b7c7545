import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { ApiClient } from '../../src/cli/client.ts'
import { resolveInstance } from '../../src/cli/command.ts'

const ALICE = 'alice-owner-id'
const instances = [
  { id: 'i-aaaa111100000001', name: 'web-1', owner: ALICE },
  { id: 'i-aaaa222200000002', name: 'web-2', owner: ALICE },
  { id: 'i-bbbb000000000003', name: 'db', owner: ALICE },
  { id: 'i-bbbb000000000004', name: 'db', owner: ALICE },
  { id: 'i-cccc000000000005', name: 'web-1', owner: 'bob' },
]

/** The host the CLI talks to, as far as listing instances goes. */
function api (knownOwner: string | undefined): ApiClient {
  return {
    knownOwner,
    get: async (path: string) => {
      const owner = new URL(path, 'http://h').searchParams.get('owner')
      return { instances: instances.filter(v => owner === null || v.owner === owner) }
    },
  } as unknown as ApiClient
}

describe('instances by name or id prefix', () => {
  it('takes a full id as it is, a name of the user\'s, and a unique start of an id', async () => {
    assert.equal(await resolveInstance(api(ALICE), 'i-0123456789abcdef'), 'i-0123456789abcdef')
    assert.equal(await resolveInstance(api(ALICE), 'web-1'), 'i-aaaa111100000001', 'the user\'s own web-1, not bob\'s')
    assert.equal(await resolveInstance(api(ALICE), 'aaaa2'), 'i-aaaa222200000002')
    assert.equal(await resolveInstance(api(ALICE), 'i-aaaa1'), 'i-aaaa111100000001')
    assert.equal(await resolveInstance(api(ALICE), 'cccc'), 'i-cccc000000000005', 'another\'s by id, for an operator')
    assert.equal(await resolveInstance(api(undefined), 'cccc'), 'i-cccc000000000005', 'without a key of one\'s own')
  })

  it('refuses what names several, and what names none', async () => {
    await assert.rejects(resolveInstance(api(ALICE), 'db'), /2 instances of yours are named db \(replicas share a name\): give one of their ids, i-bbbb000000000003, i-bbbb000000000004/)
    await assert.rejects(resolveInstance(api(ALICE), 'aaaa'), /2 instances of yours have ids starting with i-aaaa/)
    await assert.rejects(resolveInstance(api(ALICE), 'aaa'), /INSTANCE_NOT_FOUND|no instance is named "aaa"/, 'three digits are too few to be a prefix')
    await assert.rejects(resolveInstance(api(undefined), 'web-1'), /no instance is named "web-1"/, 'no key, no names of one\'s own')
  })
})
