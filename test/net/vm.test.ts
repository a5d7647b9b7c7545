import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises'
import { createServer, type AddressInfo } from 'node:net'
import { join, relative } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { cli, cliRun, cliStart, eventually, getJson, httpGet, rolloutPhases, ROOT, startHost, stopHost, stopHosts, tempDir, type TestHost } from '../helpers/cluster.ts'
import { count, skipWithoutQemu } from '../helpers/vm.ts'

const skip = skipWithoutQemu

/** What a host stores for owners: the files of its content store, snapshots and uploads, and its instances' and staging's entries. */
async function storedOn (h: TestHost): Promise<string[]> {
  const files = async (sub: string, deep: boolean): Promise<string[]> => {
    const root = join(h.dataDir, sub)
    const entries = await readdir(root, { recursive: deep, withFileTypes: true }).catch(() => [])
    return entries.filter(e => !deep || e.isFile()).map(e => join(sub, relative(root, join(e.parentPath, e.name))))
  }
  return (await Promise.all([files('blobs', true), files('snapshots', true), files('uploads', true), files('instances', false), files('staging', false)])).flat().sort()
}

async function fetchedBytes (h: TestHost): Promise<number> {
  const text = await (await fetch(`${h.api}/metrics`)).text()
  return Number(/^xenos_blob_fetched_bytes_total (\d+)$/m.exec(text)?.[1])
}

/** Real VMs (QEMU, TCG when KVM does not work) on real xenosd processes. */
/**
 * A VM template `name` whose guest runs `script` (shell lines), then serves /run/www over HTTP
 * on port 8080, healthy once /run/www/up exists.
 */
async function webTemplate (name: string, script: string[]): Promise<string> {
  const dir = await tempDir(name)
  await writeFile(join(dir, 'template.yaml'), [
    `name: ${name}`, 'version: "1"', 'disk: 16', 'resources: {cpu: 1, memory: 96}',
    'ports: [{name: http, protocol: http, guest: 8080, health: /up}]',
    'command: >-',
    '  mkdir -p /run/www; echo up > /run/www/up;',
    ...script.map(l => `  ${l}`),
    '  exec httpd -f -p 8080 -h /run/www',
  ].join('\n') + '\n')
  return dir
}

