import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { cli, cliStart, eventually, getJson, httpGet, operatorOf, publicViewOf, ROOT, startHost, stopHost, stopHosts, tempDir, type TestHost } from '../helpers/cluster.ts'
import { count, countOnce, skipWithoutQemu } from '../helpers/vm.ts'
import { ApiClient, loadOrCreateUserKey } from '../../src/cli/index.ts'

const skip = skipWithoutQemu
const HOST_ARGS = ['--cpu', '4', '--memory', '1024']

/** Follows a counter wherever it runs, through its advertised endpoint, recording every value read. */
function follow (h: TestHost, id: string): { values: number[], stop: () => Promise<void> } {
  const values: number[] = []
  let running = true
  const loop = (async () => {
    while (running) {
      const v = await publicViewOf(h, id).catch(() => undefined)
      const url = v?.endpoints?.[0]?.url
      const n = url === undefined ? undefined : await count(url)
      if (n !== undefined) values.push(n)
      await sleep(100)
    }
  })()
  return { values, stop: async () => { running = false; await loop } }
}

/** A client looping on a local port, a fresh connection per request, recording values and failures. */
function loopOn (port: number): { values: number[], failures: string[], stop: () => Promise<void> } {
  const values: number[] = []
  const failures: string[] = []
  let running = true
  const t0 = Date.now()
  const loop = (async () => {
    while (running) {
      const sent = Date.now() - t0
      await countOnce(port).then(n => { values.push(n) }, (err: unknown) => { failures.push(`request sent at ${sent} ms: ${(err as Error).message}`) })
      await sleep(20)
    }
  })()
  return { values, failures, stop: async () => { running = false; await loop } }
}

/**
 * A service that lives on its disk: it writes 4 MiB of random data once, then ten times a second
 * writes its count to the disk, syncs, drops the guest's page cache and hashes the data again,
 * so every answer comes from the disk, wherever the disk is.
 */
const SCRIBE = [
  'name: scribe',
  'version: "1"',
  'disk: 32',
  'resources: {cpu: 1, memory: 96}',
  'ports: [{name: http, protocol: http, guest: 8080, health: /count}]',
  'command: >-',
  '  mkdir -p /srv/www;',
  '  [ -f /srv/blob ] || { dd if=/dev/urandom of=/srv/blob bs=1M count=4 2>/dev/null; md5sum /srv/blob | cut -c1-32 > /srv/www/made; sync; };',
  '  (n=0; while :; do n=$((n+1)); echo $n > /srv/www/count.tmp; mv /srv/www/count.tmp /srv/www/count; sync;',
  '  echo 3 > /proc/sys/vm/drop_caches; md5sum /srv/blob | cut -c1-32 > /srv/www/sum.tmp; mv /srv/www/sum.tmp /srv/www/sum; sleep 0.1; done) &',
  '  exec httpd -f -p 8080 -h /srv/www',
  '',
].join('\n')

/**
 * A service that rewrites its memory all the time: it fills 4 MiB of a RAM disk with random data
 * and hashes it, over and over, counting the rounds.
 */
const CHURN = [
  'name: churn',
  'version: "1"',
  'resources: {cpu: 1, memory: 96}',
  'ports: [{name: http, protocol: http, guest: 8080, health: /count}]',
  'command: >-',
  '  mkdir -p /srv/www /dev/shm; mount -t tmpfs tmpfs /dev/shm;',
  '  (n=0; while :; do n=$((n+1)); echo $n > /srv/www/count; dd if=/dev/urandom of=/dev/shm/x bs=1M count=4 2>/dev/null; md5sum /dev/shm/x > /dev/null; done) &',
  '  exec httpd -f -p 8080 -h /srv/www',
  '',
].join('\n')

/** How many processes have `pattern` in their command line. */
function processesOf (pattern: string): number {
  try {
    return execFileSync('pgrep', ['-f', pattern]).toString().trim().split('\n').length
  } catch {
    return 0
  }
}

