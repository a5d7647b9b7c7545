import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdir, readFile, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { after, before, describe, it } from 'node:test'
import { cli, eventually, ROOT, startHost, stopHosts, tempDir, type TestHost } from '../helpers/cluster.ts'

const run = promisify(execFile)

/** Which entry point bin/entry.sh picks under `root`. */
async function entryUnder (root: string): Promise<string> {
  return (await run('sh', ['-c', `root='${root}'; . '${join(ROOT, 'bin/entry.sh')}'; entry cli/xenosd`])).stdout.trim()
}

/** bin/xenos and bin/xenosd run the JavaScript that scripts/build.sh compiles, while it is up to date. */
describe('the compiled build', () => {
  const hosts: TestHost[] = []

  before(async () => {
    // scripts/setup.sh builds it; a source edited since makes it stale, and then it is built here.
    if (!(await entryUnder(ROOT)).endsWith('.js')) await run('bash', [join(ROOT, 'scripts/build.sh')])
  })

  after(async () => {
    await stopHosts(hosts)
  })

  it('runs the compiled host and CLI, which see each other as the sources do', async () => {
    const a = await startHost({ name: 'compiled', executable: join(ROOT, 'bin/xenosd') })
    hosts.push(a)
    const cmdline = (await readFile(`/proc/${a.proc.pid ?? 0}/cmdline`, 'utf8')).split('\0')
    assert.ok(cmdline.includes(join(ROOT, 'dist/cli/xenosd.js')), cmdline.join(' '))
    assert.ok(cmdline.includes('--max-semi-space-size=4'), 'Node\'s options as XENOSD_NODE_FLAGS has them')
    const b = await startHost({ name: 'sources', bootstrap: [a] })
    hosts.push(b)
    const key = join(await tempDir('compiled-key'), 'user.pem')
    const hostsSeen = async (cmd: () => Promise<string>): Promise<boolean> => {
      const ids = (JSON.parse(await cmd()) as { hosts: Array<{ id: string }> }).hosts.map(h => h.id)
      return ids.includes(a.info.peerId) && ids.includes(b.info.peerId)
    }
    await eventually(async () => await hostsSeen(async () => (await run(join(ROOT, 'bin/xenos'), ['--api', a.api, '--key', key, '--json', 'peers'])).stdout) || undefined, 20_000, 'the compiled CLI to list both hosts through the compiled host')
    await eventually(async () => await hostsSeen(async () => JSON.stringify(await cli(b, key, ['peers']))) || undefined, 20_000, 'the sources\' CLI to list both through the other host')
  })

  it('says its version, package.json\'s, from the host and the CLI', async () => {
    const { version } = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }
    for (const bin of ['bin/xenosd', 'bin/xenos']) assert.equal((await run(join(ROOT, bin), ['--version'])).stdout.trim(), version, bin)
  })

  it('runs the sources when one is newer than the build, and the build where there are no sources', async () => {
    const root = await tempDir('entry')
    await mkdir(join(root, 'src/cli'), { recursive: true })
    await mkdir(join(root, 'dist'))
    await writeFile(join(root, 'src/cli/xenosd.ts'), '')
    assert.equal(await entryUnder(root), join(root, 'src/cli/xenosd.ts'), 'never built')
    await writeFile(join(root, 'dist/.built'), '')
    const hourAgo = new Date(Date.now() - 3_600_000)
    await utimes(join(root, 'src/cli/xenosd.ts'), hourAgo, hourAgo)
    assert.equal(await entryUnder(root), join(root, 'dist/cli/xenosd.js'), 'built after the last change')
    await utimes(join(root, 'src/cli/xenosd.ts'), new Date(), new Date(Date.now() + 1000))
    assert.equal(await entryUnder(root), join(root, 'src/cli/xenosd.ts'), 'a source changed since')
    const installed = await tempDir('installed')
    await mkdir(join(installed, 'dist'))
    await writeFile(join(installed, 'dist/.built'), '')
    assert.equal(await entryUnder(installed), join(installed, 'dist/cli/xenosd.js'), 'an installed package has only the build')
  })
})