describe('services in virtual machines', { skip }, () => {
  let a: TestHost, b: TestHost
  let alice: string
  let mallory: string
  let web: any
  let counter: any
  const hosts: TestHost[] = []

  before(async () => {
    const keys = await tempDir('keys')
    alice = join(keys, 'alice.pem')
    mallory = join(keys, 'mallory.pem')
    a = await startHost({ name: 'vm-a', extraArgs: ['--cpu', '4', '--memory', '1024'] })
    b = await startHost({ name: 'vm-b', bootstrap: [a], extraArgs: ['--cpu', '4', '--memory', '1024'] })
    hosts.push(a, b)
    await cli(a, alice, ['template', 'build', join(ROOT, 'examples/hello-web')])
    await cli(a, alice, ['template', 'build', join(ROOT, 'examples/counter')])
  })

  after(async () => {
    for (const h of hosts) {
      const list = await getJson(h, `/v1/instances?host=${h.info.peerId}`).catch(() => ({ instances: [] }))
      for (const i of list.instances ?? []) await cli(h, alice, ['instance', 'destroy', i.id]).catch(() => {})
    }
    await stopHosts(hosts)
  })

  it('deploys hello-web from A onto B, where it serves HTTP on its advertised endpoint', async () => {
    const result = await cli(a, alice, ['deploy', 'hello-web', '--host', 'vm-b'])
    web = result.instances[0]
    assert.equal(web.host, b.info.peerId)
    // Right after creation the instance's disk is a thin overlay on the template, not a copy.
    const template = await cli(b, alice, ['template', 'show', 'hello-web'])
    const image = template.manifest.image
    const blob = async (d: string): Promise<number> => (await stat(join(b.dataDir, 'blobs/sha256', d.slice(7)))).size
    const templateBytes = Number(image.diskBytes) + await blob(String(image.kernel)) + await blob(String(image.initrd))
    const overlay = (await stat(join(b.dataDir, 'instances', web.id, 'disk.qcow2'))).size
    assert.ok(overlay < templateBytes / 100, `overlay ${overlay} bytes vs template ${templateBytes} bytes`)
    const url = web.endpoints[0].url
    const page = await eventually(async () => await httpGet(url), 90_000, 'the VM to serve')
    assert.match(page, /Hello from a Xenos VM/)
    // The guest registered its service with B (the notice board), and B checks its health.
    const seen = await eventually(async () => {
      const v = await cli(a, alice, ['instance', 'show', web.id])
      return v.services[0]?.health === 'passing' ? v : undefined
    }, 20_000, 'the service to be registered and healthy')
    assert.equal(seen.services[0].name, 'http')
    assert.equal(seen.services[0].registered, true)
    // What it served and what its disk read show in its metrics, and in B's Prometheus metrics.
    const m = await eventually(async () => {
      const read = await cli(a, alice, ['instance', 'metrics', web.id])
      return read.netRxBytes > 0 && read.netTxBytes > 0 ? read : undefined
    }, 20_000, 'the guest to report its network counters')
    assert.ok(m.diskReadBytes > 0, `disk read: ${m.diskReadBytes}`)
    const text = await (await fetch(`${b.api}/metrics`)).text()
    for (const family of ['network_receive', 'network_transmit', 'disk_read']) {
      assert.match(text, new RegExp(`^xenos_instance_${family}_bytes_total\\{instance_id="${web.id}",name="[^"]+"\\} [1-9]`, 'm'), family)
    }
  })

  it('deploys a tailored template on a host that holds its base, moving only the overlay', async () => {
    const files = await tempDir('hello-blue')
    await mkdir(join(files, 'www'))
    await writeFile(join(files, 'www', 'index.html'), '<h1>The blue edition</h1>\n')
    const derived = await cli(a, alice, ['template', 'derive', 'hello-web', '--add', files, '--name', 'hello-blue', '--cache', await tempDir('cli-cache')])
    const image = (await cli(a, alice, ['template', 'show', derived.id])).manifest.image
    const base = (await cli(a, alice, ['template', 'show', 'hello-web'])).manifest.image
    assert.equal(image.diskFormat, 'qcow2')
    assert.equal(image.base, base.disk)
    const overlayBytes = (await stat(join(a.dataDir, 'blobs/sha256', String(image.disk).slice(7)))).size
    const before = await fetchedBytes(b)
    const inst = (await cli(a, alice, ['deploy', derived.id, '--host', 'vm-b'])).instances[0]
    assert.equal(await fetchedBytes(b) - before, overlayBytes, 'B fetched the overlay and nothing else')
    assert.ok(overlayBytes < base.diskBytes / 20, `overlay ${overlayBytes} bytes vs base disk ${base.diskBytes}`)
    const page = await eventually(async () => await httpGet(inst.endpoints[0].url), 90_000, 'the tailored VM to serve')
    assert.match(page, /The blue edition/)
    await cli(a, alice, ['instance', 'destroy', inst.id])
  })

  it('derives a template from a stopped VM, carrying what it wrote on its disk to a new instance elsewhere', async () => {
    const dir = await tempDir('stamped')
    await mkdir(join(dir, 'files', 'www'), { recursive: true })
    await writeFile(join(dir, 'template.yaml'), [
      'name: stamped', 'version: "1"', 'disk: 16',
      // The first boot stamps the disk; instances of a derived template keep the stamp.
      'command: "[ -f /srv/www/id.html ] || { cat /proc/sys/kernel/random/uuid > /srv/www/id.html; sync; }; exec httpd -f -p 80 -h /srv/www"',
      'ports: [{name: http, protocol: http, guest: 80, health: /id.html}]', 'resources: {cpu: 1, memory: 96}', '',
    ].join('\n'))
    await cli(a, alice, ['template', 'build', dir])
    const first = (await cli(a, alice, ['deploy', 'stamped', '--host', 'vm-a', '--wait'])).instances[0]
    const stamp = await httpGet(`${first.endpoints[0].url}/id.html`)
    assert.match(stamp ?? '', /^[0-9a-f-]{36}\s*$/)
    await assert.rejects(cli(a, alice, ['instance', 'derive', first.id, '--name', 'stamped-copy']), /INVALID_STATE/)
    await cli(a, alice, ['instance', 'stop', first.id])
    await assert.rejects(cli(a, mallory, ['instance', 'derive', first.id, '--name', 'stolen']), /FORBIDDEN/)
    const derived = await cli(b, alice, ['instance', 'derive', first.id, '--name', 'stamped-copy'])
    const copy = (await cli(a, alice, ['deploy', derived.id, '--host', 'vm-b', '--wait'])).instances[0]
    assert.equal(await httpGet(`${copy.endpoints[0].url}/id.html`), stamp)
    for (const i of [first, copy]) await cli(a, alice, ['instance', 'destroy', i.id])
  })

  it('deploys on both hosts at once and times fetch, create, boot and healthy on each', async () => {
    const { result, stderr } = await cliRun(a, alice, ['deploy', 'counter', '--hosts', 'vm-a,vm-b', '--wait'])
    assert.equal(result.instances.length, 2)
    const onB = result.hosts.find((h: any) => h.host === b.info.peerId)
    const onA = result.hosts.find((h: any) => h.host === a.info.peerId)
    assert.equal(onA.fetchedBytes, 0, 'A built the template')
    assert.ok(onB.fetchedBytes > 0, 'B pulled it')
    // B's pull is seen live, host by host, before it boots.
    const seenOnB = rolloutPhases(stderr, 'vm-b')
    assert.equal(seenOnB.at(-1), 'done', stderr)
    if (onB.fetchMs > 1000) {
      assert.ok(seenOnB.includes('fetching'), `a ${onB.fetchMs} ms pull was shown: ${seenOnB.join(' → ')}`)
      assert.match(stderr, /^vm-b: fetching .*\d+%/m)
    }
    assert.ok(seenOnB.indexOf('fetching') < seenOnB.indexOf('booting'), seenOnB.join(' → '))
    for (const part of [onA, onB]) {
      assert.equal(part.error, null)
      assert.ok(part.createMs > 0 && part.bootMs > 0 && part.healthyMs >= 0, JSON.stringify(part))
    }
    for (const i of result.instances) assert.equal(await count(i.endpoints[0].url) !== undefined, true, 'healthy means serving')
    for (const i of result.instances) await cli(a, alice, ['instance', 'destroy', i.id])
  })

  it('pauses and resumes a counter in memory, and keeps its value across suspend and resume', async () => {
    counter = (await cli(a, alice, ['deploy', 'counter', '--host', 'vm-a'])).instances[0]
    const url = counter.endpoints[0].url
    await eventually(async () => (await count(url) ?? 0) > 5, 90_000, 'the counter to count')
    await cli(b, alice, ['instance', 'pause', counter.id])
    assert.equal(await count(url), undefined, 'a paused VM does not answer')
    await cli(b, alice, ['instance', 'resume', counter.id])
    const before = await eventually(async () => await count(url), 10_000, 'the resumed counter')
    await sleep(1000)
    assert.ok((await count(url) ?? 0) > before, 'it counts on after resume')

    const suspended = await cli(b, alice, ['instance', 'suspend', counter.id])
    assert.equal(suspended.state, 'suspended')
    const atSuspend = before
    assert.equal(await count(url), undefined, 'a suspended VM does not answer')
    const resumed = await cli(b, alice, ['instance', 'resume', counter.id])
    assert.equal(resumed.state, 'running')
    const after = await eventually(async () => await count(url), 10_000, 'the restored counter')
    assert.ok(after >= atSuspend, `the count went on from ${atSuspend}, not from zero (got ${after})`)
  })

  it('deploys a new instance from a snapshot of a running one, with its memory', async () => {
    const url = counter.endpoints[0].url
    const atSnapshot = await eventually(async () => await count(url), 10_000, 'the counter')
    const snap = await cli(a, alice, ['instance', 'snapshot', counter.id])
    assert.match(snap.id, /^s-[0-9a-f]{16}$/)
    assert.ok((await count(url) ?? 0) >= atSnapshot, 'the original runs on')
    const copy = (await cli(a, alice, ['deploy', 'counter', '--from-snapshot', snap.id])).instances[0]
    assert.equal(copy.host, a.info.peerId, 'a snapshot is deployed on the host that holds it')
    const start = await eventually(async () => await count(copy.endpoints[0].url), 10_000, 'the copy to answer')
    assert.ok(start >= atSnapshot, `the copy starts from the snapshot's count ${atSnapshot}, not from zero (got ${start})`)
    await assert.rejects(cli(b, mallory, ['deploy', 'counter', '--host', 'vm-a', '--from-snapshot', snap.id]), /FORBIDDEN/)
    await assert.rejects(cli(b, alice, ['deploy', 'counter', '--from-snapshot', snap.id]), /SNAPSHOT_NOT_FOUND.*give --host/, 'a host that does not hold it says where to deploy')
    await cli(a, alice, ['instance', 'destroy', copy.id])

    // A description's component starts from it too, on the host that holds it; another owner's description does not.
    const file = join(await tempDir('from-snapshot'), 'resumed.yaml')
    await writeFile(file, `name: resumed\ncomponents:\n  counting:\n    template: counter\n    storage: { snapshot: ${snap.id as string} }\n    placement: { host: vm-a }\n`)
    const d = await cli(b, alice, ['apply', file, '--supervisors', '1'])
    assert.equal(d.state, 'running', JSON.stringify(d))
    const resumed = await cli(a, alice, ['instance', 'show', d.components[0].instances[0].id])
    const from = await eventually(async () => await count(resumed.endpoints[0].url), 10_000, 'the resumed component to answer')
    assert.ok(from >= atSnapshot, `the component starts from the snapshot's count ${atSnapshot} (got ${from})`)
    await cli(b, alice, ['terminate', 'resumed'])
    await assert.rejects(cli(b, mallory, ['apply', file, '--supervisors', '1']), /snapshot s-[0-9a-f]+ belongs to another owner/)
    await cli(b, mallory, ['terminate', 'resumed'])
  })

  it('re-attaches to its VMs after kill -9 of xenosd, and reports a killed QEMU as failed', async () => {
    await stopHost(a, 'SIGKILL')
    const url = counter.endpoints[0].url
    assert.ok(await count(url) !== undefined, 'the VM outlives its host process')
    const back = await startHost({ name: 'vm-a', bootstrap: [b], dataDir: a.dataDir, extraArgs: ['--cpu', '4', '--memory', '1024'] })
    // The same host: the tests after this one use it.
    hosts[hosts.indexOf(a)] = back
    a = back
    const v = await cli(a, alice, ['instance', 'show', counter.id])
    assert.equal(v.state, 'running')
    await cli(a, alice, ['instance', 'pause', counter.id])
    assert.equal(await count(url), undefined)
    await cli(a, alice, ['instance', 'resume', counter.id])
    assert.ok(await eventually(async () => await count(url), 10_000, 'the counter after re-attach') > 0)

    const pid = Number(execFileSync('pgrep', ['-f', `xenos.id=${counter.id}`]).toString().trim().split('\n')[0])
    process.kill(pid, 'SIGKILL')
    const failed = await eventually(async () => {
      const x = await cli(a, alice, ['instance', 'show', counter.id])
      return x.state === 'failed' ? x : undefined
    }, 15_000, 'the instance to fail')
    // A re-attached VM is not this xenosd's child, so how it died is unknown; that it died is not.
    assert.match(failed.error, /the task ended|killed by SIGKILL/)
    assert.match(failed.error, /xenos-init/, 'the failure carries the console tail')
  })

  it('stops a VM (freeing its sockets and ports) and destroys it with its overlay', async () => {
    const url = web.endpoints[0].url
    const stopped = await cli(a, alice, ['instance', 'stop', web.id])
    assert.equal(stopped.state, 'stopped')
    assert.equal(await httpGet(url, 1000), undefined)
    const instanceDir = join(b.dataDir, 'instances', web.id)
    assert.ok((await stat(join(instanceDir, 'disk.qcow2'))).size > 0, 'a stopped instance keeps its disk')
    const runDir = `/run/xenos/${web.id}`
    await assert.rejects(stat(runDir), 'its sockets are gone')
    await cli(a, alice, ['instance', 'destroy', web.id])
    await assert.rejects(stat(instanceDir), 'destroy removes the overlay')
  })

  it('refuses a deploy beyond capacity with the admission error', async () => {
    await assert.rejects(cli(a, alice, ['deploy', 'hello-web', '--host', 'vm-b', '--count', '12']), /ADMISSION_REFUSED/)
  })

  it('fails a broken template build with a message that names the problem', async () => {
    const dir = await tempDir('broken')
    await assert.rejects(cli(a, alice, ['template', 'build', dir]), /template\.yaml is missing/)
    await writeFile(join(dir, 'template.yaml'), 'name: broken\nversion: "1"\ncommand: "true"\nports: [{name: http}]\n')
    await assert.rejects(cli(a, alice, ['template', 'build', dir]), /needs the guest port/)
    await writeFile(join(dir, 'template.yaml'), 'name: broken\nversion: "1"\ncommand: "true"\nmodules: [no_such_module]\n')
    await assert.rejects(cli(a, alice, ['template', 'build', dir]), /no module "no_such_module"/)
  })

  it('builds a template on an existing qcow2 disk image, and refuses one that is an overlay on another file', async () => {
    const dir = await tempDir('imported')
    const files = join(dir, 'files')
    await mkdir(join(files, 'www'), { recursive: true })
    await writeFile(join(files, 'www', 'index.html'), 'imported\n')
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', files, join(dir, 'disk.raw'), '16M'])
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', join(dir, 'disk.raw'), join(dir, 'disk.qcow2')])
    await writeFile(join(dir, 'template.yaml'), 'name: imported\nversion: "1"\ncommand: "exec httpd -f -p 80 -h /srv/www"\ndiskImage: disk.qcow2\nports: [{name: http, guest: 80}]\n')
    const t = await cli(a, alice, ['template', 'build', dir])
    const image = (await cli(a, alice, ['template', 'show', t.id])).manifest.image
    assert.equal(image.diskBytes, 16 * 1024 * 1024)
    const disk = join(a.dataDir, 'blobs/sha256', String(image.disk).slice(7))
    assert.equal(execFileSync('debugfs', ['-R', 'cat /www/index.html', disk], { stdio: ['ignore', 'pipe', 'ignore'] }).toString(), 'imported\n')
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', '/etc/hostname', join(dir, 'overlay.qcow2')])
    await writeFile(join(dir, 'template.yaml'), 'name: imported\nversion: "2"\ncommand: "true"\ndiskImage: overlay.qcow2\n')
    await assert.rejects(cli(a, alice, ['template', 'build', dir]), /is an overlay on another file/)
  })

  it('keeps a guest from its host: neither the host\'s API nor a service on its loopback answers it, while its own service answers on its endpoint and through connect', async () => {
    const secret = `loopback-secret-${Date.now()}`
    const server = createServer(socket => { socket.end(secret) })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    const loopPort = (server.address() as AddressInfo).port
    const apiPort = new URL(a.api).port
    const dir = await webTemplate('prober', [
      '(while :; do',
      `if wget -q -O /run/www/api http://10.0.2.2:${apiPort}/v1/host; then echo reached > /run/www/api-result; else echo refused > /run/www/api-result; fi;`,
      `nc 10.0.2.2 ${loopPort} < /dev/null > /run/www/loop 2>/dev/null; if [ -s /run/www/loop ]; then echo reached > /run/www/loop-result; else echo refused > /run/www/loop-result; fi;`,
      'sleep 1; done) &',
    ])
    try {
      await cli(a, alice, ['template', 'build', dir])
      const prober = (await cli(a, alice, ['deploy', 'prober', '--host', 'vm-a', '--wait'])).instances[0]
      const url = prober.endpoints[0].url
      assert.equal((await eventually(async () => await httpGet(`${url}/api-result`), 60_000, 'the guest to try the host\'s API'))?.trim(), 'refused')
      assert.equal((await eventually(async () => await httpGet(`${url}/loop-result`), 20_000, 'the guest to try the host\'s loopback'))?.trim(), 'refused')
      assert.doesNotMatch(await httpGet(`${url}/api`) ?? '', /peerId|operators/, 'nothing of the host\'s API reached the guest')
      assert.doesNotMatch(await httpGet(`${url}/loop`) ?? '', new RegExp(secret))
      const connect = await cliStart(a, alice, ['connect', prober.id])
      try {
        assert.equal((await httpGet(`http://127.0.0.1:${String(connect.first.port)}/up`))?.trim(), 'up', 'its own service answers through connect')
      } finally {
        await connect.stop()
      }
      await cli(a, alice, ['instance', 'destroy', prober.id])
    } finally {
      server.close()
    }
  })

  it('admits a suspended VM again when it resumes: its room may have gone meanwhile', async () => {
    const small = await startHost({ name: 'vm-small', bootstrap: [a], extraArgs: ['--cpu', '1', '--memory', '256'] })
    hosts.push(small)
    const first = (await cli(a, alice, ['deploy', 'counter', '--host', 'vm-small', '--wait'])).instances[0]
    await cli(a, alice, ['instance', 'suspend', first.id])
    const second = (await cli(a, alice, ['deploy', 'counter', '--host', 'vm-small'])).instances[0]
    await assert.rejects(cli(a, alice, ['instance', 'resume', first.id]), /ADMISSION_REFUSED/)
    assert.equal((await cli(a, alice, ['instance', 'show', first.id])).state, 'suspended', 'it stays suspended, its state kept')
    await cli(a, alice, ['instance', 'destroy', second.id])
    assert.equal((await cli(a, alice, ['instance', 'resume', first.id])).state, 'running')
    await cli(a, alice, ['instance', 'destroy', first.id])
  })

  it('runs a description of two VMs on both hosts: the reader starts once the counter is healthy, and reaches it at the address it was given', async () => {
    const dir = await webTemplate('dreader', ['(while :; do wget -q -O /run/www/master.tmp "http://$MASTER/count" && mv /run/www/master.tmp /run/www/master; sleep 0.3; done) &'])
    await cli(a, alice, ['template', 'build', dir])
    const file = join(dir, 'pair.yaml')
    await writeFile(file, 'name: vmpair\ncomponents:\n  counting:\n    template: counter\n    placement: { host: vm-b }\n  reading:\n    template: dreader\n    after: [counting]\n    placement: { host: vm-a }\n    env: { MASTER: "${counting.endpoints}" }\n')
    const d = await cli(a, alice, ['apply', file])
    assert.equal(d.state, 'running', JSON.stringify(d))
    const [counting, reading] = ['counting', 'reading'].map(path => d.components.find((c: any) => c.path === path).instances[0])
    assert.deepEqual([counting.host, reading.host], [b.info.peerId, a.info.peerId])
    const counter = await cli(a, alice, ['instance', 'show', counting.id])
    const reader = await cli(a, alice, ['instance', 'show', reading.id])
    assert.ok(reader.createdAt >= counter.healthyAt, 'the reader was made once the counter was healthy')
    const seen = Number(await eventually(async () => await httpGet(`${reader.endpoints[0].url as string}/master`), 60_000, 'the reader VM to reach the counter VM'))
    assert.ok(seen > 0, `the counter's count through the link: ${seen}`)
    assert.equal((await cli(a, alice, ['terminate', 'vmpair'])).state, 'terminated')
    for (const h of [a, b]) assert.deepEqual((await getJson(h, `/v1/instances?host=${h.info.peerId}`)).instances.filter((v: any) => v.name.startsWith('vmpair-')), [])
  })

  it('gives a VM the address of a service it links to, in the environment its deploy names too, and the link follows the service when it moves', async () => {
    const master = (await cli(a, alice, ['deploy', 'counter', '--host', 'vm-b', '--name', 'master', '--wait'])).instances[0]
    const dir = await webTemplate('reader', [
      'echo "$XENOS_LINK_MASTER" > /run/www/address;',
      'echo "$MASTER_URL" > /run/www/env;',
      '(while :; do wget -q -O /run/www/master.tmp "http://$XENOS_LINK_MASTER/count" && mv /run/www/master.tmp /run/www/master; sleep 0.3; done) &',
    ])
    await cli(a, alice, ['template', 'build', dir])
    const reader = (await cli(a, alice, ['deploy', 'reader', '--host', 'vm-a', '--link', 'master=master', '--env', 'MASTER_URL=http://${XENOS_LINK_MASTER}/count', '--wait'])).instances[0]
    const url = reader.endpoints[0].url
    const address = (await httpGet(`${url}/address`))?.trim() ?? ''
    assert.match(address, /^10\.0\.2\.100:\d+$/, 'an address of the guest\'s own network')
    assert.equal((await httpGet(`${url}/env`))?.trim(), `http://${address}/count`, 'the deploy\'s environment, naming the link\'s address')
    const first = Number(await eventually(async () => await httpGet(`${url}/master`), 60_000, 'the reader to reach its master'))
    assert.ok(first > 0, `the master's count through the link: ${first}`)
    await cli(a, alice, ['migrate', master.id, '--to', 'vm-a'])
    await sleep(2000)
    const later = await eventually(async () => {
      const n = Number(await httpGet(`${url}/master`))
      return n > first ? n : undefined
    }, 30_000, 'the reader to reach its master where it moved')
    assert.ok(later > first)
    // Another owner's service of that name is not reached: a link reaches its owner's own.
    const theirs = (await cli(a, mallory, ['deploy', 'reader', '--host', 'vm-a', '--link', 'master=master'])).instances[0]
    await eventually(async () => (await httpGet(`${theirs.endpoints[0].url as string}/up`))?.trim() === 'up' || undefined, 60_000, 'the other reader to boot')
    await sleep(3000)
    assert.doesNotMatch(await httpGet(`${theirs.endpoints[0].url as string}/master`) ?? '', /^\d+\s*$/, 'another owner\'s link reached Alice\'s master')
    for (const [who, i] of [[mallory, theirs], [alice, reader], [alice, master]] as const) await cli(a, who, ['instance', 'destroy', i.id])
  })
  it('resumes a VM component from its latest checkpoint, kept on another host, when its host dies', async () => {
    const c = await startHost({ name: 'vm-c', bootstrap: [a], extraArgs: ['--cpu', '4', '--memory', '1024'] })
    hosts.push(c)
    await eventually(async () => (await getJson(a, '/v1/peers')).hosts.some((h: any) => h.id === c.info.peerId) || undefined, 20_000, 'vm-c to be advertised')
    const keepers = hosts.filter(h => h !== c)
    const snapshotsOf = async (): Promise<string[]> => (await Promise.all(keepers.map(async h => await cli(h, alice, ['snapshots', 'list'])))).flat().map((s: any) => s.id as string).sort()
    const before = await snapshotsOf()
    const file = join(await tempDir('checkpointed'), 'counting.yaml')
    await writeFile(file, 'name: counting\ncomponents:\n  master:\n    template: counter\n    onFailure: replace\n    checkpoint: 5s\n    liveness: { every: 2s, failAfter: 3 }\n    placement: { host: vm-c }\n')
    const first = (await cli(a, alice, ['apply', file])).components[0].instances[0]
    assert.equal(first.host, c.info.peerId)
    const url = (await cli(a, alice, ['instance', 'show', first.id])).endpoints[0].url
    // Far enough on that a counter booted afresh would be seen well below it.
    const counted = await eventually(async () => { const n = await count(url) ?? 0; return n > 150 ? n : undefined }, 120_000, 'the counter to count past 150')
    const readAt = Date.now()
    const kept = await eventually(async () => {
      const m = (await cli(a, alice, ['deployment', 'show', 'counting'])).components[0]
      return m.checkpoints.find((cp: any) => cp.instance === first.id && cp.at > readAt)
    }, 60_000, `a checkpoint taken after the counter read ${counted}`)
    assert.notEqual(kept.host, c.info.peerId, 'kept on another host than the one it runs on')
    const keeper = keepers.find(h => h.info.peerId === kept.host) as TestHost
    assert.ok((await cli(keeper, alice, ['snapshots', 'list'])).some((s: any) => s.id === kept.snapshot), 'the keeper holds it as the owner\'s snapshot')
    assert.ok(!(await cli(keeper, mallory, ['snapshots', 'list'])).some((s: any) => s.id === kept.snapshot), 'another owner does not see it')

    const diedAt = Date.now()
    await stopHosts([c], 'SIGKILL')
    const replaced = await eventually(async () => {
      const m = (await cli(a, alice, ['deployment', 'show', 'counting'])).components[0]
      return m.state === 'running' && m.instances[0].id !== first.id ? m : undefined
    }, 240_000, 'the counter to be made anew from its checkpoint')
    const now = replaced.instances[0]
    assert.equal(now.host, kept.host, 'made anew where its checkpoint is kept')
    assert.ok(replaced.events.some((e: any) => /from its checkpoint/.test(e.event)), JSON.stringify(replaced.events))
    const resumedUrl = (await cli(a, alice, ['instance', 'show', now.id])).endpoints[0].url
    const resumed = await eventually(async () => await count(resumedUrl), 30_000, 'the resumed counter to answer')
    process.stderr.write(`counter serving again from its checkpoint ${Date.now() - diedAt} ms after its host died (${counted} before, ${resumed} after)\n`)
    assert.ok(resumed >= counted, `it counts on from its checkpoint (${counted} before it was taken, ${resumed} now), not from 0`)

    // Its next checkpoint goes to another host than the one it now runs on, and the one it resumed from goes.
    const next = await eventually(async () => (await cli(a, alice, ['deployment', 'show', 'counting'])).components[0].checkpoints.find((cp: any) => cp.instance === now.id), 60_000, 'a checkpoint of the new instance')
    assert.notEqual(next.host, now.host)
    assert.equal((await cli(a, alice, ['terminate', 'counting'])).state, 'terminated')
    assert.deepEqual(await snapshotsOf(), before, 'terminate leaves no checkpoint behind')
  })
  it('keeps no stored byte once nothing refers to it: a data file, a snapshot, a template derived from a VM, the VM', async () => {
    const before = await storedOn(a)
    const dir = await tempDir('leak')
    await writeFile(join(dir, 'file.bin'), randomBytes(3 << 20))
    await cli(a, alice, ['data', 'put', join(dir, 'file.bin'), 'data://me/leak/file.bin'])
    const vm = (await cli(a, alice, ['deploy', 'counter', '--host', 'vm-a', '--name', 'leaky', '--wait'])).instances[0]
    const snap = await cli(a, alice, ['instance', 'snapshot', vm.id])
    await cli(a, alice, ['instance', 'stop', vm.id])
    const derived = await cli(a, alice, ['instance', 'derive', vm.id, '--name', 'leaky-copy'])
    const grown = await storedOn(a)
    assert.ok(grown.length >= before.length + 3, `the file, the snapshot, the overlay and the VM take room: ${grown.filter(f => !before.includes(f)).join(' ')}`)
    await cli(a, alice, ['data', 'rm', 'data://me/leak/file.bin'])
    await cli(a, alice, ['snapshots', 'rm', snap.id])
    assert.ok((await cli(a, alice, ['template', 'rm', derived.id])).bytesFreed > 0, 'the derived template\'s overlay is freed')
    await cli(a, alice, ['instance', 'destroy', vm.id])
    const left = await eventually(async () => {
      const now = await storedOn(a)
      return now.every(f => before.includes(f)) ? now : undefined
    }, 10_000, 'every stored byte to go with its last reference').catch(async () => (await storedOn(a)).filter(f => !before.includes(f)))
    assert.deepEqual(left.filter(f => !before.includes(f)), [], 'nothing outlives its references')
  })
})
