import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { Command } from 'commander'
import { daemonOptionsFrom, withDaemonOptions, type DaemonFlags } from '../../src/cli/daemon-options.ts'
import { tempDir } from '../helpers/cluster.ts'

/** xenosd's flags after parsing `args`, with the config file `yaml` if given. */
async function parse (args: string[], yaml?: string): Promise<DaemonFlags> {
  let flags: DaemonFlags | undefined
  const cmd = withDaemonOptions(new Command('xenosd')).exitOverride().action((f: DaemonFlags) => { flags = f })
  const extra: string[] = []
  if (yaml !== undefined) {
    const file = join(await tempDir('config'), 'xenosd.yaml')
    await writeFile(file, yaml)
    extra.push('--config', file)
  }
  await cmd.parseAsync([...extra, ...args], { from: 'user' })
  if (flags === undefined) throw new Error('no action ran')
  return flags
}

describe('xenosd --config', () => {
  it('takes every option from the file by its long name, lists for repeatable ones, and the command line over it', async () => {
    const yaml = 'api: 127.0.0.1:7390\nlisten: [/ip4/0.0.0.0/tcp/7391, /ip6/::/tcp/7391]\nbootstrap: /ip4/10.0.0.1/tcp/7381/p2p/12D3KooWxyz\nname: from-file\ncpu: 2\nmemory: 4096\nadvert-ttl: 30\ntag: [zone=a, tier=web]\nguest-outbound: true\ndirect-migration: false\naccel: tcg\nlog-level: warn\n'
    const o = daemonOptionsFrom(await parse([], yaml))
    assert.deepEqual(o.api, { host: '127.0.0.1', port: 7390 })
    assert.deepEqual(o.listen, ['/ip4/0.0.0.0/tcp/7391', '/ip6/::/tcp/7391'])
    assert.deepEqual(o.bootstrap, ['/ip4/10.0.0.1/tcp/7381/p2p/12D3KooWxyz'], 'one value for a repeatable option')
    assert.deepEqual([o.name, o.capacity, o.advertTtlMs, o.tags], ['from-file', { cpu: 2, memory: 4096 }, 30_000, { zone: 'a', tier: 'web' }])
    assert.deepEqual([o.guestOutbound, o.directMigration, o.accel, o.logLevel], [true, false, 'tcg', 'warn'])
    const over = daemonOptionsFrom(await parse(['--name', 'from-flag', '--listen', '/ip4/127.0.0.1/tcp/0'], yaml))
    assert.equal(over.name, 'from-flag')
    assert.deepEqual(over.listen, ['/ip4/127.0.0.1/tcp/0'], 'the command line\'s list, not both')
    assert.equal(over.api?.port, 7390, 'the rest from the file')
  })

  it('takes XENOS_DATA over the file, and the flag over both', async () => {
    const before = process.env.XENOS_DATA
    process.env.XENOS_DATA = '/from/env'
    try {
      assert.equal((await parse([], 'data: /from/file\n')).data, '/from/env')
      assert.equal((await parse(['--data', '/from/flag'], 'data: /from/file\n')).data, '/from/flag')
    } finally {
      if (before === undefined) delete process.env.XENOS_DATA
      else process.env.XENOS_DATA = before
    }
    assert.equal((await parse([], 'data: /from/file\n')).data, '/from/file')
  })

  it('refuses an unknown key, a value of the wrong kind and a file that is not a map, naming the line', async () => {
    await assert.rejects(parse([], 'name: a\napi-port: 7380\n'), /xenosd\.yaml:2: "api-port" is not an option of xenosd; the keys are data, api, listen/)
    await assert.rejects(parse([], 'cpu: lots\n'), /xenosd\.yaml:1: cpu: give a number, not "lots"/)
    await assert.rejects(parse([], 'mdns: yes please\n'), /mdns: give true or false/)
    await assert.rejects(parse([], 'accel: warp\n'), /accel: give one of auto, kvm, tcg/)
    await assert.rejects(parse([], 'name: [a, b]\n'), /name: give one value/)
    await assert.rejects(parse([], '- api\n'), /give the options as KEY: VALUE lines/)
    await assert.rejects(parse([], 'name: a\nname: b\n'), /xenosd\.yaml:2: Map keys must be unique/)
  })
})
