import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { after, describe, it } from 'node:test'
import { eventually, ROOT, startHost, stopHosts, tempDir, type TestHost } from '../helpers/cluster.ts'

const run = promisify(execFile)

/** The package as npm packs it, installed where nothing else is: what an operator gets. */
describe('the installed package', () => {
  const hosts: TestHost[] = []

  after(async () => {
    await stopHosts(hosts)
  })

  it('packs what runs and nothing else, installs into an empty prefix, and runs a host that its CLI talks to', async () => {
    const out = await tempDir('pack')
    // prepack compiles the sources first.
    await run('npm', ['pack', '--pack-destination', out, '--loglevel=error'], { cwd: ROOT })
    const [tarball] = (await readdir(out)).filter(f => f.endsWith('.tgz'))
    assert.ok(tarball !== undefined)
    const files = (await run('tar', ['tzf', join(out, tarball)])).stdout.split('\n').filter(f => f !== '').map(f => f.replace(/^package\//, ''))
    for (const want of ['bin/xenosd', 'bin/xenos', 'bin/entry.sh', 'dist/.built', 'dist/cli/xenosd.js', 'dist/cli/main.js', 'guest/init', 'examples/hello.yaml', 'packaging/xenosd.service', 'package.json']) assert.ok(files.includes(want), `${want} is in the package`)
    const strays = files.filter(f => /^(src|test|bench|scripts|node_modules)\/|^tsconfig|^eslint/.test(f))
    assert.deepEqual(strays, [], 'no sources, tests, benchmarks or build files')

    const prefix = await tempDir('prefix')
    await run('npm', ['install', '--global', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', join(out, tarball)], { timeout: 300_000 })
    const h = await startHost({ name: 'installed', executable: join(prefix, 'bin/xenosd') })
    hosts.push(h)
    const key = join(await tempDir('installed-key'), 'user.pem')
    const peers = await eventually(async () => {
      const { stdout } = await run(join(prefix, 'bin/xenos'), ['--api', h.api, '--key', key, '--json', 'peers'])
      return JSON.parse(stdout) as { self: { id: string }, hosts: Array<{ id: string }> }
    }, 20_000, 'the installed CLI to answer through the installed host')
    assert.equal(peers.self.id, h.info.peerId)
    assert.ok(peers.hosts.some(x => x.id === h.info.peerId), 'the host lists itself')
  })

  it('carries a systemd unit that systemd takes, starting the installed xenosd', async (t) => {
    if (!existsSync('/usr/bin/systemd-analyze')) {
      t.skip('no systemd-analyze on this machine')
      return
    }
    const unit = await readFile(join(ROOT, 'packaging/xenosd.service'), 'utf8')
    assert.match(unit, /^ExecStart=\/opt\/xenos\/bin\/xenosd --config \/etc\/xenos\/xenosd\.yaml$/m)
    assert.match(unit, /^KillMode=process$/m, 'a stop leaves the instances running')
    // The unit as it reads for a package installed into a prefix of the test's own.
    const prefix = await tempDir('unit-prefix')
    await mkdir(join(prefix, 'bin'))
    await writeFile(join(prefix, 'bin/xenosd'), '#!/bin/sh\n', { mode: 0o755 })
    const dir = await tempDir('unit')
    await writeFile(join(dir, 'xenosd.service'), unit.replaceAll('/opt/xenos', prefix))
    const { stderr } = await run('systemd-analyze', ['verify', join(dir, 'xenosd.service')])
    assert.equal(stderr.trim(), '', 'systemd finds nothing wrong')
  })
})
