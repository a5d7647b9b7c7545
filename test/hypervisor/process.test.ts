import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Driver, TaskHandle, TaskSpec } from '../../src/core/index.ts'
import { detectCgroups, processDriver, tailFile, type Cgroups } from '../../src/hypervisor/index.ts'
import { eventually, tempDir } from '../helpers/cluster.ts'

const isRoot = process.getuid?.() === 0
const cgroups: Cgroups | undefined = await detectCgroups()

/** The driver contract, run against the `process` driver with real processes and cgroups. */
describe('process driver', () => {
  const driver: Driver = processDriver({ cgroups, uid: 65534, gid: 65534 })
  const handles: TaskHandle[] = []

  after(async () => {
    for (const h of handles) {
      await driver.stop(h, 0).catch(() => {})
      await driver.destroy(h).catch(() => {})
    }
  })

  async function start (command: string, over: Partial<TaskSpec> = {}): Promise<{ handle: TaskHandle, dir: string }> {
    const dir = await tempDir('task')
    const id = `i-${Math.random().toString(16).slice(2, 10).padEnd(16, '0')}`
    const handle = await driver.start({ id, dir, command, env: {}, ports: [], resources: { cpu: 1, memory: 64 }, bindAddress: '127.0.0.1', ...over })
    handles.push(handle)
    return { handle, dir }
  }

  async function counter (dir: string): Promise<number> {
    return Number((await readFile(join(dir, 'work', 'n'), 'utf8').catch(() => '0')).trim() || 0)
  }

  const COUNTER = 'n=0; while :; do n=$((n+1)); echo $n > n.tmp; mv n.tmp n; sleep 0.05; done'

  it('fingerprints without throwing', async () => {
    const fp = await driver.fingerprint()
    assert.equal(fp.healthy, true)
    assert.equal(fp.attributes.cgroups, cgroups === undefined ? 'none' : `v${cgroups.version}`)
  })

  it('runs a task, measures it, pauses and resumes it', async () => {
    const { handle, dir } = await start(COUNTER)
    await eventually(async () => await counter(dir) > 3, 5000, 'the counter to run')
    const stats = await driver.stats(handle)
    assert.ok(stats.memoryBytes > 0)
    await driver.pause(handle)
    const frozen = await counter(dir)
    await sleep(400)
    assert.ok(await counter(dir) - frozen <= 1, 'a paused task does not advance')
    assert.equal(await driver.recover(handle), 'paused')
    await driver.resume(handle)
    await eventually(async () => await counter(dir) > frozen + 3, 5000, 'the counter to continue')
    assert.equal(await driver.recover(handle), 'running')
  })

  it('passes ports and substitutes them in the command', async () => {
    const { dir } = await start('echo "port=${XENOS_PORT_HTTP} env=$XENOS_PORT_HTTP host=$XENOS_HOST" > out; sleep 30', {
      ports: [{ name: 'http', protocol: 'http', hostPort: 4321 }],
    })
    const text = await eventually(async () => await readFile(join(dir, 'work', 'out'), 'utf8').catch(() => undefined), 5000, 'the output')
    assert.equal(text.trim(), 'port=4321 env=4321 host=127.0.0.1')
  })

  it('sandboxes the task when run as root', { skip: !isRoot && 'needs root' }, async () => {
    const { dir } = await start('id -u > uid; ls /proc | grep -c "^[0-9]" > procs; sleep 30')
    const uid = await eventually(async () => await readFile(join(dir, 'work', 'uid'), 'utf8').catch(() => undefined), 5000, 'uid')
    assert.equal(uid.trim(), '65534', 'runs as nobody')
    const procs = Number(await eventually(async () => await readFile(join(dir, 'work', 'procs'), 'utf8').catch(() => undefined), 5000, 'procs'))
    assert.ok(procs < 10, `sees only its own processes (saw ${procs})`)
  })

  it('enforces the CPU limit', { skip: cgroups === undefined && 'no writable cgroups' }, async () => {
    const { handle } = await start('while :; do :; done', { resources: { cpu: 0.2, memory: 64 } })
    await sleep(2000)
    const { cpuSeconds } = await driver.stats(handle)
    assert.ok(cpuSeconds < 0.8, `a 0.2-CPU task used ${cpuSeconds.toFixed(2)} CPU seconds in 2 s`)
    assert.ok(cpuSeconds > 0.1, 'it did run')
  })

  it('reports how a task ended', async () => {
    const { handle } = await start('echo bye; exit 7')
    assert.deepEqual(await driver.wait(handle), { code: 7, signal: null })
    assert.match(await tailFile(driver.logFile(handle), 5), /bye/)
    assert.equal(await driver.recover(handle), 'exited')
  })

  it('stops a task that ignores SIGTERM by force after the timeout', async () => {
    const { handle } = await start('trap "" TERM; while :; do sleep 0.1; done')
    await sleep(300)
    const t0 = Date.now()
    await driver.stop(handle, 500)
    assert.ok(Date.now() - t0 >= 450, 'it waited for the grace period')
    assert.equal(await driver.recover(handle), 'exited')
  })

  it('stops a task gracefully, and a paused one too', async () => {
    const { handle } = await start('trap "echo got TERM; exit 0" TERM; while :; do sleep 0.1; done')
    await sleep(300)
    await driver.pause(handle)
    const t0 = Date.now()
    await driver.stop(handle, 5000)
    assert.ok(Date.now() - t0 < 4000, 'it did not need the full timeout')
    assert.equal(await driver.recover(handle), 'exited')
  })

  it('re-attaches after a restart of the host', async () => {
    const { handle, dir } = await start(COUNTER)
    await eventually(async () => await counter(dir) > 2, 5000, 'the counter')
    const restarted = processDriver({ cgroups, uid: 65534, gid: 65534 })
    const persisted = JSON.parse(JSON.stringify(handle)) as TaskHandle
    assert.equal(await restarted.recover(persisted), 'running')
    await restarted.pause(persisted)
    assert.equal(await restarted.recover(persisted), 'paused')
    await restarted.stop(persisted, 1000)
    assert.deepEqual(await restarted.wait(persisted), { code: null, signal: null })
    assert.equal(await restarted.recover(persisted), 'exited')
  })
})
