import assert from 'node:assert/strict'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { openStore } from '../../src/store/index.ts'
import { tempDir } from '../helpers/cluster.ts'

describe('store', () => {
  it('keeps templates and instances across reopen, and updates whole rows', async () => {
    const path = join(await tempDir('store'), 'state.db')
    const s1 = openStore(path)
    const manifest = { name: 'x', version: '1', driver: 'process' as const, command: 'true', env: {}, ports: [], tags: {}, resources: { cpu: 0.1, memory: 64 } }
    s1.templates.put({ id: 'sha256:aa', manifest, importedAt: 1, owner: 'o' })
    s1.templates.put({ id: 'sha256:aa', manifest: { ...manifest, name: 'changed' }, importedAt: 2, owner: null })
    s1.instances.insert({
      id: 'i-0000000000000001', name: 'x-1', templateId: 'sha256:aa', owner: 'o', state: 'creating', driver: 'process', handle: null,
      ports: [{ name: 'http', protocol: 'http', hostPort: 1234 }], resources: { cpu: 0.1, memory: 64 }, error: null, exitCode: null, remoteDisk: { host: 'h', token: 't' }, placement: null, links: [{ name: 'db', target: 'db', port: 4321 }], env: { MODE: 'fast' }, createdAt: 1, updatedAt: 1,
    })
    s1.instances.update('i-0000000000000001', { state: 'running', handle: { id: 'i-0000000000000001', driver: 'process', state: { pid: 5 } } })
    s1.tasks.insert({
      id: 'i-0000000000000001', owner: 'o', templateId: 'sha256:aa', inputs: ['data://o/in'], outputsPrefix: 'out', keep: false,
      state: 'running', exitCode: null, error: null, outputs: [], refused: [], placed: null, createdAt: 1, collectingAt: null, endedAt: null,
    })
    s1.tasks.update('i-0000000000000001', { state: 'collecting' })
    s1.close()

    const s2 = openStore(path)
    assert.equal(s2.templates.get('sha256:aa')?.manifest.name, 'x', 'a template id is immutable')
    assert.equal(s2.templates.get('sha256:aa')?.owner, 'o', 'its first importer stays its owner')
    const r = s2.instances.get('i-0000000000000001')
    assert.equal(r?.state, 'running')
    assert.deepEqual(r?.handle?.state, { pid: 5 })
    assert.equal(r?.ports[0]?.hostPort, 1234)
    assert.deepEqual(r?.remoteDisk, { host: 'h', token: 't' })
    assert.deepEqual(r?.links, [{ name: 'db', target: 'db', port: 4321 }])
    assert.deepEqual(r?.env, { MODE: 'fast' })
    assert.deepEqual(s2.tasks.unfinished().map(t => [t.id, t.state, t.inputs]), [['i-0000000000000001', 'collecting', ['data://o/in']]], 'a task cut short is found again')
    assert.equal(s2.instances.countUsingTemplate('sha256:aa'), 1)
    assert.throws(() => { s2.transaction(() => { s2.instances.remove('i-0000000000000001'); throw new Error('abort') }) }, /abort/)
    assert.ok(s2.instances.get('i-0000000000000001'), 'a failed transaction changes nothing')
    s2.close()
  })

  it('remembers the nonces of signed requests across reopen, until they expire', async () => {
    const path = join(await tempDir('store'), 'state.db')
    const s1 = openStore(path)
    assert.equal(s1.nonces.claim('alice/01', 2000, 1000), true)
    assert.equal(s1.nonces.claim('alice/01', 2000, 1000), false)
    s1.close()
    const s2 = openStore(path)
    assert.equal(s2.nonces.claim('alice/01', 2000, 1500), false, 'a replay after a restart is refused')
    assert.equal(s2.nonces.claim('alice/01', 9000, 2500), true, 'an expired nonce may be used by a new request')
    s2.close()
  })

  it('keeps the disks it serves to other hosts until they are released', async () => {
    const path = join(await tempDir('store'), 'state.db')
    const s1 = openStore(path)
    s1.diskExports.put({ instanceId: 'i-0000000000000002', owner: 'o', peer: 'p', token: 't1', server: { pid: 7 }, createdAt: 1 })
    s1.diskExports.put({ instanceId: 'i-0000000000000002', owner: 'o', peer: 'p', token: 't2', server: { pid: 8 }, createdAt: 1 })
    s1.close()
    const s2 = openStore(path)
    assert.deepEqual(s2.diskExports.list().map(e => [e.token, e.server]), [['t2', { pid: 8 }]])
    // Moving on to another host, the instance's disk is served to both for a while, the newest last.
    s2.diskExports.put({ instanceId: 'i-0000000000000002', owner: 'o', peer: 'q', token: 't3', server: { pid: 8 }, createdAt: 2 })
    assert.deepEqual(s2.diskExports.forInstance('i-0000000000000002').map(e => e.peer), ['p', 'q'])
    s2.diskExports.remove('i-0000000000000002', 'p')
    assert.deepEqual(s2.diskExports.forInstance('i-0000000000000002').map(e => e.token), ['t3'])
    s2.diskExports.put({ instanceId: 'i-0000000000000002', owner: 'o', peer: 'r', token: 't4', server: { pid: 8 }, createdAt: 3 })
    s2.diskExports.remove('i-0000000000000002')
    assert.deepEqual(s2.diskExports.forInstance('i-0000000000000002'), [])
    s2.close()
  })
})
