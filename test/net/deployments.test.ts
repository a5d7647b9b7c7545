import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { apiOf, cli, CliError, eventually, getJson, httpGet, startHost, stopHost, stopHosts, tempDir, type TestHost } from '../helpers/cluster.ts'

/** A process template serving its directory www over HTTP, after `setup` (which ends with ";" or "&"); with `health`, healthy once that path answers. */
function webTemplate (name: string, setup: string, health?: string): string {
  const port = `{ name: http, protocol: http${health === undefined ? '' : `, health: ${health}`} }`
  return `name: ${name}\nversion: "1"\ndriver: process\ncommand: "mkdir -p www; ${setup} exec busybox httpd -f -p \${XENOS_HOST}:\${XENOS_PORT_HTTP} -h www"\nports: [${port}]\nresources: { cpu: 0.05, memory: 16 }\n`
}
const MASTER = webTemplate('dmaster', 'echo master ok > www/index.html;')
/** A worker shows at /seen what it last read from its master, at the address its description gave it. */
const WORKER = webTemplate('dworker', 'echo $ROLE > www/role; (while :; do busybox wget -q -O www/seen.tmp http://$MASTER/ && mv www/seen.tmp www/seen; sleep 0.3; done) &')
const DESCRIPTION = `name: pi
prototypes:
  worker:
    template: dworker
    env: { MASTER: TBD, ROLE: worker }
components:
  master:
    template: dmaster
  workers:
    extends: worker
    count: 3
    after: [master]
    env: { MASTER: "\${master.endpoints.http}" }
    placement: { spread: true }
`

