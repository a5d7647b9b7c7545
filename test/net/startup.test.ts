import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { XENOSD_NODE_FLAGS } from '../../src/cli/local-cloud.ts'
import { NODE, ROOT, tempDir } from '../helpers/cluster.ts'

/** Runs xenosd with `args` until it exits; what it said on stderr and its exit code. */
async function xenosdFails (args: string[]): Promise<{ code: number | null, stderr: string }> {
  const child = spawn(NODE, [...XENOSD_NODE_FLAGS, join(ROOT, 'src/cli/xenosd.ts'), '--log-level', 'warn', ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const timer = setTimeout(() => { child.kill('SIGKILL') }, 30_000)
  const code = await new Promise<number | null>(resolve => child.once('exit', resolve))
  clearTimeout(timer)
  return { code, stderr }
}

/** A start that cannot go on ends at once, with a code and a message that say what to change. */
describe('xenosd start-up failures', () => {
  let taken: Server
  let port = 0

  before(async () => {
    taken = createServer()
    await new Promise<void>(resolve => taken.listen(0, '127.0.0.1', resolve))
    port = (taken.address() as { port: number }).port
  })

  after(async () => {
    await new Promise(resolve => taken.close(resolve))
  })

  it('names a data dir it cannot use', async () => {
    const file = join(await tempDir('startup'), 'a-file')
    await writeFile(file, 'not a directory')
    for (const dir of [file, join(file, 'under')]) {
      const { code, stderr } = await xenosdFails(['--data', dir, '--api', '127.0.0.1:0', '--listen', '/ip4/127.0.0.1/tcp/0'])
      assert.equal(code, 1)
      assert.match(stderr, new RegExp(`^xenosd: DATA_DIR_UNUSABLE: cannot use ${dir} as the data dir \\((EEXIST|ENOTDIR)\\): give xenosd one it can write with --data`), stderr)
    }
  })

  it('names the API address that is taken, and the overlay address', async () => {
    const api = await xenosdFails(['--data', await tempDir('startup'), '--api', `127.0.0.1:${port}`, '--listen', '/ip4/127.0.0.1/tcp/0'])
    assert.equal(api.code, 1)
    assert.match(api.stderr, new RegExp(`^xenosd: ADDRESS_IN_USE: the API address 127.0.0.1:${port} is in use by another program \\(another xenosd\\?\\): stop it, or choose another address with --api`), api.stderr)
    const overlay = await xenosdFails(['--data', await tempDir('startup'), '--api', '127.0.0.1:0', '--listen', `/ip4/127.0.0.1/tcp/${port}`])
    assert.equal(overlay.code, 1)
    assert.match(overlay.stderr, /^xenosd: ADDRESS_IN_USE: an overlay address \(.*\) is in use by another program \(another xenosd\?\): stop it, or choose another address with --listen/, overlay.stderr)
  })
})
