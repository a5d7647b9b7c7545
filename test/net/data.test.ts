import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, open, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { ApiClient, loadOrCreateUserKey } from '../../src/cli/index.ts'
import { cli, cliRun, eventually, getJson, httpGet, startHost, stopHost, stopHosts, tempDir, type TestHost } from '../helpers/cluster.ts'
import { skipWithoutQemu } from '../helpers/vm.ts'

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/** The data repository of a real xenosd, through the CLI and the HTTP API. */
describe('data repository', () => {
  let h: TestHost
  let dir: string
  let alice: string, bob: string, mallory: string
  const ids: Record<string, string> = {}

  before(async () => {
    dir = await tempDir('data-files')
    alice = join(dir, 'alice.pem')
    bob = join(dir, 'bob.pem')
    mallory = join(dir, 'mallory.pem')
    for (const [name, file] of Object.entries({ alice, bob, mallory })) ids[name] = (await loadOrCreateUserKey(file)).key.id
    h = await startHost({ name: 'data-a' })
  })

  after(async () => {
    await stopHost(h)
    // Gigabytes went through this host: leave none of them behind.
    await rm(h.dataDir, { recursive: true, force: true })
    await rm(dir, { recursive: true, force: true })
  })

  it('stores a file and gives it back intact; only its owner and the keys it granted reach it', async () => {
    const content = randomBytes(5 * 2 ** 20 + 3)
    await writeFile(join(dir, 'input.bin'), content)
    const blobs = async (): Promise<string[]> => await readdir(join(h.dataDir, 'blobs', 'sha256')).catch(() => [])
    const held = new Set(await blobs())
    const put = await cli(h, alice, ['data', 'put', join(dir, 'input.bin'), 'data://me/inputs/input.bin'])
    const added = (await blobs()).filter(b => !held.has(b))
    assert.equal(put.uri, `data://${ids.alice}/inputs/input.bin`)
    assert.equal(put.sha256, sha(content))
    await cli(h, alice, ['data', 'get', put.uri, join(dir, 'back.bin')], false)
    assert.ok((await readFile(join(dir, 'back.bin'))).equals(content))
    assert.deepEqual((await cli(h, alice, ['data', 'ls'])).map((f: any) => f.path), ['inputs/input.bin'])

    // Mallory can neither list, read, overwrite nor delete it.
    await assert.rejects(cli(h, mallory, ['data', 'ls', `data://${ids.alice}/`]), /FORBIDDEN/)
    await assert.rejects(cli(h, mallory, ['data', 'get', put.uri, join(dir, 'stolen.bin')]), /FORBIDDEN/)
    await assert.rejects(cli(h, mallory, ['data', 'put', join(dir, 'input.bin'), put.uri]), /FORBIDDEN/)
    await assert.rejects(cli(h, mallory, ['data', 'rm', put.uri]), /FORBIDDEN/)
    assert.equal(existsSync(join(dir, 'stolen.bin')), false)
    // Nor by signing a request for her own namespace and sending it for Alice's.
    const api = new ApiClient({ api: h.api, key: (await loadOrCreateUserKey(mallory)).key })
    const own = `data://${ids.mallory}/inputs/input.bin`
    await assert.rejects(api.signed('DELETE', `/v1/data/file?uri=${encodeURIComponent(put.uri)}`, 'data.delete', own, {}), /signature does not verify/)

    // Bob, granted reading, reads but cannot delete.
    await cli(h, alice, ['data', 'grant', '--', ids.bob ?? ''])
    await cli(h, bob, ['data', 'get', put.uri, join(dir, 'bob.bin')], false)
    assert.ok((await readFile(join(dir, 'bob.bin'))).equals(content))
    await assert.rejects(cli(h, bob, ['data', 'rm', put.uri]), /FORBIDDEN/)
    await cli(h, alice, ['data', 'revoke', '--', ids.bob ?? ''])
    await assert.rejects(cli(h, bob, ['data', 'ls', `data://${ids.alice}/`]), /FORBIDDEN/)

    // Removed, its bytes leave the disk with it.
    assert.equal(added.length, 1, 'the file\'s bytes went into the blob store')
    await cli(h, alice, ['data', 'rm', put.uri])
    await eventually(async () => (await blobs()).every(b => !added.includes(b)) || undefined, 10_000, 'the removed file\'s bytes to leave the disk')
  })

  it('refuses path tricks in names and links in uploaded directories', async () => {
    for (const target of ['data://me/../x', 'data://me/a/../../b', 'data://me//etc/passwd', 'data://me/a\\b']) {
      await assert.rejects(cli(h, alice, ['data', 'put', join(dir, 'input.bin'), target]), /INVALID_ARGUMENT/, target)
    }
    const api = new ApiClient({ api: h.api, key: (await loadOrCreateUserKey(alice)).key })
    const bad = `data://${ids.alice}/a/../../${ids.mallory}/x`
    await assert.rejects(api.signed('POST', '/v1/data/uploads', 'data.put', bad, { size: 1, sha256: sha(Buffer.from('x')) }, { uri: bad, size: 1, sha256: sha(Buffer.from('x')) }), /not a data name/)

    const tree = join(dir, 'tree')
    await mkdir(join(tree, 'sub'), { recursive: true })
    await writeFile(join(tree, 'a.txt'), 'a')
    await writeFile(join(tree, 'sub', 'b.txt'), 'b')
    const put = await cli(h, alice, ['data', 'put', tree, 'data://me/tree'])
    assert.deepEqual(put.files.map((f: any) => f.path), ['tree/a.txt', 'tree/sub/b.txt'])
    await symlink('/etc/passwd', join(tree, 'sub', 'link'))
    await assert.rejects(cli(h, alice, ['data', 'put', tree, 'data://me/tree2']), /symbolic link/)
    assert.deepEqual(await cli(h, alice, ['data', 'ls', 'data://me/tree2']), [], 'nothing of a refused directory was uploaded')
  })

  it('keeps no half file when xenosd is killed during an upload, and resumes the upload after a restart', async () => {
    const content = randomBytes(24 * 2 ** 20)
    await writeFile(join(dir, 'big.bin'), content)
    const uri = `data://${ids.alice}/big.bin`
    const api = new ApiClient({ api: h.api, key: (await loadOrCreateUserKey(alice)).key })
    const up = await api.signed<{ id: string }>('POST', '/v1/data/uploads', 'data.put', uri, { size: content.length, sha256: sha(content) }, { uri, size: content.length, sha256: sha(content) })
    // A sender that sends 8 MiB and then stalls, as a client on a slow link would.
    const stall = new AbortController()
    async function * stalled (): AsyncGenerator<Uint8Array> {
      yield content.subarray(0, 8 * 2 ** 20)
      await sleep(60_000, undefined, { signal: stall.signal }).catch(() => {})
    }
    void api.signedUpload(`/v1/data/uploads/${up.id}?offset=0`, 'data.upload', up.id, { offset: 0 }, stalled()).catch(() => {})
    const part = join(h.dataDir, 'uploads', up.id)
    await eventually(async () => existsSync(part) && (await stat(part)).size > 0, 30_000, 'bytes of the upload to arrive')
    await stopHost(h, 'SIGKILL')
    stall.abort()
    h = await startHost({ name: 'data-a', dataDir: h.dataDir })

    assert.deepEqual((await cli(h, alice, ['data', 'ls'])).map((f: any) => f.path).filter((p: string) => p === 'big.bin'), [], 'no half file shows')
    await assert.rejects(cli(h, alice, ['data', 'get', uri, join(dir, 'half.bin')]), /DATA_NOT_FOUND/)
    const { result, stderr } = await cliRun(h, alice, ['data', 'put', join(dir, 'big.bin'), uri])
    assert.match(stderr, /resuming at/)
    assert.equal(result.sha256, sha(content))
    await cli(h, alice, ['data', 'get', uri, join(dir, 'big-back.bin')], false)
    assert.ok((await readFile(join(dir, 'big-back.bin'))).equals(content))
    assert.deepEqual(await readdir(join(h.dataDir, 'uploads')), [], 'no part file is left')
  })

  it('gives a file held by one host through another, which fetches it verified; access is still decided where the data is', async () => {
    const b = await startHost({ name: 'data-b', bootstrap: [h] })
    try {
      const content = randomBytes(3 * 2 ** 20)
      await writeFile(join(dir, 'shared.bin'), content)
      const put = await cli(h, alice, ['data', 'put', join(dir, 'shared.bin'), 'data://me/shared.bin'])
      await eventually(async () => {
        try {
          await cli(b, alice, ['data', 'get', put.uri, join(dir, 'via-b.bin')], false)
          return true
        } catch (err) {
          if (!/DATA_NOT_FOUND/.test(String(err))) throw err
          return false
        }
      }, 30_000, 'B to find the host holding the file')
      assert.ok((await readFile(join(dir, 'via-b.bin'))).equals(content))
      await assert.rejects(cli(b, mallory, ['data', 'get', put.uri, join(dir, 'stolen-b.bin')]), /FORBIDDEN/)
      assert.equal(existsSync(join(dir, 'stolen-b.bin')), false)
    } finally {
      await stopHost(b)
    }
  })

  it('takes a 10,000-file directory and a 2 GiB file without holding them in memory', async () => {
    const many = join(dir, 'many')
    for (let d = 0; d < 100; d++) {
      await mkdir(join(many, `d${d}`), { recursive: true })
      await Promise.all(Array.from({ length: 100 }, async (_, f) => { await writeFile(join(many, `d${d}`, `f${f}.txt`), `${d}/${f} ${randomBytes(24).toString('hex')}\n`) }))
    }
    const put = await cli(h, alice, ['data', 'put', many, 'data://me/many'])
    assert.equal(put.files.length, 10_000)
    assert.equal((await cli(h, alice, ['data', 'ls', 'data://me/many', '--limit', '20000'])).length, 10_000)
    await cli(h, alice, ['data', 'get', 'data://me/many/d42/f7.txt', join(dir, 'f7.txt')], false)
    assert.match(await readFile(join(dir, 'f7.txt'), 'utf8'), /^42\/7 /)

    // 2 GiB of varied bytes, written 64 MiB at a time.
    const big = join(dir, 'two.bin')
    const block = randomBytes(64 * 2 ** 20)
    const fh = await open(big, 'w')
    for (let i = 0; i < 32; i++) {
      block.writeUInt32LE(i, 0)
      await fh.write(block)
    }
    await fh.close()
    const peakBefore = await peakRss(h)
    const file = await cli(h, alice, ['data', 'put', big, 'data://me/two.bin'])
    assert.equal(file.size, 2 * 2 ** 30)
    await cli(h, alice, ['data', 'get', 'data://me/two.bin', join(dir, 'two-back.bin')], false)
    assert.equal((await stat(join(dir, 'two-back.bin'))).size, 2 * 2 ** 30, 'it came back whole (the CLI checked its SHA-256)')
    const peak = await peakRss(h)
    assert.ok(peak < Math.max(peakBefore, 256 * 2 ** 20) + 256 * 2 ** 20, `xenosd's peak memory grew from ${peakBefore} to ${peak} bytes while 2 GiB went through it`)
    await rm(big, { force: true })
    await rm(join(dir, 'two-back.bin'), { force: true })
  })
})