/** Deployments from descriptions over several real xenosd processes: dependency order, values passed at run time, owners only, terminate. */
describe('deployments from descriptions', () => {
  const hosts: TestHost[] = []
  let a: TestHost
  let alice: string, mallory: string
  let file: string

  before(async () => {
    const dir = await tempDir('deployments')
    alice = join(dir, 'alice.pem')
    mallory = join(dir, 'mallory.pem')
    a = await startHost({ name: 'da' })
    hosts.push(a, ...await Promise.all(['db', 'dc', 'dd'].map(async name => await startHost({ name, bootstrap: [a] }))))
    for (const [name, text] of [['master.yaml', MASTER], ['worker.yaml', WORKER]] as const) {
      await writeFile(join(dir, name), text)
      await cli(a, alice, ['template', 'import', join(dir, name)])
    }
    file = join(dir, 'pi.yaml')
    await writeFile(file, DESCRIPTION)
    await eventually(async () => (await getJson(a, '/v1/peers')).hosts.length >= 4 || undefined, 20_000, 'every host to be advertised')
  })

  after(async () => {
    await stopHosts(hosts)
  })

  it('starts the workers on three hosts once the master is healthy, each given the master\'s address, and terminates everything', async () => {
    const d = await cli(a, alice, ['apply', file])
    assert.equal(d.state, 'running', JSON.stringify(d))
    const master = d.components.find((c: any) => c.path === 'master')
    const workers = d.components.find((c: any) => c.path === 'workers')
    assert.equal(master.instances.length, 1)
    assert.equal(workers.instances.length, 3)
    assert.equal(new Set(workers.instances.map((i: any) => i.host)).size, 3, 'spread over three hosts')

    const masterView = await cli(a, alice, ['instance', 'show', master.instances[0].id])
    assert.equal(masterView.name, 'pi-master')
    for (const i of workers.instances) {
      const w = await cli(a, alice, ['instance', 'show', i.id])
      assert.ok(w.createdAt >= masterView.healthyAt, `worker ${w.id} was made (${w.createdAt}) after the master was healthy (${masterView.healthyAt})`)
      assert.equal((await httpGet(`${w.endpoints[0].url as string}/role`))?.trim(), 'worker', 'the prototype\'s value')
      const seen = await eventually(async () => await httpGet(`${w.endpoints[0].url as string}/seen`), 15_000, `worker ${w.id} to reach the master`)
      assert.equal(seen.trim(), 'master ok')
    }
    const shown = await cli(a, alice, ['deployment', 'show', 'pi'])
    assert.deepEqual(shown.components.map((c: any) => [c.path, c.state]), [['master', 'running'], ['workers', 'running']])
    assert.deepEqual((await cli(a, alice, ['deployment', 'list'])).map((x: any) => x.name), ['pi'])
    // The same description again changes nothing.
    assert.deepEqual((await cli(a, alice, ['apply', file])).components.map((c: any) => c.instances), shown.components.map((c: any) => c.instances))

    const ended = await cli(a, alice, ['terminate', 'pi'])
    assert.equal(ended.state, 'terminated')
    assert.deepEqual([ended.termination.kind, ended.termination.cause], ['normal', 'terminated by its owner'])
    assert.deepEqual(ended.components.map((c: any) => [c.path, c.termination.kind]), [['master', 'normal'], ['workers', 'normal']])
    for (const h of hosts) {
      const local = (await getJson(h, '/v1/instances')).instances.filter((v: any) => v.host === h.info.peerId)
      assert.deepEqual(local, [], `host ${h.name} keeps nothing of the deployment`)
    }
  })

  it('lets only the owner see, apply again or terminate a deployment, through any host', async () => {
    await cli(a, alice, ['apply', file])
    for (const h of hosts) {
      await assert.rejects(cli(h, mallory, ['deployment', 'show', 'pi']), (err: unknown) => err instanceof CliError && /DEPLOYMENT_NOT_FOUND/.test(err.message))
      await assert.rejects(cli(h, mallory, ['terminate', 'pi']), /DEPLOYMENT_NOT_FOUND/)
    }
    assert.deepEqual(await cli(a, mallory, ['deployment', 'list']), [])
    const d = await cli(a, alice, ['deployment', 'show', 'pi'])
    assert.equal(d.state, 'running', 'Mallory changed nothing')
    for (const i of d.components.flatMap((c: any) => c.instances)) await assert.rejects(cli(a, mallory, ['instance', 'destroy', i.id]), /FORBIDDEN/)
    // Anyone may learn where it is supervised; a request Mallory signs for that host is still hers, and finds nothing.
    const where = await getJson(hosts.at(-1) as TestHost, `/v1/deployments/pi/supervisors?owner=${d.owner as string}`)
    assert.equal(where.acting, a.info.peerId)
    const theirs = await apiOf(hosts.at(-1) as TestHost, mallory)
    await assert.rejects(theirs.signed('POST', '/v1/deployments/pi/terminate', 'deployment.terminate', 'pi', {}, undefined, where.acting), /supervises no deployment pi of yours/)
    // The owner sees and ends it through any host, also one that holds no copy: the request is relayed to its supervisor.
    const holders = new Set(d.supervisors)
    assert.ok(hosts.some(h => !holders.has(h.info.peerId)), 'some host holds no copy')
    for (const h of hosts) assert.equal((await cli(h, alice, ['deployment', 'show', 'pi'])).state, 'running', `shown through ${h.name}`)
    const outsider = hosts.find(h => !holders.has(h.info.peerId)) as TestHost
    assert.equal((await cli(outsider, alice, ['terminate', 'pi'])).state, 'terminated')
  })

  it('names the line and path of a mistake before anything runs', async () => {
    const bad = join(await tempDir('bad'), 'bad.yaml')
    await writeFile(bad, DESCRIPTION.replace('    env: { MASTER: "${master.endpoints.http}" }\n', ''))
    await assert.rejects(cli(a, alice, ['apply', bad]), /bad\.yaml:5:20: components\.workers\.env\.MASTER: TBD not overridden/)
  })

  it('updates a running deployment to a changed description one instance at a time, through a host that holds no copy', async () => {
    const dir = await tempDir('update')
    const v1 = join(dir, 'v1.yaml')
    const v2 = join(dir, 'v2.yaml')
    const withExtra = DESCRIPTION.replace('    count: 3\n', '    count: 2\n') + '  extra:\n    template: dmaster\n'
    await writeFile(v1, withExtra)
    // The workers' environment changes and they are one more; extra goes, cache comes; the master stays as it was.
    await writeFile(v2, DESCRIPTION.replace('ROLE: worker }', 'ROLE: updated }') + '  cache:\n    template: dmaster\n    after: [workers]\n')
    const before = await cli(a, alice, ['apply', v1])
    assert.equal(before.state, 'running', JSON.stringify(before))
    const instancesOf = (d: any, path: string): any[] => d.components.find((c: any) => c.path === path)?.instances ?? []
    const oldWorkers = new Set(instancesOf(before, 'workers').map((i: any) => i.id))

    const outsider = hosts.find(h => !before.supervisors.includes(h.info.peerId)) as TestHost
    const after = await cli(outsider, alice, ['apply', v2])
    assert.equal(after.state, 'running', JSON.stringify(after))
    assert.equal(after.supervisor, a.info.peerId, 'relayed to the supervisor, which keeps acting')
    assert.deepEqual(after.supervisors, before.supervisors, 'an update keeps the supervisors')
    assert.deepEqual(after.components.map((c: any) => [c.path, c.state]), [['master', 'running'], ['workers', 'running'], ['cache', 'running']])
    assert.deepEqual(instancesOf(after, 'master'), instancesOf(before, 'master'), 'the master, unchanged, runs on as it was')
    const workers = instancesOf(after, 'workers')
    assert.equal(workers.length, 3)
    assert.ok(workers.every((i: any) => !oldWorkers.has(i.id)), 'every worker is made anew')
    for (const i of workers) {
      const w = await cli(a, alice, ['instance', 'show', i.id])
      assert.equal((await httpGet(`${w.endpoints[0].url as string}/role`))?.trim(), 'updated')
      assert.equal((await eventually(async () => await httpGet(`${w.endpoints[0].url as string}/seen`), 15_000, `worker ${w.id as string} to reach the master`)).trim(), 'master ok')
    }
    // One at a time: each old worker ends only after the one replacing it is healthy, before the next is made.
    const shown = await cli(a, alice, ['deployment', 'show', 'pi'])
    const steps = shown.components.find((c: any) => c.path === 'workers').events.map((e: any) => e.event as string)
      .filter((e: string) => /^(updating|adding|ended)/.test(e)).map((e: string) => e.split(' ')[0])
    assert.deepEqual(steps.slice(-5), ['updating', 'ended', 'updating', 'ended', 'adding'], steps.join(', '))

    const running = new Map<string, string[]>()
    for (const h of hosts) {
      for (const v of (await getJson<{ instances: any[] }>(h, '/v1/instances')).instances.filter((x: any) => x.host === h.info.peerId)) running.set(v.id, [...running.get(v.id) ?? [], v.name])
    }
    const names = [...running.values()].flat()
    assert.ok(!names.includes('pi-extra'), 'the component the update dropped is ended')
    assert.deepEqual([...running.keys()].filter(id => oldWorkers.has(id)), [], 'no old worker is left running')
    assert.equal(names.filter(n => n.startsWith('pi-workers-')).length, 3)

    assert.equal((await cli(a, alice, ['terminate', 'pi'])).state, 'terminated')
    for (const h of hosts) assert.deepEqual((await getJson(h, '/v1/instances')).instances.filter((v: any) => v.host === h.info.peerId), [], `host ${h.name} keeps nothing`)
  })

  it('carries on where it was when its supervisor is killed half-way, making each instance once', async () => {
    const dir = await tempDir('later')
    await writeFile(join(dir, 'slow.yaml'), webTemplate('dslow', 'echo slow > www/index.html; sleep 12;', '/'))
    await cli(a, alice, ['template', 'import', join(dir, 'slow.yaml')])
    const later = join(dir, 'later.yaml')
    await writeFile(later, 'name: later\ncomponents:\n  first:\n    template: dmaster\n  second:\n    template: dslow\n    count: 2\n    after: [first]\n    placement: { spread: true }\n')
    // The CLI loses its host half-way: its answer does not matter. One supervisor: the same host carries on when it is back.
    const applying = cli(a, alice, ['apply', later, '--supervisors', '1']).catch(() => undefined)
    await eventually(async () => {
      const d = await cli(a, alice, ['deployment', 'show', 'later']).catch(() => undefined)
      return d?.components.find((c: any) => c.path === 'second')?.state === 'deploying' || undefined
    }, 60_000, 'the second component to be placed')
    await stopHost(a, 'SIGKILL')
    await applying
    a = await startHost({ name: 'da', dataDir: a.dataDir, bootstrap: [hosts[1] as TestHost] })
    hosts[0] = a
    let last: unknown
    const d = await eventually(async () => {
      const v = last = await cli(a, alice, ['deployment', 'show', 'later']).catch(() => undefined)
      return v?.state === 'running' ? v : undefined
    }, 90_000, 'the restarted supervisor to bring the deployment up').catch((err: unknown) => { throw new Error(`${(err as Error).message}; it shows ${JSON.stringify(last)}`) })
    assert.equal(d.components.find((c: any) => c.path === 'second').instances.length, 2)
    let made = 0
    for (const h of hosts) made += (await getJson<{ instances: any[] }>(h, '/v1/instances')).instances.filter((v: any) => v.host === h.info.peerId && v.name.startsWith('later-second')).length
    assert.equal(made, 2, 'each instance made once')
    assert.equal(d.supervisor, a.info.peerId)
    await cli(a, alice, ['terminate', 'later'])
  })

  it('makes the master anew elsewhere when its host is killed, and the workers reach it again at the same address', async () => {
    const dir = await tempDir('ha')
    await writeFile(join(dir, 'master.yaml'), webTemplate('dmaster2', 'echo $XENOS_INSTANCE_ID > www/index.html;'))
    await cli(a, alice, ['template', 'import', join(dir, 'master.yaml')])
    // A component given the master's id: fixed in its environment, so it is made anew when the master is.
    await writeFile(join(dir, 'watcher.yaml'), webTemplate('dwatcher', 'echo $MASTER_ID > www/index.html;'))
    await cli(a, alice, ['template', 'import', join(dir, 'watcher.yaml')])
    const tagged = await Promise.all(['de', 'df'].map(async name => await startHost({ name, bootstrap: [a], extraArgs: ['--tag', 'tier=master'] })))
    hosts.push(...tagged)
    await eventually(async () => (await getJson(a, '/v1/peers')).hosts.filter((h: any) => h.tags?.tier === 'master').length === 2 || undefined, 20_000, 'the tagged hosts to be advertised')
    const file = join(dir, 'ha.yaml')
    await writeFile(file, [
      'name: ha',
      'components:',
      '  master:',
      '    template: dmaster2',
      '    onFailure: replace',
      '    liveness: { every: 1s, failAfter: 2 }',
      '    placement: { tags: { tier: master } }',
      '  workers:',
      '    template: dworker',
      '    count: 2',
      '    after: [master]',
      '    env: { MASTER: "${master.endpoints.http}", ROLE: worker }',
      '    liveness: { every: 1s, failAfter: 2 }',
      '    placement: { spread: true }',
      '  watcher:',
      '    template: dwatcher',
      '    after: [master]',
      '    env: { MASTER_ID: "${master.id}" }',
      '',
    ].join('\n'))
    const d = await cli(a, alice, ['apply', file])
    const first = d.components.find((c: any) => c.path === 'master').instances[0]
    const workerUrls = async (): Promise<string[]> => {
      const shown = await cli(a, alice, ['deployment', 'show', 'ha'])
      return await Promise.all(shown.components.find((c: any) => c.path === 'workers').instances.map(async (i: any) => (await cli(a, alice, ['instance', 'show', i.id])).endpoints[0].url as string))
    }
    for (const url of await workerUrls()) assert.equal((await eventually(async () => await httpGet(`${url}/seen`), 15_000, 'the workers to reach the master')).trim(), first.id)
    const watcherSays = async (id: string): Promise<string | undefined> => await httpGet((await cli(a, alice, ['instance', 'show', id])).endpoints[0].url)
    const firstWatcher = d.components.find((c: any) => c.path === 'watcher').instances[0]
    assert.equal((await eventually(async () => await watcherSays(firstWatcher.id), 15_000, 'the watcher to answer'))?.trim(), first.id)

    const dead = tagged.find(h => h.info.peerId === first.host) as TestHost
    const t0 = Date.now()
    await stopHost(dead, 'SIGKILL')
    const replaced = await eventually(async () => {
      const v = await cli(a, alice, ['deployment', 'show', 'ha'])
      const m = v.components.find((c: any) => c.path === 'master')
      return m.state === 'running' && m.instances[0].id !== first.id && v.components.every((c: any) => c.state === 'running') ? m.instances[0] : undefined
    }, 90_000, 'the master to be made anew on the other tagged host')
    const backMs = Date.now() - t0
    assert.notEqual(replaced.host, first.host)
    assert.equal(replaced.generation, 1)
    for (const url of await workerUrls()) {
      assert.equal((await eventually(async () => (await httpGet(`${url}/seen`))?.trim() === replaced.id || undefined, 30_000, 'the workers to reach the new master')), true)
    }
    process.stderr.write(`master back on another host ${backMs} ms after its host was killed; workers reach it ${Date.now() - t0} ms after\n`)
    const watcher = await eventually(async () => {
      const c = (await cli(a, alice, ['deployment', 'show', 'ha'])).components.find((x: any) => x.path === 'watcher')
      return c.state === 'running' && c.instances[0].generation === 1 ? c : undefined
    }, 60_000, 'the watcher to be made anew with the new master\'s id')
    assert.ok(watcher.events.some((e: any) => /component master runs anew/.test(e.event)), JSON.stringify(watcher.events))
    assert.equal((await eventually(async () => await watcherSays(watcher.instances[0].id), 15_000, 'the new watcher to answer'))?.trim(), replaced.id, 'it was given the new id')

    // The killed host comes back with the old master, which ran on without its xenosd: it is ended, leaving one master.
    const back = await startHost({ name: dead.name, dataDir: dead.dataDir, bootstrap: [a], extraArgs: ['--tag', 'tier=master'] })
    // The same host (its key, its data): the tests after this one find it by its peer id.
    hosts[hosts.indexOf(dead)] = back
    await eventually(async () => (await getJson(back, `/v1/instances?host=${back.info.peerId}`)).instances.every((v: any) => v.id !== first.id) || undefined, 60_000, 'the old master to be ended once its host is back')
    const master = (await cli(a, alice, ['deployment', 'show', 'ha'])).components.find((c: any) => c.path === 'master')
    assert.ok(master.events.some((e: any) => e.event.includes(`ended ${first.id as string}`)), JSON.stringify(master.events))
    await cli(a, alice, ['terminate', 'ha'])
  })

  it('starts a component that keeps failing again, then makes it anew, then fails the deployment: no endless loop', async () => {
    const dir = await tempDir('crash')
    await writeFile(join(dir, 'crash.yaml'), 'name: dcrash\nversion: "1"\ndriver: process\ncommand: "sleep 4; exit 3"\nresources: { cpu: 0.05, memory: 16 }\n')
    await cli(a, alice, ['template', 'import', join(dir, 'crash.yaml')])
    const file = join(dir, 'crash-desc.yaml')
    await writeFile(file, 'name: crashy\ncomponents:\n  c:\n    template: dcrash\n    restarts: { attempts: 1, backoff: 500ms }\n    liveness: { every: 500ms, failAfter: 1 }\n')
    assert.equal((await cli(a, alice, ['apply', file])).state, 'running')
    const failed = await eventually(async () => {
      const v = await cli(a, alice, ['deployment', 'show', 'crashy'])
      return v.state === 'failed' ? v : undefined
    }, 150_000, 'the deployment to give up on the component', 500)
    assert.match(failed.error, /keeps failing: made anew 3 times/)
    const events: string[] = failed.components[0].events.map((e: any) => e.event as string)
    assert.ok(events.some(e => /starting it again where it is \(1 of 1\)/.test(e)), events.join('\n'))
    assert.ok(events.some(e => /making it anew/.test(e)), events.join('\n'))
    assert.ok(failed.components[0].instances[0].generation >= 3, 'made anew three times')
    assert.equal(failed.components[0].termination.kind, 'abnormal')
    assert.deepEqual([failed.termination.kind, failed.termination.component], ['abnormal', 'c'], 'the failure goes up to the deployment')
    assert.match(failed.termination.cause, /^component c: .*keeps failing/)
    await cli(a, alice, ['terminate', 'crashy'])

    // A death whose policy is to end the deployment: what waits for it lost a dependency, the rest ends with it.
    const fragile = join(dir, 'fragile.yaml')
    await writeFile(fragile, 'name: fragile\ncomponents:\n  c:\n    template: dcrash\n    onFailure: terminate\n    liveness: { every: 500ms, failAfter: 1 }\n  beside:\n    template: dmaster\n  user:\n    template: dmaster\n    after: [c]\n')
    assert.equal((await cli(a, alice, ['apply', fragile])).state, 'running')
    const ended = await eventually(async () => {
      const v = await cli(a, alice, ['deployment', 'show', 'fragile'])
      return v.state === 'terminated' ? v : undefined
    }, 60_000, 'the deployment to end with its component', 500)
    assert.deepEqual([ended.termination.kind, ended.termination.component], ['abnormal', 'c'])
    assert.match(ended.error, /^component c: i-[0-9a-f]+ died/)
    assert.deepEqual(Object.fromEntries(ended.components.map((c: any) => [c.path, c.termination.kind])), { c: 'abnormal', beside: 'normal', user: 'dependency lost' })
    assert.match(ended.components.find((c: any) => c.path === 'user').termination.cause, /component c, which it waits for, died/)
    for (const h of hosts) assert.deepEqual((await getJson(h, '/v1/instances')).instances.filter((v: any) => v.host === h.info.peerId && v.name.startsWith('fragile')), [], `host ${h.name} keeps nothing`)
  })

  it('carries on supervising on another host when the host it was applied on dies, and replaces a worker there', async () => {
    const dir = await tempDir('orphan')
    const file = join(dir, 'orphan.yaml')
    await writeFile(file, 'name: orphan\ncomponents:\n  workers:\n    template: dmaster\n    count: 3\n    liveness: { every: 1s, failAfter: 2 }\n    placement: { spread: true }\n')
    const d = await cli(a, alice, ['apply', file])
    assert.equal(d.supervisor, a.info.peerId)
    assert.equal(d.supervisors.length, 3)
    const standbys = hosts.filter(h => d.supervisors.includes(h.info.peerId) && h !== a)
    await stopHost(a, 'SIGKILL')
    const taken = await eventually(async () => {
      const v = await cli(standbys[0] as TestHost, alice, ['deployment', 'show', 'orphan']).catch(() => undefined)
      return v !== undefined && v.supervisor !== d.supervisor ? v : undefined
    }, 60_000, 'a standby to take over')
    assert.equal(taken.supervisor, d.supervisors[1], 'the next supervisor the grant names')
    const acting = hosts.find(h => h.info.peerId === taken.supervisor) as TestHost
    const victim = taken.components[0].instances.find((i: any) => i.host !== acting.info.peerId && i.host !== a.info.peerId)
    const dead = hosts.find(h => h.info.peerId === victim.host) as TestHost
    await stopHost(dead, 'SIGKILL')
    let last: unknown
    const replaced = await eventually(async () => {
      const v = last = await cli(acting, alice, ['deployment', 'show', 'orphan'])
      const c = v.components[0]
      return c.state === 'running' && !c.instances.some((i: any) => i.id === victim.id) ? c : undefined
    }, 90_000, 'the worker on the killed host to be made anew by the new supervisor').catch((err: unknown) => { throw new Error(`${(err as Error).message}; it shows ${JSON.stringify(last)}`) })
    const live = hosts.filter(h => h.proc.exitCode === null && h.proc.signalCode === null).map(h => h.info.peerId)
    assert.ok(replaced.instances.every((i: any) => live.includes(i.host)), 'every worker on a host that lives')
    // With fewer hosts alive than workers, a spread that cannot be kept gives way, and says so.
    const crowded = new Set(replaced.instances.map((i: any) => i.host)).size < replaced.instances.length
    assert.equal(crowded, live.length < replaced.instances.length)
    assert.equal(replaced.events.some((e: any) => /beside a sibling: no other host has room/.test(e.event)), crowded, JSON.stringify(replaced.events))
    await cli(acting, alice, ['terminate', 'orphan'])
  })
})
