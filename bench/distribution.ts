/**
 * Distribution templates (XenoServer's Table 1 on this machine), on real xenosd processes and
 * QEMU (TCG here):
 * - each service's layer against its whole root file system, on one Debian base (bookworm,
 *   minbase): nginx-light, apache2, python3-minimal, and openjdk-17-jre-headless (a larger one);
 * - build time, cold (empty build cache) and with the base cached;
 * - bytes and time to fetch a service onto a host that holds the base, against one that does not;
 * - deploy to first healthy answer: busybox (hello-web) against Debian with the default kernel
 *   and with linux-image-cloud-amd64; and a resume from a suspended state.
 * Writes bench/results/distribution-latest.json.
 *
 *   node --disable-warning=ExperimentalWarning bench/distribution.ts
 */
import { cp, mkdir, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { DeployResult } from '../src/core/index.ts'
import { cli, cliRun, getJson, ROOT, startHost, stopHosts, tempDir, type TestHost } from '../test/helpers/cluster.ts'
import { round, summary } from './stats.ts'

const RUNS = 3
const dir = await tempDir('bench-distribution')
const user = join(dir, 'user.pem')
const cache = join(dir, 'cache')
const a = await startHost({ name: 'a', extraArgs: ['--cpu', '4', '--memory', '4096'] })
const b = await startHost({ name: 'b', bootstrap: [a], extraArgs: ['--cpu', '4', '--memory', '4096'] })
const c = await startHost({ name: 'c', bootstrap: [a], extraArgs: ['--cpu', '4', '--memory', '4096'] })

/** A template directory like `examples/python-app`, with other packages, kernel or command. */
async function variant (name: string, lines: string[]): Promise<string> {
  const at = join(dir, name)
  await mkdir(at, { recursive: true })
  await writeFile(join(at, 'template.yaml'), [`name: ${name}`, 'version: "1.0"', 'distribution: { debian: bookworm, variant: minbase }', ...lines, ''].join('\n'))
  return at
}

/** Builds `at` with the bench's own build cache; seconds it took. */
async function build (at: string): Promise<{ seconds: number, manifest: any }> {
  const t0 = performance.now()
  const { result } = await cliRun(a, user, ['template', 'build', at])
  const seconds = (performance.now() - t0) / 1000
  return { seconds, manifest: (await cli(a, user, ['template', 'show', result.id])).manifest }
}

async function blobBytes (id: string): Promise<number> {
  return (await stat(join(a.dataDir, 'blobs/sha256', id.slice(7)))).size
}

async function fetched (h: TestHost): Promise<number> {
  const text = await (await fetch(`${h.api}/metrics`)).text()
  return Number(/^xenos_blob_fetched_bytes_total (\d+)$/m.exec(text)?.[1])
}

/** Deploys `template` on `h`, waiting until healthy; the rollout's phases (ms) and the bytes `h` fetched. */
async function deploy (template: string, h: TestHost, extra: string[] = []): Promise<{ id: string, fetchMs: number, healthyMs: number, bootMs: number, bytes: number }> {
  const before = await fetched(h)
  const r = await cli(a, user, ['deploy', template, '--host', h.name, '--wait', ...extra]) as DeployResult
  const part = r.hosts[0]
  const ms = (v: number | null | undefined): number => v ?? 0
  return { id: r.instances[0]?.id ?? '', fetchMs: ms(part?.fetchMs), bootMs: ms(part?.bootMs), healthyMs: ms(part?.createMs) + ms(part?.bootMs) + ms(part?.healthyMs), bytes: await fetched(h) - before }
}

async function destroy (id: string): Promise<void> {
  await cli(a, user, ['instance', 'destroy', id])
}

try {
  process.env.XDG_CACHE_HOME = cache
  const python = join(dir, 'python-app')
  await cp(join(ROOT, 'examples/python-app'), python, { recursive: true })
  const templates: Array<[string, string]> = [
    ['debian-nginx', join(ROOT, 'examples/debian-nginx')],
    ['debian-apache', await variant('debian-apache', ['packages: [apache2]', 'command: "exec apachectl -D FOREGROUND"', 'ports: [{ name: http, protocol: http, guest: 80, health: / }]', 'resources: { cpu: 1, memory: 256 }'])],
    ['python-app', python],
    ['debian-java', await variant('debian-java', ['packages: [openjdk-17-jre-headless]', 'command: "java -version; exec sleep 600"', 'resources: { cpu: 1, memory: 512 }'])],
  ]
  // Table 1: the first build makes the base (cold cache); the others find it.
  const layers = []
  for (const [name, at] of templates) {
    const { seconds, manifest } = await build(at)
    const layer = await blobBytes(manifest.image.disk)
    layers.push({ name, packages: manifest.distribution.packages.length, layerBytes: layer, rootBytes: manifest.image.diskBytes, baseBytes: await blobBytes(manifest.image.base), layerPercent: round(100 * layer / manifest.image.diskBytes, 1), buildSeconds: round(seconds, 1) })
    process.stderr.write(`${name}: layer ${layer} of ${manifest.image.diskBytes} bytes, built in ${seconds.toFixed(1)} s\n`)
  }

  // Fetching python-app: onto B, which holds the base (it ran debian-nginx), and onto C, which holds nothing.
  await destroy((await deploy('debian-nginx', b)).id)
  const warm = await deploy('python-app', b)
  const cold = await deploy('python-app', c)
  await destroy(warm.id)
  await destroy(cold.id)

  // Deploy to healthy on A (the template is there): busybox, Debian with the default kernel, with the cloud kernel.
  await cli(a, user, ['template', 'build', join(ROOT, 'examples/hello-web')])
  const cloudDir = await variant('python-cloud', ['packages: [python3-minimal]', 'kernel: linux-image-cloud-amd64', 'command: "exec python3 /opt/app/app.py"', 'ports: [{ name: http, protocol: http, guest: 8000, health: / }]', 'resources: { cpu: 1, memory: 192 }'])
  await cp(join(python, 'files'), join(cloudDir, 'files'), { recursive: true })
  const cloudBuild = await build(cloudDir)
  const boots: Record<string, number[]> = { 'hello-web (busybox)': [], 'python-app (Debian, default kernel)': [], 'python-cloud (Debian, cloud kernel)': [] }
  const names: Record<string, string> = { 'hello-web (busybox)': 'hello-web', 'python-app (Debian, default kernel)': 'python-app', 'python-cloud (Debian, cloud kernel)': 'python-cloud' }
  for (let i = 0; i < RUNS; i++) {
    for (const [label, template] of Object.entries(names)) {
      const d = await deploy(template, a)
      boots[label]?.push(d.healthyMs)
      await destroy(d.id)
    }
  }
  // Resume: python-app suspended and resumed, to its next answer.
  const resumes: number[] = []
  const app = await deploy('python-app', a)
  const url = (await cli(a, user, ['instance', 'show', app.id])).endpoints[0].url
  for (let i = 0; i < RUNS; i++) {
    await cli(a, user, ['instance', 'suspend', app.id])
    const t0 = performance.now()
    await cli(a, user, ['instance', 'resume', app.id])
    for (;;) {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) }).catch(() => undefined)
      if (res?.ok === true) break
    }
    resumes.push(performance.now() - t0)
  }
  await destroy(app.id)

  const result = {
    when: new Date().toISOString(),
    accel: (await getJson(a, '/v1/host')).drivers,
    layers,
    fetch: {
      baseHeld: { bytes: warm.bytes, fetchMs: warm.fetchMs },
      nothingHeld: { bytes: cold.bytes, fetchMs: cold.fetchMs },
    },
    cloudKernelBuildSeconds: round(cloudBuild.seconds, 1),
    deployToHealthyMs: Object.fromEntries(Object.entries(boots).map(([k, v]) => [k, summary(v)])),
    resumeToAnswerMs: summary(resumes),
  }
  await writeFile(join(ROOT, 'bench/results/distribution-latest.json'), JSON.stringify(result, null, 2) + '\n')
  process.stdout.write(JSON.stringify(result, null, 2) + '\n')
} finally {
  await stopHosts([a, b, c])
  await rm(dir, { recursive: true, force: true })
}