/** Live migration of real VMs between xenosd processes: the disk stays, the memory moves. */
describe('live migration', { skip }, () => {
  let a: TestHost, b: TestHost
  let alice: string
  let mallory: string
  const hosts: TestHost[] = []

  before(async () => {
    const keys = await tempDir('keys')
    alice = join(keys, 'alice.pem')
    mallory = join(keys, 'mallory.pem')
    a = await startHost({ name: 'mig-a', extraArgs: HOST_ARGS })
    b = await startHost({ name: 'mig-b', bootstrap: [a], extraArgs: HOST_ARGS })
    hosts.push(a, b)
    await cli(a, alice, ['template', 'build', join(ROOT, 'examples/counter')])
  })

  after(async () => {
    for (const h of hosts) {
      for (const i of (await getJson(h, '/v1/instances').catch(() => ({ instances: [] }))).instances) {
        if (i.host === h.info.peerId) await cli(h, alice, ['instance', 'destroy', i.id]).catch(() => {})
      }
    }
    await stopHosts(hosts)
  })

  it('moves a counting VM to another host while it counts on, without moving its disk', async t => {
    const inst = (await cli(a, alice, ['deploy', 'counter', '--host', 'mig-a', '--wait'])).instances[0]
    await eventually(async () => (await count(inst.endpoints[0].url) ?? 0) > 5, 60_000, 'the counter to count')
    await assert.rejects(cli(a, mallory, ['migrate', inst.id, '--to', 'mig-b']), /FORBIDDEN/)
    const watch = follow(a, inst.id)
    // A client reaching it through `xenos connect` on A: first on A itself, then through B; and
    // one on B, where it arrives (which must not take it for here before it has taken over).
    const connect = await cliStart(a, alice, ['connect', inst.id])
    assert.equal(connect.first.event, 'listening')
    const client = loopOn(connect.first.port)
    const atDestination = await cliStart(b, alice, ['connect', inst.id])
    const there = loopOn(atDestination.first.port)
    // Stopped below; here too, so that a failed assertion leaves no loop or process behind.
    t.after(async () => { await watch.stop(); await client.stop(); await connect.stop(); await there.stop(); await atDestination.stop() })
    await sleep(1000)
    const moveStarted = Date.now()
    const moving = cli(a, alice, ['migrate', inst.id, '--to', 'mig-b'])
    // While it moves, another move (through the API, at once) is refused.
    await eventually(async () => existsSync(join(b.dataDir, 'instances', inst.id)), 120_000, 'B to prepare the arriving VM', 20)
    const api = new ApiClient({ api: a.api, key: (await loadOrCreateUserKey(alice)).key })
    await assert.rejects(api.signed('POST', `/v1/instances/${inst.id}/migrate`, 'migrate', inst.id, { to: b.info.peerId, copyDisk: false }, { to: b.info.peerId }, a.info.peerId), /is migrating/)
    const result = await moving
    const afterMove = client.values.length
    const thereAtMove = there.values.length
    const moveTook = Date.now() - moveStarted
    await sleep(1500)
    await watch.stop()
    await client.stop()
    await connect.stop()
    await there.stop()
    await atDestination.stop()
    assert.deepEqual(client.failures, [], `no request through xenos connect failed (the move took ${moveTook} ms, ${result.downtimeMs} ms paused)`)
    assert.deepEqual(there.failures, [], 'no request through xenos connect on the destination failed')
    assert.ok(thereAtMove > 5 && there.values.length > thereAtMove + 5, `the client on the destination was answered before (${thereAtMove}) and after (${there.values.length - thereAtMove}) the move`)
    assert.ok(afterMove > 5 && client.values.length > afterMove + 5, `requests before (${afterMove}) and after (${client.values.length - afterMove}) the move`)
    for (let i = 1; i < client.values.length; i++) assert.ok((client.values[i] ?? 0) >= (client.values[i - 1] ?? 0), `the count went back: ${client.values.join(' ')}`)

    assert.equal(result.to, b.info.peerId)
    assert.equal(result.memoryPath, 'direct', 'the memory went straight to B')
    assert.ok(result.transferredBytes > 0 && result.transferredBytes < 512 * 1024 * 1024, `memory sent: ${result.transferredBytes}`)
    const moved = await cli(b, alice, ['instance', 'show', inst.id])
    assert.equal(moved.host, b.info.peerId)
    assert.equal(moved.state, 'running')
    // The count went on through the move and never went back.
    const values = watch.values
    assert.ok(values.length > 10, `read ${values.length} values`)
    for (let i = 1; i < values.length; i++) assert.ok((values[i] ?? 0) >= (values[i - 1] ?? 0), `the count went back: ${values.join(' ')}`)
    const after = await count(moved.endpoints[0].url)
    assert.ok(after !== undefined && after > (values[0] ?? 0))
    // A's old endpoint forwards to B for a while.
    const forwarded = await count(inst.endpoints[0].url)
    assert.ok(forwarded !== undefined && forwarded >= after, `the old endpoint on A answers from B: ${forwarded}`)
    // The disk stayed on A, served to B: B holds no disk of the instance; A still has it.
    assert.equal(existsSync(join(b.dataDir, 'instances', inst.id, 'disk.qcow2')), false)
    assert.equal(existsSync(join(a.dataDir, 'instances', inst.id, 'disk.qcow2')), true)
    assert.equal((await getJson(a, '/v1/instances')).instances.filter((i: any) => i.id === inst.id && i.host === a.info.peerId).length, 0, 'A no longer runs it')
    // A's metrics count the move, its pause, and the calls it made to B for it.
    const metrics = await (await fetch(`${a.api}/metrics`)).text()
    assert.match(metrics, /^xenos_migration_duration_seconds_count\{result="ok"\} 1$/m)
    assert.match(metrics, /^xenos_migration_downtime_seconds_count 1$/m)
    assert.match(metrics, /^xenos_rpc_duration_seconds_count\{method="migrate\.prepare",side="client",code="ok"\} [1-9]/m)

    // Destroying it on B lets A drop the disk.
    await cli(b, alice, ['instance', 'destroy', inst.id])
    await eventually(async () => !existsSync(join(a.dataDir, 'instances', inst.id)), 10_000, 'A to drop the disk')
  })

  it('replicates a service to another host, booted or from a snapshot, and spreads connections to its name over the replicas', async () => {
    const first = (await cli(a, alice, ['deploy', 'counter', '--host', 'mig-a', '--name', 'svc', '--wait'])).instances[0]
    await eventually(async () => (await count(first.endpoints[0].url) ?? 0) > 5, 60_000, 'the counter to count')
    await assert.rejects(cli(a, mallory, ['replicate', first.id, '--to', 'mig-b']), /FORBIDDEN/)

    const fresh = await cli(a, alice, ['replicate', first.id, '--to', 'mig-b'])
    assert.equal(fresh.host, b.info.peerId)
    assert.equal(fresh.name, 'svc')
    assert.equal(fresh.template, first.template)
    assert.notEqual(fresh.id, first.id)

    const before = await count(first.endpoints[0].url) ?? 0
    const copy = await cli(a, alice, ['replicate', first.id, '--to', 'mig-b', '--from-snapshot'])
    assert.equal(copy.host, b.info.peerId)
    assert.equal(copy.name, 'svc')
    // The copy carries the original's memory: it counts on from where the snapshot was taken.
    const copied = await eventually(async () => await count(copy.endpoints[0].url), 30_000, 'the copy to answer')
    assert.ok(copied >= before, `the copy counts on from the original's count (${before}): ${copied}`)
    assert.equal((await cli(a, alice, ['instance', 'show', first.id])).state, 'running', 'the original runs on')

    // Connections to the name go to each running replica in turn: the booted one counts far lower.
    const connect = await cliStart(a, alice, ['connect', 'svc'])
    const values: number[] = []
    for (let i = 0; i < 6; i++) values.push(await countOnce(connect.first.port))
    await connect.stop()
    assert.ok(Math.max(...values) - Math.min(...values) > 30, `requests reached different replicas: ${values.join(' ')}`)
    for (const i of [first, fresh, copy]) await cli(a, alice, ['instance', 'destroy', i.id])
  })

  it('drains a host: every running instance moves to another host, and it takes no new ones until undrained', async () => {
    const deployed = (await cli(a, alice, ['deploy', 'counter', '--host', 'mig-a', '--count', '2', '--wait'])).instances
    for (const i of deployed) await eventually(async () => (await count(i.endpoints[0].url) ?? 0) > 3, 60_000, 'the counters to count')
    const drained = await cli(a, operatorOf(a), ['host', 'drain'])
    assert.deepEqual(drained.stayed, [])
    assert.deepEqual(drained.moved.map((m: any) => m.id).sort(), deployed.map((i: any) => i.id).sort())
    assert.ok(drained.moved.every((m: any) => m.to === b.info.peerId))
    assert.equal((await getJson(a, '/v1/instances')).instances.filter((i: any) => i.host === a.info.peerId).length, 0, 'A is empty')
    // Disks and all: A keeps nothing of them.
    for (const i of deployed) assert.equal(existsSync(join(a.dataDir, 'instances', i.id)), false, `A dropped ${i.id}`)
    for (const i of deployed) {
      const v = await cli(b, alice, ['instance', 'show', i.id])
      assert.equal(v.state, 'running')
      assert.ok(await eventually(async () => await count(v.endpoints[0].url), 30_000, 'the moved counter to answer') > 3)
    }
    await assert.rejects(cli(a, alice, ['deploy', 'counter', '--host', 'mig-a']), /ADMISSION_REFUSED/)
    await cli(a, operatorOf(a), ['host', 'undrain'])
    for (const i of deployed) await cli(b, alice, ['instance', 'destroy', i.id])
  })

  it('moves a guest that rewrites its memory all the time back and forth, and it runs on unharmed', async () => {
    const dir = await tempDir('churn')
    await writeFile(join(dir, 'template.yaml'), CHURN)
    await cli(a, alice, ['template', 'build', dir])
    const inst = (await cli(a, alice, ['deploy', 'churn', '--host', 'mig-a', '--wait'])).instances[0]
    await eventually(async () => (await count(inst.endpoints[0].url) ?? 0) > 3, 60_000, 'the churn to count')
    let last = 0
    for (const [from, to] of [[a, b], [b, a], [a, b], [b, a]] as const) {
      await cli(from, alice, ['migrate', inst.id, '--to', to.name])
      const v = await cli(to, alice, ['instance', 'show', inst.id])
      assert.equal(v.state, 'running')
      // Memory that arrived stale shows as a kernel oops, or a guest that stops counting.
      const n = await eventually(async () => { const c = await count(v.endpoints[0].url); return c !== undefined && c > last + 3 ? c : undefined }, 30_000, `the churn to count on on ${to.name}`)
      const { text } = await cli(to, alice, ['instance', 'logs', inst.id, '--lines', '200'])
      assert.doesNotMatch(text, /Oops|BUG|general protection|Kernel panic/, `the guest's kernel on ${to.name}`)
      last = n
    }
    await cli(a, alice, ['instance', 'destroy', inst.id])
  })

  for (const copyDisk of [false, true]) {
    it(`keeps the VM running on its host when the destination dies mid-way${copyDisk ? ' while the disk is copied too' : ''}, and leaves no debris there`, async () => {
      const name = copyDisk ? 'mig-e' : 'mig-c'
      const c = await startHost({ name, bootstrap: [a], extraArgs: HOST_ARGS })
      hosts.push(c)
      const inst = (await cli(a, alice, ['deploy', 'counter', '--host', 'mig-a', '--wait'])).instances[0]
      const url = inst.endpoints[0].url
      await eventually(async () => (await count(url) ?? 0) > 5, 60_000, 'the counter to count')
      // Its failure may come at once or only after A's count is read below: hold it until then.
      const migrating = cli(a, alice, ['migrate', inst.id, '--to', name, ...(copyDisk ? ['--copy-disk'] : [])]).then(() => undefined, (err: unknown) => err)
      await eventually(async () => existsSync(join(c.dataDir, 'instances', inst.id)), 120_000, 'C to prepare the arriving VM', 20)
      await sleep(300)
      await stopHost(c, 'SIGKILL')
      const before = await eventually(async () => await count(url), 30_000, 'the counter on A after the failed move')
      assert.ok(await migrating instanceof Error, 'the migration failed')
      const v = await cli(a, alice, ['instance', 'show', inst.id])
      assert.equal(v.state, 'running')
      assert.equal(v.host, a.info.peerId)
      await sleep(1000)
      const later = await count(url)
      assert.ok(later !== undefined && later > before, `it counts on from ${before}: ${later}`)

      const back = await startHost({ name, bootstrap: [a], dataDir: c.dataDir, extraArgs: HOST_ARGS })
      hosts.push(back)
      assert.equal((await getJson(back, '/v1/instances')).instances.filter((i: any) => i.host === back.info.peerId).length, 0, 'C holds nothing of it')
      assert.equal(existsSync(join(c.dataDir, 'instances', inst.id)), false)
      // Nothing of it runs on C: neither its VM nor a server of a disk half-copied there.
      await eventually(async () => processesOf(`xenos.id=${inst.id}`) === 1 && processesOf(join(c.dataDir, 'instances', inst.id)) === 0, 15_000, 'only A\'s QEMU to run the instance')
      await stopHost(back)
      await cli(a, alice, ['instance', 'destroy', inst.id])
    })
  }

  it('moves a VM with its disk (--copy-disk): the old host keeps nothing and can go, and the VM runs on from its copied disk', async () => {
    const dir = await tempDir('scribe')
    await writeFile(join(dir, 'template.yaml'), SCRIBE)
    await cli(a, alice, ['template', 'build', dir])
    let d = await startHost({ name: 'mig-d', bootstrap: [a], extraArgs: HOST_ARGS })
    hosts.push(d)
    const inst = (await cli(d, alice, ['deploy', 'scribe', '--host', 'mig-d', '--wait'])).instances[0]
    const made = await eventually(async () => (await httpGet(`${inst.endpoints[0].url}/made`))?.trim(), 60_000, 'the data to be written')
    assert.match(made, /^[0-9a-f]{32}$/)
    await eventually(async () => (await count(inst.endpoints[0].url) ?? 0) > 5, 60_000, 'the scribe to count')

    const moved = await cli(d, alice, ['migrate', inst.id, '--to', 'mig-b', '--copy-disk'])
    assert.equal(moved.to, b.info.peerId)
    // Only what the instance wrote moved: its 4 MiB of data and a little file system upkeep, not the 32 MiB disk.
    assert.ok(moved.copiedDiskBytes >= 4 * 1024 * 1024 && moved.copiedDiskBytes < 16 * 1024 * 1024, `disk copied: ${moved.copiedDiskBytes} bytes`)
    assert.equal(existsSync(join(d.dataDir, 'instances', inst.id)), false, 'D keeps nothing of the instance')
    assert.equal(existsSync(join(b.dataDir, 'instances', inst.id, 'disk.qcow2')), true, 'B has a disk of its own for it')
    assert.equal(processesOf(join(d.dataDir, 'instances', inst.id)), 0, 'no disk server runs for it on D')

    // D goes on forwarding the instance's old endpoint to B, across a kill and a restart.
    await stopHost(d, 'SIGKILL')
    d = await startHost({ name: 'mig-d', dataDir: d.dataDir, bootstrap: [a], extraArgs: HOST_ARGS })
    hosts.push(d)
    const forwarded = await eventually(async () => await count(inst.endpoints[0].url), 30_000, 'the old endpoint on the restarted D to answer')
    assert.ok(forwarded > 0, `the old endpoint on D answers from B after D restarted: ${forwarded}`)

    await stopHost(d)
    const v = await cli(b, alice, ['instance', 'show', inst.id])
    assert.equal(v.state, 'running')
    const before = await eventually(async () => await count(v.endpoints[0].url), 30_000, 'the moved scribe to answer')
    await sleep(2000)
    const later = await count(v.endpoints[0].url)
    assert.ok(later !== undefined && later > before, `it counts on, on its own disk, with the old host gone: ${before} then ${later}`)
    assert.equal((await httpGet(`${v.endpoints[0].url}/sum`))?.trim(), made, 'the data read back from the copied disk is intact')

    // With its disk here it can move on again: back to D, restarted to take arriving VMs only through the overlay.
    d = await startHost({ name: 'mig-d', dataDir: d.dataDir, bootstrap: [a], extraArgs: [...HOST_ARGS, '--no-direct-migration'] })
    hosts.push(d)
    const again = await cli(b, alice, ['migrate', inst.id, '--to', 'mig-d'])
    assert.equal(again.to, d.info.peerId)
    assert.equal(again.copiedDiskBytes, 0)
    assert.equal(again.memoryPath, 'overlay')
    const back = await cli(d, alice, ['instance', 'show', inst.id])
    const resumed = await eventually(async () => await count(back.endpoints[0].url), 30_000, 'the scribe to answer on D')
    assert.ok(resumed >= (later ?? 0), `it counts on from ${later ?? '?'} on D: ${resumed}`)
    await cli(d, alice, ['instance', 'destroy', inst.id])
  })

  it('moves a VM on from host to host while its disk stays with the host it first ran on, and back there when that host is drained', async () => {
    const f = await startHost({ name: 'mig-f', bootstrap: [a], extraArgs: HOST_ARGS })
    hosts.push(f)
    const dir = await tempDir('scribe-on')
    await writeFile(join(dir, 'template.yaml'), SCRIBE.replace('name: scribe', 'name: scribe-on'))
    await cli(b, alice, ['template', 'build', dir])
    const inst = (await cli(b, alice, ['deploy', 'scribe-on', '--host', 'mig-b', '--wait'])).instances[0]
    const made = await eventually(async () => (await httpGet(`${inst.endpoints[0].url}/made`))?.trim(), 60_000, 'the data to be written')
    const onB = join(b.dataDir, 'instances', inst.id, 'disk.qcow2')
    const intactOn = async (h: TestHost, what: string): Promise<void> => {
      const v = await cli(h, alice, ['instance', 'show', inst.id])
      assert.equal(v.state, 'running')
      await eventually(async () => (await httpGet(`${v.endpoints[0].url}/sum`))?.trim() === made, 30_000, `the data read back ${what} to be intact`)
    }

    await cli(b, alice, ['migrate', inst.id, '--to', 'mig-f'])
    await assert.rejects(cli(f, alice, ['migrate', inst.id, '--to', 'mig-a', '--copy-disk']), /served by host .* without --copy-disk/)
    const onward = await cli(f, alice, ['migrate', inst.id, '--to', 'mig-a'])
    assert.equal(onward.to, a.info.peerId)
    assert.equal(onward.copiedDiskBytes, 0)
    assert.equal(existsSync(join(f.dataDir, 'instances', inst.id)), false, 'F keeps nothing of it')
    assert.equal(existsSync(join(a.dataDir, 'instances', inst.id, 'disk.qcow2')), false, 'A has no disk of it')
    assert.equal(existsSync(onB), true, 'its disk is still on B')
    await intactOn(a, 'on A from the disk on B')

    // Draining A sends it back to B, which has room, onto the disk B kept.
    const drained = await cli(a, operatorOf(a), ['host', 'drain'])
    assert.deepEqual(drained.stayed, [])
    assert.deepEqual(drained.moved.map((m: any) => [m.id, m.to]), [[inst.id, b.info.peerId]])
    assert.equal((await getJson(a, '/v1/instances')).instances.filter((i: any) => i.host === a.info.peerId).length, 0, 'A is empty')
    await cli(a, operatorOf(a), ['host', 'undrain'])
    await intactOn(b, 'on B')

    // Back home it is whole again: it moves with its disk, and B keeps nothing.
    const copied = await cli(b, alice, ['migrate', inst.id, '--to', 'mig-f', '--copy-disk'])
    assert.ok(copied.copiedDiskBytes >= 4 * 1024 * 1024, `disk copied: ${copied.copiedDiskBytes} bytes`)
    assert.equal(existsSync(join(b.dataDir, 'instances', inst.id)), false, 'B keeps nothing of it')
    await intactOn(f, 'on F from its own copy')
    await cli(f, alice, ['instance', 'destroy', inst.id])
  })
})
