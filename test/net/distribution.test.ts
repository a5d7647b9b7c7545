import assert from 'node:assert/strict'
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { cli, eventually, getJson, ROOT, startHost, stopHosts, tempDir, type TestHost } from '../helpers/cluster.ts'
import { skipWithoutQemu } from '../helpers/vm.ts'

async function fetchedBytes (h: TestHost): Promise<number> {
  const text = await (await fetch(`${h.api}/metrics`)).text()
  return Number(/^xenos_blob_fetched_bytes_total (\d+)$/m.exec(text)?.[1])
}

/** The page a debian-nginx instance serves, with the header that says who served it. */
async function page (url: string): Promise<{ server: string, body: string } | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) })
    return { server: res.headers.get('server') ?? '', body: await res.text() }
  } catch {
    return undefined
  }
}

/** VMs whose root file system is a Debian distribution built from packages (mmdebstrap), on real QEMU. */
describe('distribution templates', { skip: skipWithoutQemu }, () => {
  let a: TestHost, b: TestHost
  let alice: string
  let dir: string

  before(async () => {
    dir = await tempDir('distribution')
    alice = join(dir, 'alice.pem')
    a = await startHost({ name: 'vm-a', extraArgs: ['--cpu', '4', '--memory', '1024'] })
    b = await startHost({ name: 'vm-b', bootstrap: [a], extraArgs: ['--cpu', '4', '--memory', '1024'] })
  })

  after(async () => {
    for (const h of [a, b]) {
      const list = await getJson(h, `/v1/instances?host=${h.info.peerId}`).catch(() => ({ instances: [] }))
      for (const i of list.instances ?? []) await cli(h, alice, ['instance', 'destroy', i.id]).catch(() => {})
    }
    await stopHosts([a, b])
  })

  it('builds nginx on Debian, deploys it from one host onto another, where nginx serves the page, also after suspend and resume and a live migration', async () => {
    const built = await cli(a, alice, ['template', 'build', join(ROOT, 'examples/debian-nginx')])
    const manifest = (await cli(a, alice, ['template', 'show', built.id])).manifest
    assert.deepEqual([manifest.distribution.debian, manifest.distribution.variant], ['bookworm', 'minbase'])
    assert.ok(manifest.distribution.packages.some((p: string) => /^nginx-light=\S+$/.test(p)), 'the manifest records the packages and their versions')
    // Its base is a template of its own, named, whose disk the service's is a layer on.
    const base = (await cli(a, alice, ['template', 'show', 'template://me/debian/bookworm'])).manifest
    assert.deepEqual([base.name, base.version, base.image.diskFormat, base.image.disk], ['debian', 'bookworm-minbase', 'raw', manifest.image.base])
    assert.ok(base.distribution.packages.length > 0 && !base.distribution.packages.some((p: string) => p.startsWith('nginx')))
    const baseId = (await cli(a, alice, ['template', 'show', 'template://me/debian/bookworm'])).id as string
    const build = (await cli(a, alice, ['names', '--owner', 'me'])).find((n: { name: string, kind: string }) => n.name === 'debian' && n.kind === 'version')
    assert.deepEqual([build?.tag, build?.template], [`bookworm-${baseId.slice(7, 15)}`, baseId], 'a tag of its own for this build of the base, which never moves')

    const web = (await cli(a, alice, ['deploy', 'debian-nginx', '--host', 'vm-b', '--wait'])).instances[0]
    assert.equal(web.host, b.info.peerId)
    const served = await eventually(async () => await page(web.endpoints[0].url), 60_000, 'nginx to answer')
    assert.match(served.server, /^nginx\//, `the Server header says nginx: ${served.server}`)
    assert.match(served.body, /Hello from nginx, on Debian/, 'the template\'s files are in the root file system')
    // The instance's disk is a thin overlay on the template's root file system.
    const overlay = (await stat(join(b.dataDir, 'instances', web.id, 'disk.qcow2'))).size
    assert.ok(overlay < manifest.image.diskBytes / 100, `overlay ${overlay} bytes vs a ${manifest.image.diskBytes}-byte root file system`)

    assert.equal((await cli(a, alice, ['instance', 'suspend', web.id])).state, 'suspended')
    assert.equal(await page(web.endpoints[0].url), undefined, 'a suspended VM does not answer')
    assert.equal((await cli(a, alice, ['instance', 'resume', web.id])).state, 'running')
    const again = await eventually(async () => await page(web.endpoints[0].url), 20_000, 'nginx to answer after resume')
    assert.match(again.server, /^nginx\//)

    // Live to A (its disk served from B), answering there.
    await cli(a, alice, ['migrate', web.id, '--to', 'vm-a'])
    const moved = await cli(a, alice, ['instance', 'show', web.id])
    assert.equal(moved.host, a.info.peerId)
    const there = await eventually(async () => await page(moved.endpoints[0].url), 30_000, 'nginx to answer where it moved')
    assert.match(there.server, /^nginx\//)
  })

  it('builds a second service on the same Debian base as a layer: a host that holds the base fetches only the layer; as a task it reads /in and writes /out', async () => {
    const nginx = (await cli(a, alice, ['template', 'show', 'debian-nginx'])).manifest
    const built = await cli(a, alice, ['template', 'build', join(ROOT, 'examples/python-app')])
    const manifest = (await cli(a, alice, ['template', 'show', built.id])).manifest
    assert.equal(manifest.image.base, nginx.image.base, 'both are layers on the same Debian base')
    assert.equal(nginx.image.diskFormat, 'qcow2')
    const blob = async (id: string): Promise<number> => (await stat(join(a.dataDir, 'blobs/sha256', id.slice(7)))).size
    const layer = await blob(manifest.image.disk)
    assert.ok(layer < manifest.image.diskBytes / 5, `the layer is ${layer} bytes of a ${manifest.image.diskBytes}-byte root file system`)

    // B holds the base (and the kernel) since it ran debian-nginx: it fetches the layer and the initramfs, nothing else.
    const before = await fetchedBytes(b)
    const app = (await cli(a, alice, ['deploy', 'python-app', '--host', 'vm-b', '--wait'])).instances[0]
    const fetched = await fetchedBytes(b) - before
    // At most: chunks B holds in other files (most of debian-nginx's initramfs) are not fetched again.
    assert.ok(fetched <= layer + await blob(manifest.image.initrd), `B fetched ${fetched} bytes: the layer (${layer}) and the initramfs at most`)
    assert.ok(fetched < await blob(manifest.image.base) / 4, `B fetched ${fetched} bytes, not the ${await blob(manifest.image.base)}-byte base`)
    const served = await eventually(async () => await page(app.endpoints[0].url), 60_000, 'the Python service to answer')
    assert.match(served.body, /^hello from Python 3\.\d+\.\d+ on Debian/)

    await mkdir(join(dir, 'texts'), { recursive: true })
    await writeFile(join(dir, 'texts', 'a.txt'), 'one two three\n')
    await cli(a, alice, ['data', 'put', join(dir, 'texts'), 'data://me/texts'])
    const task = await cli(a, alice, ['run', 'python-app', '--in', 'data://me/texts', '--out', 'results/py', '--host', 'vm-b', '--out-size', '16'])
    assert.equal(task.state, 'succeeded', task.error)
    const words = task.files.find((f: { path: string }) => f.path.endsWith('words.txt'))
    await cli(a, alice, ['data', 'get', words.uri, join(dir, 'words.txt')], false)
    assert.match(await readFile(join(dir, 'words.txt'), 'utf8'), /a\.txt 3\n/)
  })

  it('derives a service from the Debian base with packages, files, a command and a port: the very layer a template.yaml of the same builds', async () => {
    const app = (await cli(a, alice, ['template', 'show', 'python-app'])).manifest
    const base = 'template://me/debian/bookworm'
    await assert.rejects(cli(a, alice, ['template', 'derive', base]), /say what to add to the distribution/)
    await assert.rejects(cli(a, alice, ['template', 'derive', base, '--packages', 'python3-minimal', '--port', 'http']), /--port http: give NAME:GUEST/)
    await assert.rejects(cli(a, alice, ['template', 'derive', 'python-app', '--packages', 'curl']), /is itself tailored from .*: derive from that one/)
    const derived = await cli(a, alice, ['template', 'derive', base, '--packages', 'python3-minimal', '--add', join(ROOT, 'examples/python-app/files'),
      '--command', 'exec python3 /opt/app/app.py', '--port', 'http:8000:http:/', '--name', 'py-derived'])
    const manifest = (await cli(a, alice, ['template', 'show', derived.id])).manifest
    assert.equal(manifest.name, 'py-derived')
    assert.deepEqual(manifest.ports, app.ports)
    assert.deepEqual([manifest.image.diskFormat, manifest.image.base], ['qcow2', app.image.base], 'a layer on the base')
    assert.deepEqual([manifest.image.disk, manifest.image.initrd], [app.image.disk, app.image.initrd], 'the same bytes as python-app, built from its template.yaml')
    assert.deepEqual(manifest.distribution.packages, app.distribution.packages)
  })

  it('fails a build with a missing package, or a distribution that does not exist, naming what is wrong', async () => {
    const template = async (name: string, lines: string[]): Promise<string> => {
      const at = join(dir, name)
      await mkdir(at, { recursive: true })
      await writeFile(join(at, 'template.yaml'), [`name: ${name}`, 'version: "1"', 'command: "exec sleep 60"', ...lines, ''].join('\n'))
      return at
    }
    await assert.rejects(cli(a, alice, ['template', 'build', await template('no-such-package', ['distribution: { debian: bookworm }', 'packages: [nginx-light, no-such-package-xenos]'])]),
      /packages: no-such-package-xenos is not in Debian bookworm/)
    await assert.rejects(cli(a, alice, ['template', 'build', await template('no-such-suite', ['distribution: { debian: no-such-suite }'])]),
      /distribution: debian: "no-such-suite" is not a suite/)
    await assert.rejects(cli(a, alice, ['template', 'build', await template('bad-variant', ['distribution: { debian: bookworm, variant: huge }'])]),
      /distribution\.variant/)
    await assert.rejects(cli(a, alice, ['template', 'build', await template('packages-alone', ['packages: [nginx-light]'])]),
      /packages are installed into a distribution/)
  })
})
