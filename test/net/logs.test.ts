import assert from 'node:assert/strict'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { cli, cliStart, eventually, startHost, stopHosts, tempDir, type TestHost } from '../helpers/cluster.ts'

/** A process that prints a numbered line five times a second. */
const COUNTER = 'name: counter-lines\nversion: "1"\ndriver: process\ncommand: "i=0; while :; do i=$((i+1)); echo line $i; sleep 0.2; done"\nresources: { cpu: 0.05, memory: 16 }\n'

/** The numbers of the `line N` lines in `text`. */
const numbers = (text: string): number[] => [...text.matchAll(/^line (\d+)$/gm)].map(m => Number(m[1]))

/** `xenos instance logs`: the last lines, and following what an instance prints, from its host or another. */
describe('instance logs', () => {
  const hosts: TestHost[] = []
  let a: TestHost, b: TestHost
  let alice: string
  let id: string

  before(async () => {
    const dir = await tempDir('logs')
    alice = join(dir, 'alice.pem')
    a = await startHost({ name: 'logs-a' })
    b = await startHost({ name: 'logs-b', bootstrap: [a] })
    hosts.push(a, b)
    await writeFile(join(dir, 'counter.yaml'), COUNTER)
    await cli(a, alice, ['template', 'import', join(dir, 'counter.yaml')])
    id = (await cli(a, alice, ['deploy', 'counter-lines', '--host', 'logs-a', '--name', 'counter'])).instances[0].id
    await eventually(async () => numbers((await cli(a, alice, ['instance', 'logs', 'counter'])).text).length >= 5 || undefined, 10_000, 'the counter to print')
  })

  after(async () => {
    await stopHosts(hosts)
  })

  it('gives the last lines asked for, and where the output goes on', async () => {
    const r = await cli(a, alice, ['instance', 'logs', id, '--lines', '3'])
    const seen = numbers(r.text)
    assert.equal(seen.length, 3)
    assert.deepEqual(seen, [seen[0], (seen[0] ?? 0) + 1, (seen[0] ?? 0) + 2], 'the last three, in order')
    assert.ok(r.next > 0)
  })

  for (const via of ['its host', 'another host'] as const) {
    it(`follows what the instance prints, every line once and in order, asked through ${via}`, async () => {
      const following = await cliStart(via === 'its host' ? a : b, alice, ['instance', 'logs', 'counter', '--lines', '2', '-f'])
      const lines: number[] = numbers(following.first.text as string)
      let out = ''
      following.child.stdout?.on('data', (d: Buffer) => { out += d.toString() })
      await sleep(3000)
      await following.stop()
      for (const piece of out.trim().split('\n')) lines.push(...numbers((JSON.parse(piece) as { text: string }).text))
      assert.ok(lines.length >= 2 + 4, `${lines.length} lines: the two asked for, then what it printed in 3 s`)
      for (let i = 1; i < lines.length; i++) assert.equal(lines[i], (lines[i - 1] ?? 0) + 1, `line ${lines[i - 1]} then ${lines[i]}: ${lines.join(' ')}`)
    })
  }
})

/** The host's own log: a line for every lifecycle step of an instance and every signed request, who and how it ended. */
describe('host log', () => {
  it('writes JSON lines with level names, the host and pid, each instance\'s steps and each signed request with its signer and result', async () => {
    const dir = await tempDir('host-log')
    const alice = join(dir, 'alice.pem')
    const mallory = join(dir, 'mallory.pem')
    const h = await startHost({ name: 'log-host', extraArgs: ['--log-level', 'info'] })
    try {
      await writeFile(join(dir, 'counter.yaml'), COUNTER)
      await cli(h, alice, ['template', 'import', join(dir, 'counter.yaml')])
      const id = (await cli(h, alice, ['deploy', 'counter-lines', '--name', 'logged'])).instances[0].id as string
      await assert.rejects(cli(h, mallory, ['instance', 'stop', id]), /FORBIDDEN/)
      await cli(h, alice, ['instance', 'stop', id])
      await cli(h, alice, ['instance', 'destroy', id])
      const aliceId = (await cli(h, alice, ['whoami'])).owner as string
      const lines = await eventually(async () => {
        const all = (await readFile(join(h.dataDir, 'xenosd.log'), 'utf8')).trim().split('\n').map(l => JSON.parse(l) as Record<string, any>)
        return all.some(l => l.msg === 'instance removed' && l.instance === id) ? all : undefined
      }, 10_000, 'the removal to be logged')
      assert.ok(lines.every(l => typeof l.level === 'string' && l.pid === h.proc.pid && typeof l.hostname === 'string'), 'levels by name, with the process and host')
      const steps = lines.filter(l => l.instance === id && typeof l.msg === 'string' && l.msg.startsWith('instance ')).map(l => l.msg as string)
      assert.deepEqual(steps.filter(m => ['instance creating', 'instance running', 'instance stopped', 'instance removed'].includes(m)), ['instance creating', 'instance running', 'instance stopped', 'instance removed'])
      const signed = lines.filter(l => l.msg === 'signed request' && l.params?.id === id)
      assert.ok(signed.some(l => l.who === aliceId && l.route === '/v1/instances/:id/:action' && l.params.action === 'stop' && l.status === 200), JSON.stringify(signed))
      assert.ok(signed.some(l => l.who !== aliceId && l.params.action === 'stop' && l.status === 403 && l.code === 'FORBIDDEN'), 'the refused one, with who tried')
    } finally {
      await stopHosts([h])
    }
  })
})

