import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { cli, eventually, HELLO_MANIFEST, httpGet, startHost, stopHost, stopHosts, tempDir, type TestHost } from '../helpers/cluster.ts'

/** `kill -9` of xenosd loses nothing: templates and instances are known again after a restart. */
describe('xenosd killed and restarted', () => {
  const running: TestHost[] = []
  after(async () => { await stopHosts(running) })

  it('re-attaches to running instances and reports those that died meanwhile as failed', async () => {
    const keys = await tempDir('keys')
    const alice = join(keys, 'alice.pem')
    const dying = join(keys, 'dying.yaml')
    await writeFile(dying, [
      'name: dying', 'version: "1"', 'driver: process',
      'command: "echo started; echo ready > ready; while [ ! -f stop-now ]; do sleep 0.1; done; echo last words; exit 3"',
    ].join('\n'))
    const first = await startHost({ name: 'r' })
    running.push(first)
    const template = await cli(first, alice, ['template', 'import', HELLO_MANIFEST])
    await cli(first, alice, ['template', 'import', dying])
    const web = (await cli(first, alice, ['deploy', 'hello'])).instances[0]
    const stopped = (await cli(first, alice, ['deploy', 'hello', '--name', 'idle'])).instances[0]
    await cli(first, alice, ['instance', 'stop', stopped.id])
    const doomed = (await cli(first, alice, ['deploy', 'dying'])).instances[0]
    const url = web.endpoints[0].url
    await eventually(async () => await httpGet(url), 10_000, 'the web instance')

    await stopHost(first, 'SIGKILL')
    assert.match(await httpGet(url) ?? '', /hello from/, 'the instance outlives its host process')
    // The doomed task ends while no xenosd watches it.
    await writeFile(join(first.dataDir, 'instances', doomed.id, 'work', 'stop-now'), '')
    await new Promise(resolve => setTimeout(resolve, 500))

    const second = await startHost({ name: 'r', dataDir: first.dataDir })
    running.push(second)
    const templates = await cli(second, alice, ['template', 'list'])
    assert.ok(templates.some((t: any) => t.id === template.id), 'templates survive')
    const list = await cli(second, alice, ['instance', 'list'])
    const byId = new Map(list.map((i: any) => [i.id, i]))
    assert.equal((byId.get(web.id) as any)?.state, 'running')
    assert.equal((byId.get(stopped.id) as any)?.state, 'stopped')
    assert.equal((byId.get(doomed.id) as any)?.state, 'failed')
    assert.equal((byId.get(doomed.id) as any)?.error, undefined, 'what its task printed is not for everyone to see')
    const failed = await cli(second, alice, ['instance', 'show', doomed.id])
    assert.match(failed.error, /while xenosd was not running/)
    assert.match(failed.error, /last words/, 'the failure report carries the task\'s last output')

    // The re-attached instance is still controlled by its host.
    assert.equal((await cli(second, alice, ['instance', 'pause', web.id])).state, 'paused')
    assert.equal(await httpGet(url, 700), undefined)
    assert.equal((await cli(second, alice, ['instance', 'resume', web.id])).state, 'running')
    assert.match(await httpGet(url) ?? '', /hello from/)
    for (const id of [web.id, stopped.id, doomed.id]) await cli(second, alice, ['instance', 'destroy', id])
    assert.equal(await httpGet(url, 700), undefined)
    assert.deepEqual(await cli(second, alice, ['instance', 'list']), [])
  })

  it('notices a task that ends while it runs', async () => {
    const keys = await tempDir('keys')
    const alice = join(keys, 'alice.pem')
    const host = await startHost({ name: 'w' })
    running.push(host)
    const crash = join(keys, 'crash.yaml')
    await writeFile(crash, 'name: crash\nversion: "1"\ndriver: process\ncommand: "echo about to fail; sleep 0.5; exit 7"\n')
    await cli(host, alice, ['template', 'import', crash])
    const inst = (await cli(host, alice, ['deploy', 'crash'])).instances[0]
    const failed = await eventually(async () => {
      const v = await cli(host, alice, ['instance', 'show', inst.id])
      return v.state === 'failed' ? v : undefined
    }, 10_000, 'the instance to fail')
    assert.match(failed.error, /exited with code 7/)
    assert.match(failed.error, /about to fail/)
    const logs = await cli(host, alice, ['instance', 'logs', inst.id])
    assert.match(logs.text, /about to fail/)
    await cli(host, alice, ['instance', 'destroy', inst.id])
  })
})
