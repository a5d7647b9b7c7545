import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { after, before, describe, it } from 'node:test'
import { NODE, ROOT, startHost, stopHosts, tempDir, type TestHost } from '../helpers/cluster.ts'

const run = promisify(execFile)

/** Runs the CLI; its exit code, stdout and stderr, whether it failed or not. */
async function xenos (args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  try {
    const { stdout, stderr } = await run(NODE, ['--disable-warning=ExperimentalWarning', join(ROOT, 'src/cli/main.ts'), ...args])
    return { code: 0, stdout, stderr }
  } catch (err) {
    const e = err as { code: number, stdout: string, stderr: string }
    return { code: e.code, stdout: e.stdout, stderr: e.stderr }
  }
}

/** What the CLI says when a command cannot go on, and what it leaves behind. */
describe('CLI failures', () => {
  const hosts: TestHost[] = []
  let h: TestHost
  let dir: string

  before(async () => {
    h = await startHost({ name: 'cli-errors' })
    hosts.push(h)
    dir = await tempDir('cli-errors')
  })

  after(async () => {
    await stopHosts(hosts)
  })

  it('makes no user key for commands that only read, and makes it on the first signed one', async () => {
    const key = join(dir, 'reader', 'user.pem')
    const dead = await xenos(['--api', 'http://127.0.0.1:9', '--key', key, 'peers'])
    assert.equal(dead.code, 1)
    assert.match(dead.stderr, /^error PEER_UNREACHABLE: cannot reach the Xenos API at http:\/\/127.0.0.1:9/)
    for (const args of [['peers'], ['search', 'anything'], ['template', 'list'], ['instance', 'list']]) {
      assert.equal((await xenos(['--api', h.api, '--key', key, ...args])).code, 0, args.join(' '))
    }
    assert.deepEqual(JSON.parse((await xenos(['--api', h.api, '--key', key, '--json', 'instance', 'list'])).stdout), [], 'no key, no instances of one\'s own')
    assert.equal(existsSync(key), false, 'reading made no key')
    const signed = await xenos(['--api', h.api, '--key', key, 'template', 'import', join(ROOT, 'examples/hello.yaml')])
    assert.equal(signed.code, 0, signed.stderr)
    assert.match(signed.stderr, /created your user key/)
    assert.equal(existsSync(key), true, 'a command that needs the key made it')
  })

  it('names a file that is not there as the caller\'s mistake, in JSON with --json', async () => {
    const missing = join(dir, 'no-such.yaml')
    const plain = await xenos(['--api', h.api, '--key', join(dir, 'k.pem'), 'template', 'import', missing])
    assert.equal(plain.code, 1)
    assert.equal(plain.stderr, `error INVALID_ARGUMENT: ${missing}: no such file or directory\n`)
    const json = await xenos(['--api', h.api, '--key', join(dir, 'k.pem'), '--json', 'template', 'import', missing])
    assert.equal(json.code, 1)
    assert.deepEqual(JSON.parse(json.stderr), { error: { code: 'INVALID_ARGUMENT', message: `${missing}: no such file or directory` } })
    const forbidden = await xenos(['--api', h.api, '--key', join(dir, 'k.pem'), '--json', 'host', 'drain'])
    assert.equal(forbidden.code, 1)
    // After the line saying the key was made: the error, a line of JSON.
    assert.equal((JSON.parse(forbidden.stderr.trim().split('\n').at(-1) ?? '') as { error: { code: string } }).error.code, 'FORBIDDEN', forbidden.stderr)
  })
})