/** The most memory the host's process has held so far (VmHWM), in bytes. */
async function peakRss (h: TestHost): Promise<number> {
  const status = await readFile(`/proc/${h.proc.pid}/status`, 'utf8')
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024
}

/** A service that shouts its input: it upper-cases /in/words.txt and serves the result at /out. */
const SHOUT = [
  'name: shout',
  'version: "1"',
  'resources: {cpu: 1, memory: 96}',
  'ports: [{name: http, protocol: http, guest: 8080, health: /out}]',
  'command: >-',
  '  mkdir -p /run/www; ls /in > /run/www/ls; tr a-z A-Z < /in/words.txt > /run/www/out; exec httpd -f -p 8080 -h /run/www',
  '',
].join('\n')

/** A task: upper-cases words.txt of the staged directory into /out/result/, copies another file of it, and leaves a link that must not be followed. */
const UPPER = [
  'name: upper',
  'version: "1"',
  'resources: {cpu: 1, memory: 96}',
  'command: >-',
  '  mkdir -p /out/result; tr a-z A-Z < /in/task/words.txt > /out/result/upper.txt; cp /in/task/more/extra.txt /out/result/; ln -s /etc/passwd /out/link',
  '',
].join('\n')

/** A task that reads its input twice, 15 s apart, and leaves what it read each time. */
const TWICE = [
  'name: twice',
  'version: "1"',
  'resources: {cpu: 1, memory: 96}',
  'command: >-',
  '  tr a-z A-Z < /in/twice.txt > /out/first.txt; sync; echo first written; sleep 15; tr a-z A-Z < /in/twice.txt > /out/second.txt',
  '',
].join('\n')

