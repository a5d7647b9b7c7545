import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ROLLOUT_PHASES, signNameRecord, type RolloutPhase } from '../../src/core/index.ts'
import { loadOrCreateUserKey } from '../../src/cli/index.ts'
import { cli, CliError, cliRun, eventually, getJson, HELLO_MANIFEST, httpGet, rolloutPhases, startHost, stopHost, stopHosts, tempDir, type TestHost } from '../helpers/cluster.ts'

/**
 * Several real xenosd processes on loopback: discovery through the overlay, deploy and control
 * forwarded to the host that runs an instance, owners enforced by that host, late joiners, and
 * hosts that die.
 */
describe('a cloud of xenosd processes', () => {
  const hosts: TestHost[] = []
  let a: TestHost, b: TestHost, c: TestHost
  let alice: string, mallory: string
  let templateId: string
  let instanceId: string
  let endpoint: string

  before(async () => {
    const keys = await tempDir('keys')
    alice = join(keys, 'alice.pem')
    mallory = join(keys, 'mallory.pem')
    a = await startHost({ name: 'a' })
    hosts.push(a)
    ;[b, c] = await Promise.all([startHost({ name: 'b', bootstrap: [a] }), startHost({ name: 'c', bootstrap: [a] })])
    hosts.push(b, c)
  })

  after(async () => {
    for (const h of hosts) {
      const list = await getJson(h, '/v1/instances').catch(() => ({ instances: [] }))
      for (const i of (list.instances ?? []) as Array<{ id: string, host: string }>) if (i.host === h.info.peerId) await cli(h, alice, ['instance', 'destroy', i.id]).catch(() => {})
    }
    await stopHosts(hosts)
  })

  it('finds from C a template imported on A', async () => {
    const waiting = getJson(c, '/v1/search?kind=template&q=hello&waitMs=10000')
    const t = await cli(a, alice, ['template', 'import', HELLO_MANIFEST])
    templateId = t.id
    const arrived = await waiting
    assert.equal(arrived.results[0]?.id, templateId, 'a waiting search returns as soon as the advert arrives')
    assert.match(templateId, /^sha256:[0-9a-f]{64}$/)
    const found = await eventually(async () => {
      const results = await cli(c, alice, ['search', 'hello', '--kind', 'template'])
      return results.find((r: any) => r.id === templateId)
    }, 10_000, 'the template to reach C')
    assert.equal(found.host, a.info.peerId)
    assert.equal(found.body.name, 'hello')
    const byTag = await cli(c, alice, ['search', '--tag', 'kind=web', '--kind', 'template'])
    assert.ok(byTag.some((r: any) => r.id === templateId))
    const noTag = await cli(c, alice, ['search', '--tag', 'kind=database', '--kind', 'template'])
    assert.equal(noTag.length, 0)
  })

  it('resolves an owner\'s template names on every host, moves aliases only for their owner', async () => {
    const owner = (await cli(a, alice, ['whoami'])).owner as string
    const tagged = await cli(a, alice, ['template', 'tag', templateId, 'hello/1.0'])
    assert.equal(tagged.record.template, templateId)
    await cli(a, alice, ['template', 'alias', templateId, 'template://me/hello/current'])
    const current = `template://${owner}/hello/current`
    const seen = await eventually(async () => await cli(c, mallory, ['template', 'show', current]).catch(() => undefined), 5000, 'the alias to reach C')
    assert.equal(seen.id, templateId)

    // A second version; the owner moves the alias from another host, and every host follows.
    const dir = await tempDir('hello-2')
    await writeFile(join(dir, 'hello.yaml'), (await readFile(HELLO_MANIFEST, 'utf8')).replace('version: "1.0"', 'version: "2.0"'))
    const second = (await cli(b, alice, ['template', 'import', join(dir, 'hello.yaml')])).id as string
    await cli(b, alice, ['template', 'alias', second, 'hello/current'])
    for (const h of [a, c]) {
      await eventually(async () => (await cli(h, alice, ['template', 'show', current])).id === second || undefined, 5000, `the moved alias to reach ${h.name}`)
    }
    assert.equal((await cli(c, alice, ['template', 'show', `template://${owner}/hello/1.0`])).id, templateId, 'the version stays')

    // Nobody else can move it: not through the CLI, not with a record signed by another key.
    await assert.rejects(cli(c, mallory, ['template', 'alias', templateId, current]), (e: CliError) => /FORBIDDEN/.test(e.message))
    const forged = { ...signNameRecord(await loadOrCreateUserKey(mallory).then(k => k.key), { name: 'hello', tag: 'current', kind: 'alias', template: templateId }), owner }
    const refused = await fetch(`${c.api}/v1/names`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ record: forged }) })
    assert.equal(refused.status, 401)
    // And a version never moves, even for its owner.
    await assert.rejects(cli(a, alice, ['template', 'tag', second, 'hello/1.0']), (e: CliError) => /NAME_CONFLICT/.test(e.message))
    assert.equal((await cli(a, alice, ['template', 'show', current])).id, second)
    await cli(b, alice, ['template', 'rm', second])
  })

  it('deploys from C onto B, and the instance serves on its advertised endpoint', async () => {
    const result = await cli(c, alice, ['deploy', 'hello', '--host', 'b', '--name', 'web'])
    assert.equal(result.instances.length, 1)
    const inst = result.instances[0]
    instanceId = inst.id
    assert.equal(inst.host, b.info.peerId)
    assert.equal(inst.state, 'running')
    assert.equal(inst.name, 'web')
    assert.equal(inst.template, templateId)
    endpoint = inst.endpoints.find((e: any) => e.name === 'http').url
    const page = await eventually(async () => await httpGet(endpoint), 10_000, 'the service to answer')
    assert.match(page, new RegExp(`hello from ${instanceId}`))
    // B fetched the template from A on demand and now advertises it too.
    const holders = await eventually(async () => {
      const t = await cli(c, alice, ['template', 'show', templateId])
      return t.hosts.includes(b.info.peerId) ? t.hosts : undefined
    }, 10_000, 'B to advertise the template')
    assert.ok(holders.includes(a.info.peerId))
    // The instance is found by search from A, with its endpoint.
    const seen = await eventually(async () => (await cli(a, alice, ['search', 'web', '--kind', 'instance'])).find((r: any) => r.id === instanceId), 10_000, 'the instance advert on A')
    assert.equal(seen.body.endpoints[0].url, endpoint)
  })

  it('gives a process the address of a service it links to, on another host, and the environment its deploy names with it', async () => {
    const dir = await tempDir('reader')
    await writeFile(join(dir, 'reader.yaml'), 'name: reader\nversion: "1"\ndriver: process\ncommand: "echo linked at $XENOS_LINK_WEB; echo told $WHERE in $MODE; while :; do busybox wget -q -O - http://$XENOS_LINK_WEB/ || echo unreachable; sleep 0.5; done"\nresources: {cpu: 0.05, memory: 16}\n')
    await cli(a, alice, ['template', 'import', join(dir, 'reader.yaml')])
    const reader = (await cli(a, alice, ['deploy', 'reader', '--host', 'a', '--link', 'web=web', '--env', 'WHERE=http://${XENOS_LINK_WEB}/', '--env', 'MODE=a b'])).instances[0]
    const logs = await eventually(async () => {
      const text = (await cli(a, alice, ['instance', 'logs', reader.id])).text as string
      return text.includes(`hello from ${instanceId}`) ? text : undefined
    }, 15_000, 'the reader to reach the web instance on B through its link')
    const linked = /linked at (127\.0\.0\.1:\d+)/.exec(logs)?.[1]
    assert.ok(linked !== undefined, logs)
    assert.ok(logs.includes(`told http://${linked}/ in a b`), `the environment names the link's address: ${logs}`)
    await assert.rejects(cli(a, alice, ['deploy', 'reader', '--env', 'NOEQUALS']), /--env NOEQUALS: give KEY=VALUE/)
    await assert.rejects(cli(a, alice, ['deploy', 'reader', '--env', '1BAD=x']), /INVALID_ARGUMENT|environment variable/)
    await cli(a, alice, ['instance', 'destroy', reader.id])
    await assert.rejects(cli(a, alice, ['deploy', 'reader', '--link', 'Web=web']), /--link Web=web/)
  })

  it('shows state and metrics of a remote instance', async () => {
    const shown = await cli(a, alice, ['instance', 'show', instanceId])
    assert.equal(shown.state, 'running')
    assert.equal(shown.owner, (await cli(a, alice, ['whoami'])).owner)
    const m = await cli(a, alice, ['instance', 'metrics', instanceId])
    assert.equal(m.id, instanceId)
    assert.equal(m.host, b.info.peerId)
    assert.ok(m.memoryBytes > 0, 'memory is measured')
    assert.ok(m.uptimeSeconds >= 0)
    const mine = await cli(c, alice, ['instance', 'list'])
    assert.ok(mine.some((i: any) => i.id === instanceId))
    // By its name, or a unique start of its id; a name is looked up among the user's own.
    assert.equal((await cli(a, alice, ['instance', 'show', shown.name])).id, instanceId)
    assert.equal((await cli(a, alice, ['instance', 'show', instanceId.slice(0, 8)])).id, instanceId)
    assert.equal((await cli(c, alice, ['instance', 'metrics', instanceId.slice(2, 8)])).id, instanceId)
    await assert.rejects(cli(a, alice, ['instance', 'show', 'no-such-name']), /INSTANCE_NOT_FOUND: no instance is named "no-such-name"/)
    await assert.rejects(cli(a, mallory, ['instance', 'show', shown.name]), /INSTANCE_NOT_FOUND/)
  })

  it('pauses, resumes and stops it from C', async () => {
    const paused = await cli(c, alice, ['instance', 'pause', instanceId])
    assert.equal(paused.state, 'paused')
    assert.equal(await httpGet(endpoint, 700), undefined, 'a paused service does not answer')
    const resumed = await cli(c, alice, ['instance', 'resume', instanceId])
    assert.equal(resumed.state, 'running')
    assert.match(await eventually(async () => await httpGet(endpoint), 5000, 'the resumed service') ?? '', /hello from/)
    const again = await cli(c, alice, ['instance', 'pause', instanceId])
    assert.equal(again.state, 'paused')
    await assert.rejects(cli(c, alice, ['instance', 'pause', instanceId]), /INVALID_STATE/)
    const stopped = await cli(c, alice, ['instance', 'stop', instanceId])
    assert.equal(stopped.state, 'stopped')
    assert.equal(await httpGet(endpoint, 700), undefined, 'a stopped service does not answer')
  })

  it('refuses control by another user, at the instance\'s host, even through a third host', async () => {
    const started = await cli(a, alice, ['instance', 'start', instanceId])
    assert.equal(started.state, 'running')
    for (const via of [a, c, b]) {
      await assert.rejects(cli(via, mallory, ['instance', 'stop', instanceId]), (err: CliError) => /FORBIDDEN/.test(err.message))
      await assert.rejects(cli(via, mallory, ['instance', 'logs', instanceId]), /FORBIDDEN/)
    }
    // An unsigned request is refused as well.
    const res = await fetch(`${a.api}/v1/instances/${instanceId}/stop`, { method: 'POST' })
    assert.equal(res.status, 401)
    assert.equal(((await res.json()) as any).error.code, 'UNAUTHENTICATED')
    assert.equal((await cli(b, alice, ['instance', 'show', instanceId])).state, 'running')
  })

  it('lets a host that joins later find the template and the instance', async () => {
    const d = await startHost({ name: 'd', bootstrap: [c] })
    hosts.push(d)
    const results = await eventually(async () => {
      const r = await cli(d, alice, ['search'])
      return r.some((x: any) => x.id === templateId) && r.some((x: any) => x.id === instanceId) ? r : undefined
    }, 10_000, 'D to learn the template and the instance')
    assert.ok(results.filter((r: any) => r.kind === 'host').length >= 4)
    const shown = await cli(d, alice, ['instance', 'show', instanceId])
    assert.equal(shown.host, b.info.peerId)
    // The DHT answers by id and by name without the cache.
    const byId = await eventually(async () => (await getJson(d, `/v1/search?from=dht&q=${templateId}`)).results[0], 10_000, 'a DHT lookup by id')
    assert.equal(byId.id, templateId)
    const byName = await getJson(d, '/v1/search?from=dht&kind=instance&q=web')
    assert.equal(byName.results[0]?.id, instanceId)
    // It heard the template names published before it joined, but for the alias whose template
    // no host holds any more (removed from B above): a name must point at a template some host holds.
    const { names } = await getJson(d, '/v1/names')
    assert.deepEqual(names.map((n: any) => n.tag).sort(), ['1.0'])
  })

  it('spreads a deploy without --host over hosts with room', async () => {
    const result = await cli(a, alice, ['deploy', 'hello', '--count', '4'])
    assert.equal(result.instances.length, 4)
    assert.equal(result.failures.length, 0)
    const used = new Set(result.instances.map((i: any) => i.host))
    assert.ok(used.size >= 2, `expected several hosts, got ${used.size}`)
    await Promise.all(result.instances.map(async (i: any) => {
      assert.match(await eventually(async () => await httpGet(i.endpoints[0].url), 10_000, 'each replica') ?? '', new RegExp(i.id))
    }))
    for (const i of result.instances) await cli(c, alice, ['instance', 'destroy', i.id])
  })

  it('deploys onto several named hosts at once, timing each host\'s part until healthy', async () => {
    const { result, stderr } = await cliRun(c, alice, ['deploy', 'hello', '--hosts', 'a,b,c', '--name', 'web', '--wait'])
    assert.equal(result.instances.length, 3)
    // Numbered across the hosts, in the order given.
    assert.deepEqual([a, b, c].map(h => result.instances.find((i: any) => i.host === h.info.peerId)?.name), ['web-1', 'web-2', 'web-3'])
    // The live view (lines, as stderr is no terminal) follows each host through its phases in order.
    // It shows what each host says when asked (every 300 ms): a phase shorter than that may pass unseen.
    const phases = ['a', 'b', 'c'].map(name => rolloutPhases(stderr, name))
    for (const seen of phases) {
      assert.equal(seen.at(-1), 'done', `${seen.join(' → ')}\n${stderr}`)
      assert.deepEqual(seen.map(p => ROLLOUT_PHASES.indexOf(p as RolloutPhase)), seen.map(p => ROLLOUT_PHASES.indexOf(p as RolloutPhase)).sort((x, y) => x - y), seen.join(' → '))
    }
    assert.ok(phases.some(seen => seen.includes('creating') || seen.includes('booting')), `a host's making or booting shown\n${stderr}`)
    assert.deepEqual(result.hosts.map((h: any) => h.host).sort(), [a, b, c].map(h => h.info.peerId).sort())
    for (const part of result.hosts) {
      assert.equal(part.error, null)
      assert.equal(part.instances.length, 1)
      for (const phase of ['fetchMs', 'createMs', 'bootMs', 'healthyMs']) assert.ok(part[phase] >= 0, `${phase} of ${part.host}: ${part[phase]}`)
    }
    for (const i of result.instances) await cli(c, alice, ['instance', 'destroy', i.id])
    await assert.rejects(cli(c, alice, ['deploy', 'hello', '--hosts', 'a,a']), (e: CliError) => /listed twice/.test(e.message))
  })

  it('drops the adverts of a host that dies, found by probing long before they would expire, and takes them back when it returns', async () => {
    // E's adverts live ten minutes: only failure detection can take them out within the test.
    const e = await startHost({ name: 'e', bootstrap: [a], advertTtl: 600 })
    const detectMs = 20_000
    const deployed = await cli(a, alice, ['deploy', 'hello', '--host', 'e'])
    const onE = deployed.instances[0].id
    await eventually(async () => (await getJson(c, '/v1/search')).results.some((r: any) => r.id === onE), 10_000, 'E\'s instance to be advertised')
    const killedAt = Date.now()
    await stopHost(e, 'SIGKILL')
    for (const h of [a, c]) {
      await eventually(async () => {
        const { results } = await getJson(h, '/v1/search')
        return !results.some((r: any) => r.host === e.info.peerId)
      }, detectMs, `E's adverts to leave ${h.name}`)
    }
    assert.ok(Date.now() - killedAt <= detectMs)
    // Gone from searches, not from sight: listed as unreachable, its instance with it, of unknown state.
    const unreachable = (await getJson(c, '/v1/peers')).unreachable
    assert.deepEqual(unreachable.map((u: any) => [u.id, u.name]), [[e.info.peerId, 'e']])
    assert.ok(unreachable[0].since >= killedAt)
    const listed = (await cli(c, alice, ['instance', 'list'])).find((i: any) => i.id === onE)
    assert.equal(listed?.unreachableSince, unreachable[0].since, 'its owner still sees it, marked')
    assert.match(await cli(c, alice, ['instance', 'list'], false), new RegExp(`${onE} .* e +unknown \\(host unreachable since \\d+s ago; was running\\)`))
    assert.match(await cli(c, alice, ['peers'], false), /\be +- .*unreachable since \d+s ago/)
    const metrics = await (await fetch(`${c.api}/metrics`)).text()
    assert.match(metrics, /xenos_hosts_down_total\{how="(probed|notice)"\} [1-9]/, 'C took E for dead itself or on a notice it checked')
    // E comes back on the same data dir, finds its instance still running and is advertised again.
    const back = await startHost({ name: 'e', bootstrap: [a], dataDir: e.dataDir })
    hosts.push(back)
    assert.equal(back.info.peerId, e.info.peerId, 'a host keeps its identity across restarts')
    const seen = await eventually(async () => (await getJson(c, '/v1/search')).results.find((r: any) => r.id === onE), 10_000, 'E\'s instance to come back')
    assert.equal(seen.body.state, 'running')
    assert.deepEqual((await getJson(c, '/v1/peers')).unreachable, [], 'back, and no longer unreachable')
    assert.equal((await cli(c, alice, ['instance', 'list'])).find((i: any) => i.id === onE)?.unreachableSince, undefined)
  })
})
