import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { incomingArgs, listenForMigration, sendMigration } from '../../src/hypervisor/qemu/migration-channel.ts'
import { QmpClient } from '../../src/hypervisor/qemu/qmp.ts'
import { tempDir } from '../helpers/cluster.ts'
import { skipWithoutQemu } from '../helpers/vm.ts'

const processes: ChildProcess[] = []

/** A bare QEMU (firmware only, no guest), with its monitor. */
async function qemu (dir: string, name: string, extra: string[] = []): Promise<QmpClient> {
  const socket = join(dir, `${name}.qmp`)
  processes.push(spawn('qemu-system-x86_64', ['-machine', 'q35', '-accel', 'tcg', '-m', '32', '-nodefaults', '-display', 'none', '-qmp', `unix:${socket},server=on,wait=off`, ...extra], { stdio: 'ignore' }))
  for (let i = 0; i < 100 && !existsSync(socket); i++) await sleep(50)
  return await QmpClient.connect(socket)
}

const key = (): string => randomBytes(32).toString('hex')

async function status (monitor: QmpClient): Promise<string | undefined> {
  return (await monitor.execute<{ status?: string }>('query-migrate')).status
}

describe('the memory channel between two QEMUs', { skip: skipWithoutQemu }, () => {
  after(() => { for (const p of processes) p.kill('SIGKILL') })

  it('carries the VM only with the key of the move, falling back to the next channel when one cannot connect', async () => {
    const dir = await tempDir('migration-channel')
    const secret = key()
    const destination = await qemu(dir, 'dst', await incomingArgs(join(dir, 'tls-in'), secret))
    const port = await listenForMigration(destination, '127.0.0.1')
    assert.ok(port > 0)

    // Someone who reaches the port without the key: a stray connection, then a QEMU with another key.
    await new Promise<void>(resolve => {
      const stray = connect(port, '127.0.0.1', () => { stray.end('not a migration') })
      stray.on('error', () => {}).on('close', () => { resolve() })
    })
    const stranger = await qemu(dir, 'stranger')
    await assert.rejects(sendMigration(stranger, [{ to: { host: '127.0.0.1', port }, key: key() }], join(dir, 'tls-stranger'), () => {}), /migration failed/)
    assert.notEqual(await status(destination), 'completed')

    const source = await qemu(dir, 'src')
    const used = await sendMigration(source, [
      // Nothing listens on port 1: refused.
      { to: { host: '127.0.0.1', port: 1 }, key: secret },
      { to: { host: '127.0.0.1', port }, key: secret },
    ], join(dir, 'tls-out'), () => {})
    assert.deepEqual(used.to, { host: '127.0.0.1', port }, 'the second channel carried it')
    for (let i = 0; i < 100 && await status(destination) !== 'completed'; i++) await sleep(50)
    assert.equal(await status(destination), 'completed', 'the destination has the whole VM')
    assert.equal(existsSync(join(dir, 'tls-out')), false, 'the key is gone from the source')
    // The source can save its state to a file again, without TLS.
    assert.deepEqual((await source.execute<{ 'tls-creds'?: string }>('query-migrate-parameters'))['tls-creds'], '')
  })
})