/** A task that takes a while, leaves a file and ends with code 3. */
const SLOW = [
  'name: slow',
  'version: "1"',
  'resources: {cpu: 1, memory: 96}',
  'command: >-',
  '  sleep 4; echo partial > /out/partial.txt; exit 3',
  '',
].join('\n')

/** A stage-in task: upper-cases /in/words.txt into /out/words/, and leaves a second file beside it. */
const STAGE_IN = [
  'name: stagein',
  'version: "1"',
  'resources: {cpu: 1, memory: 96}',
  'command: >-',
  '  mkdir -p /out/words; tr a-z A-Z < /in/words.txt > /out/words/words.txt; echo second > /out/words/two.txt',
  '',
].join('\n')

/** A job task: joins the two files of the directory staged at /in/words into /out/words.txt. */
const RENDER = [
  'name: render',
  'version: "1"',
  'resources: {cpu: 1, memory: 96}',
  'command: >-',
  '  cat /in/words/words.txt /in/words/two.txt > /out/words.txt',
  '',
].join('\n')

/** Data staged into real VMs: a file held by one host, read-only at /in in a VM on another. */
describe('staged inputs', { skip: skipWithoutQemu }, () => {
  let a: TestHost, b: TestHost
  let dir: string
  let alice: string, mallory: string

  before(async () => {
    dir = await tempDir('stage')
    alice = join(dir, 'alice.pem')
    mallory = join(dir, 'mallory.pem')
    a = await startHost({ name: 'stage-a' })
    b = await startHost({ name: 'stage-b', bootstrap: [a] })
    await mkdir(join(dir, 'shout'))
    await writeFile(join(dir, 'shout', 'template.yaml'), SHOUT)
    await cli(a, alice, ['template', 'build', join(dir, 'shout')])
    await mkdir(join(dir, 'upper'))
    await writeFile(join(dir, 'upper', 'template.yaml'), UPPER)
    await cli(a, alice, ['template', 'build', join(dir, 'upper')])
    await mkdir(join(dir, 'slow'))
    await writeFile(join(dir, 'slow', 'template.yaml'), SLOW)
    await cli(a, alice, ['template', 'build', join(dir, 'slow')])
    await mkdir(join(dir, 'twice'))
    await writeFile(join(dir, 'twice', 'template.yaml'), TWICE)
    await cli(a, alice, ['template', 'build', join(dir, 'twice')])
    for (const [name, manifest] of [['stagein', STAGE_IN], ['render', RENDER]] as const) {
      await mkdir(join(dir, name))
      await writeFile(join(dir, name, 'template.yaml'), manifest)
      await cli(a, alice, ['template', 'build', join(dir, name)])
    }
  })

  after(async () => {
    for (const h of [a, b]) {
      for (const i of (await getJson(h, '/v1/instances').catch(() => ({ instances: [] }))).instances) {
        if (i.host === h.info.peerId) await cli(h, alice, ['instance', 'destroy', i.id]).catch(() => {})
      }
    }
    await stopHosts([a, b])
  })

  it('mounts a file uploaded to one host read-only in a VM deployed on another; another key cannot stage it', async () => {
    const words = `hello from the repository ${randomBytes(8).toString('hex')}\n`
    await writeFile(join(dir, 'words.txt'), words)
    const put = await cli(a, alice, ['data', 'put', join(dir, 'words.txt'), 'data://me/in/words.txt'])
    const deployed = await eventually(async () => {
      try {
        return await cli(a, alice, ['deploy', 'shout', '--host', 'stage-b', '--in', put.uri, '--wait'])
      } catch (err) {
        if (/DATA_NOT_FOUND|no host holds/.test(String(err))) return undefined
        throw err
      }
    }, 60_000, 'B to find the file and run the VM')
    const inst = deployed.instances[0]
    assert.equal(inst.host, b.info.peerId)
    assert.equal((await httpGet(`${inst.endpoints[0].url}/out`))?.trim(), words.trim().toUpperCase())
    assert.equal((await httpGet(`${inst.endpoints[0].url}/ls`))?.trim(), 'words.txt')

    const api = new ApiClient({ api: a.api, key: (await loadOrCreateUserKey(mallory)).key })
    const t = await api.template<{ id: string }>('shout')
    await assert.rejects(api.deploy(t.id, { hosts: [b.info.peerId], count: 1, spec: { name: null, inputs: [{ uri: put.uri }] } }),
      (err: any) => err.code === 'FORBIDDEN' && /not granted/.test(err.message))
    assert.equal((await getJson(b, '/v1/instances')).instances.filter((i: any) => i.owner !== inst.owner).length, 0, 'nothing of hers runs on B')
  })

  it('runs a task on a staged directory to its end and stores what it left at /out, refusing links; the record and the output come through another host', async () => {
    const words = `a task reads its input ${randomBytes(8).toString('hex')}\n`
    await mkdir(join(dir, 'task', 'more'), { recursive: true })
    await writeFile(join(dir, 'task', 'words.txt'), words)
    await writeFile(join(dir, 'task', 'more', 'extra.txt'), 'extra\n')
    await cli(a, alice, ['data', 'put', join(dir, 'task'), 'data://me/task'])
    const { result: task, stderr } = await cliRun(a, alice, ['run', 'upper', '--in', 'data://me/task', '--out', 'results/t1', '--host', 'stage-b', '--out-size', '16'])
    assert.match(stderr, /task i-[0-9a-f]+ on \S+: (running|collecting|succeeded)/, 'the run shows what the task does')
    assert.equal(task.state, 'succeeded', task.error)
    assert.equal(task.exitCode, 0)
    assert.equal(task.host, b.info.peerId)
    assert.deepEqual(task.files.map((f: any) => f.path).sort(), ['results/t1/result/extra.txt', 'results/t1/result/upper.txt'])
    assert.deepEqual(task.refused.map((r: any) => [r.path, r.reason]), [['link', 'a symbolic link']])
    const upper = task.files.find((f: any) => f.path.endsWith('upper.txt'))
    await cli(a, alice, ['data', 'get', upper.uri, join(dir, 'upper.txt')], false)
    assert.equal(await readFile(join(dir, 'upper.txt'), 'utf8'), words.toUpperCase())
    assert.equal((await getJson(b, '/v1/instances')).instances.some((i: any) => i.id === task.id), false, 'the task\'s VM is gone')

    // The record stays with the host that ran it; A finds that host.
    const shown = await cli(a, alice, ['task', 'show', task.id])
    assert.deepEqual([shown.state, shown.instanceState, shown.files.length], ['succeeded', null, 2])
    assert.deepEqual((await cli(b, alice, ['task', 'ls'])).map((t: any) => t.id), [task.id])
    await assert.rejects(cli(a, mallory, ['task', 'show', task.id]), /FORBIDDEN/)
    assert.deepEqual(await cli(b, mallory, ['task', 'ls']), [], 'another key sees none of her tasks')
  })

  it('runs a deployment\'s stage-in, job and service in order, each reading what the one before stored on another host; keeps only the outputs it says', async () => {
    const words = `words through a deployment ${randomBytes(8).toString('hex')}\n`
    await writeFile(join(dir, 'dep-words.txt'), words)
    await cli(a, alice, ['data', 'put', join(dir, 'dep-words.txt'), 'data://me/dep/words.txt'])
    const description = (input: string): string => `name: report
components:
  report:
    kind: sequence
    components:
      fetch:
        template: stagein
        task: { outputs: report/in }
        storage: { inputs: ["${input}"], size: 16 }
        placement: { host: stage-a }
      render:
        template: render
        task: { outputs: report/out }
        storage: { inputs: ["data://me/report/in/words"], keep: outputs, size: 16 }
        placement: { host: stage-b }
  site:
    template: shout
    after: [report]
    storage: { inputs: ["data://me/report/out/words.txt"] }
    placement: { host: stage-a }
`
    const file = join(dir, 'report.yaml')
    await writeFile(file, description('data://me/dep/words.txt'))
    const d = await cli(a, alice, ['apply', file, '--supervisors', '1'])
    assert.equal(d.state, 'running', JSON.stringify(d))
    assert.deepEqual(d.components.map((c: any) => [c.path, c.state]), [['report.fetch', 'completed'], ['report.render', 'completed'], ['site', 'running']])
    const [fetch, render] = d.components
    assert.ok(fetch.events.some((e: any) => /completed: 2 file\(s\) stored/.test(e.event)), JSON.stringify(fetch.events))
    assert.equal(render.instances[0].host, b.info.peerId, 'the job ran on B, reading what the stage-in stored on A')
    const site = await cli(a, alice, ['instance', 'show', d.components[2].instances[0].id])
    assert.equal((await httpGet(`${site.endpoints[0].url}/out`))?.trim(), `${words.trim().toUpperCase()}\nSECOND`, 'the service reads what the job stored on B')
    const stored = async (h: TestHost): Promise<string[]> => (await cli(h, alice, ['data', 'ls'])).map((f: any) => f.path).filter((p: string) => p.startsWith('report/')).sort()
    assert.deepEqual(await stored(a), ['report/in/words/two.txt', 'report/in/words/words.txt'])
    assert.deepEqual(await stored(b), ['report/out/words.txt'])

    const ended = await cli(a, alice, ['terminate', 'report'])
    assert.equal(ended.state, 'terminated')
    assert.deepEqual(await stored(a), [], 'what the stage-in stored goes with the deployment')
    assert.deepEqual(await stored(b), ['report/out/words.txt'], 'the job\'s outputs stay, as its storage says')
    for (const h of [a, b]) assert.deepEqual((await getJson(h, '/v1/instances')).instances.filter((i: any) => i.host === h.info.peerId && i.name.startsWith('report')), [], `nothing of it runs on ${h.name}`)

    // Mallory names Alice's file in a description of hers: the host holding it reads it in no stead but hers.
    await writeFile(file, description(`data://${d.owner as string}/dep/words.txt`))
    await assert.rejects(cli(a, mallory, ['apply', file, '--supervisors', '1']), /"state": "failed"[^]*belongs to another owner, who has not granted your key/)
    const theirs = await cli(a, mallory, ['deployment', 'show', 'report'])
    assert.deepEqual(theirs.components.map((c: any) => [c.path, c.state, c.termination?.kind]), [['report.fetch', 'failed', 'abnormal'], ['report.render', 'waiting', undefined], ['site', 'waiting', undefined]])
    assert.deepEqual((await getJson(a, '/v1/instances')).instances.filter((i: any) => i.owner === theirs.owner), [], 'nothing of hers runs')
    await cli(a, mallory, ['terminate', 'report'])
  })

  for (const copyDisk of [false, true]) {
    it(`moves a running task to another host ${copyDisk ? 'with its disks (--copy-disk): the first host keeps nothing' : 'while its inputs and outputs stay with the first host, served to the second'}, and the second finishes the task`, async () => {
      const words = `read before and after the move ${randomBytes(8).toString('hex')}\n`
      await writeFile(join(dir, 'twice.txt'), words)
      const put = await cli(a, alice, ['data', 'put', join(dir, 'twice.txt'), 'data://me/in/twice.txt'])
      const api = new ApiClient({ api: a.api, key: (await loadOrCreateUserKey(alice)).key })
      const t = await api.template<{ id: string }>('twice')
      const outputs = `results/twice-${String(copyDisk)}`
      const deployed = await api.deploy(t.id, {
        hosts: [a.info.peerId], count: 1, spec: { name: null, outputBytes: 16 * 2 ** 20, task: { outputs, keep: false }, inputs: [{ uri: put.uri }] },
      })
      const id = deployed.instances[0]?.id ?? ''
      await eventually(async () => /first written/.test((await cli(a, alice, ['instance', 'logs', id])).text), 120_000, 'the task to read its input once')
      const moved = await cli(a, alice, ['migrate', id, '--to', 'stage-b', ...copyDisk ? ['--copy-disk'] : []])
      if (copyDisk) {
        assert.ok(moved.copiedDiskBytes > 0, `copied ${moved.copiedDiskBytes} bytes`)
        assert.equal(existsSync(join(a.dataDir, 'instances', id)), false, 'A keeps nothing of it')
      } else {
        assert.equal(moved.copiedDiskBytes, 0)
      }
      // Asked through A, which ran it first, the task is found on B, which finishes it.
      const task = await eventually(async () => {
        const v = await cli(a, alice, ['task', 'show', id]).catch(() => undefined)
        return v?.state === 'succeeded' || v?.state === 'failed' ? v : undefined
      }, 90_000, 'the moved task to end')
      assert.equal(task.state, 'succeeded', task.error)
      assert.equal(task.host, b.info.peerId)
      assert.deepEqual(task.files.map((f: any) => f.path).sort(), [`${outputs}/first.txt`, `${outputs}/second.txt`])
      for (const f of task.files) {
        await cli(b, alice, ['data', 'get', f.uri, join(dir, 'got.txt')], false)
        assert.equal(await readFile(join(dir, 'got.txt'), 'utf8'), words.toUpperCase(), f.path)
      }
      assert.deepEqual((await cli(a, alice, ['task', 'ls'])).map((x: any) => x.id).filter((x: string) => x === id), [], 'A keeps no record of it')
      // Its VM ended on B, and A drops the disks it served.
      await eventually(async () => !existsSync(join(a.dataDir, 'instances', id)), 30_000, 'A to drop the disks of the ended task')
    })
  }

  it('finishes a task whose host was killed while it ran: its exit code and outputs are recorded after the restart, and its VM is removed', async () => {
    const api = new ApiClient({ api: a.api, key: (await loadOrCreateUserKey(alice)).key })
    const t = await api.template<{ id: string }>('slow')
    const deployed = await api.deploy(t.id, { hosts: [b.info.peerId], count: 1, spec: { name: null, outputBytes: 16 * 2 ** 20, task: { outputs: 'results/slow', keep: false } } })
    const id = deployed.instances[0]?.id ?? ''
    await stopHost(b, 'SIGKILL')
    // The VM runs on without its host, and ends while the host is away.
    await eventually(async () => (await readFile(join(b.dataDir, 'instances', id, 'console.log'), 'utf8').catch(() => '')).includes('the service ended with code 3'), 120_000, 'the task to end')
    await sleep(3000)
    b = await startHost({ name: 'stage-b', dataDir: b.dataDir, bootstrap: [a] })
    // Asked through A, which finds the host that runs it.
    const task = await eventually(async () => {
      const v = await api.signed<any>('GET', `/v1/tasks/${id}`, 'task.get', id, {}, undefined, b.info.peerId).catch(() => undefined)
      return v?.state === 'failed' || v?.state === 'succeeded' ? v : undefined
    }, 60_000, 'the task to be finished after the restart')
    assert.equal(task.state, 'failed')
    assert.equal(task.exitCode, 3)
    assert.match(task.error, /with code 3/)
    assert.deepEqual(task.files.map((f: any) => f.path), ['results/slow/partial.txt'], 'a failed task\'s outputs are kept too')
    await eventually(async () => !existsSync(join(b.dataDir, 'instances', id)), 30_000, 'the ended task\'s VM to be removed')
  })
})
