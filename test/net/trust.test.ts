import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  deploySpecDigest, encodeAuthHeader, generateOwnerKey, instanceIdsOf, signAction, signDeployToken, signNameRecord,
  type OwnerKey, type Placement,
} from '../../src/core/index.ts'
import { loadOrCreateUserKey } from '../../src/cli/index.ts'
import { ADVERT_TOPIC, encodeAdvert, signAdvert } from '../../src/overlay/index.ts'
import { multiaddr } from '@multiformats/multiaddr'
import { templateAdvert } from '../helpers/adverts.ts'
import { apiOf, cli, cliRun, CliError, eventually, getJson, publicViewOf, startHost, stopHost, stopHosts, tempDir, type TestHost } from '../helpers/cluster.ts'
import { movedTo } from '../helpers/placement.ts'
import { startRogue, type Rogue } from '../helpers/rogue.ts'

const SLEEPER = 'name: sleeper\nversion: "1"\ndriver: process\ncommand: "sleep 600"\nresources: {cpu: 0.05, memory: 16}\n'
/** Ignores SIGTERM: stopping it takes the whole stop timeout, so that a host can be killed in the middle. */
const STUBBORN = 'name: stubborn\nversion: "1"\ndriver: process\ncommand: "trap \\"\\" TERM; sleep 600"\nresources: {cpu: 0.05, memory: 16}\n'

async function metric (h: TestHost, name: string): Promise<number> {
  const text = await (await fetch(`${h.api}/metrics`)).text()
  return Number(new RegExp(`^${name.replace(/[{}]/g, c => `\\${c}`)} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN)
}

/**
 * W's heap limit. Checking its flood needs 40–64 MiB of heap; were W to keep what is over its
 * caps (20,000 adverts, 15,000 names), it would run out. Its resident size is no measure: V8
 * collects lazily, and W's grew by 100–160 MiB under the same flood with no limit.
 */
const W_HEAP_MIB = 64

/**
 * Real xenosd processes attacked as a peer on the same overlay would: a rogue that speaks the
 * overlay's protocols with a key of its own claims instances, advertises room it lacks, replays
 * what it captured and floods hosts with adverts and names; and hosts killed in the middle of a
 * deploy or a destroy.
 */
describe('a cloud whose peers are attackers', () => {
  const running: TestHost[] = []
  const rogues: Rogue[] = []
  let v: TestHost, w: TestHost
  let alice: string, mallory: string
  let aliceKey: OwnerKey
  let template: string
  let dir: string

  before(async () => {
    dir = await tempDir('trust')
    alice = join(dir, 'alice.pem')
    mallory = join(dir, 'mallory.pem')
    aliceKey = (await loadOrCreateUserKey(alice)).key
    await writeFile(join(dir, 'sleeper.yaml'), SLEEPER)
    await writeFile(join(dir, 'stubborn.yaml'), STUBBORN)
    v = await startHost({ name: 'victim-v' })
    w = await startHost({ name: 'victim-w', bootstrap: [v], nodeArgs: [`--max-old-space-size=${W_HEAP_MIB}`] })
    running.push(v, w)
    template = (await cli(v, alice, ['template', 'import', join(dir, 'sleeper.yaml')])).id
    await eventually(async () => (await getJson(w, `/v1/search?kind=template&q=${template}`)).results.length > 0, 10_000, 'the template advert to reach W')
  })

  after(async () => {
    for (const r of rogues) await r.stop()
    await stopHosts(running)
  })

  it('lets no rogue claim an owner\'s instance, draw the owner\'s requests to it, or replay what it captured', async () => {
    const x = (await cli(w, alice, ['deploy', 'sleeper', '--host', 'victim-v'])).instances[0]
    await eventually(async () => (await publicViewOf(w, x.id))?.host === v.info.peerId, 10_000, 'X\'s advert to reach W')
    const rogue = await startRogue(w, { rpcMethods: ['instance.control', 'instance.get', 'instance.logs', 'instance.metrics', 'instance.deploy', 'instance.snapshot'] })
    rogues.push(rogue)
    await rogue.node.dial(multiaddr(v.info.multiaddrs[0] ?? ''))
    // It copies X's advert, placement and all, and advertises it as its own, newer than V's.
    const seen = (await getJson(w, `/v1/search?kind=instance&q=${x.id}`)).results[0]
    const ahead = Date.now() + 20_000
    const mine = { v: 1, kind: 'instance', id: x.id, host: rogue.id, seq: 9, issuedAt: ahead, expiresAt: ahead + 60_000, body: seen.body } as const
    await rogue.gossip(mine)
    // ...and with a move to itself, signed by another key.
    const moved = movedTo((await loadOrCreateUserKey(mallory)).key, seen.body.placement as Placement, x.id, v.info.peerId, rogue.id)
    await rogue.gossip({ ...mine, seq: 10, body: { ...seen.body, placement: moved } })
    await eventually(async () => await metric(w, 'xenos_adverts_rejected_total{reason="bad-placement"}') >= 2, 10_000, 'W to reject both claims')
    assert.equal((await publicViewOf(w, x.id)).host, v.info.peerId, 'W still sees X where its owner placed it')
    assert.deepEqual(await getJson(w, `/v1/instances/${x.id}/host`), { host: v.info.peerId })

    // The owner's requests through W go to V, and none reaches the rogue.
    assert.equal((await cli(w, alice, ['instance', 'show', x.id])).host, v.info.peerId)
    await cli(w, alice, ['instance', 'logs', x.id])
    assert.equal((await cli(w, alice, ['instance', 'stop', x.id])).state, 'stopped')
    assert.deepEqual(rogue.calls, [], 'no request was forwarded to the rogue')

    // A deploy token it captured makes nothing anywhere: not on another host, not twice on its own.
    const spec = { name: 'captured' }
    const token = signDeployToken(aliceKey, { host: v.info.peerId, template, key: randomBytes(16).toString('hex'), count: 1, spec: deploySpecDigest(spec) })
    const api = await apiOf(v, alice)
    await api.post('/v1/instances', { template, spec, parts: [{ token }] })
    for (const to of [w, v]) {
      await assert.rejects(rogue.rpc.call(to.info.peerId, 'instance.deploy', { template, spec, part: { token } }), (e: any) => e.code === 'UNAUTHENTICATED', `replayed to ${to.name}`)
    }
    const mineNow = (await getJson(w, `/v1/instances?owner=${aliceKey.id}`)).instances.filter((i: any) => i.name === 'captured')
    assert.deepEqual(mineNow.map((i: any) => i.id), instanceIdsOf(token), 'one instance, where its owner placed it')

    // A migration it asks W to prepare, for an instance that is not its own, is refused.
    await assert.rejects(rogue.rpc.call(w.info.peerId, 'migrate.prepare', {
      instance: { id: x.id, name: 'web', owner: aliceKey.id, createdAt: Date.now() }, template, placement: seen.body.placement,
    }), (e: any) => e.code === 'FORBIDDEN')
    await assert.rejects(rogue.rpc.call(w.info.peerId, 'migrate.prepare', {
      instance: { id: x.id, name: 'web', owner: aliceKey.id, createdAt: Date.now() }, template, placement: movedTo((await loadOrCreateUserKey(mallory)).key, seen.body.placement, x.id, rogue.id, w.info.peerId),
    }), (e: any) => e.code === 'UNAUTHENTICATED')
    assert.equal((await cli(w, alice, ['instance', 'list', '--host', 'victim-w'])).some((i: any) => i.id === x.id), false)
    await cli(w, alice, ['instance', 'destroy', x.id])
  })

  it('draws a deploy to a host advertising room it does not have once, and then leaves that host out', async () => {
    // It offers no RPC at all: a deploy sent there cannot be carried out.
    const rogue = await startRogue(w, { serve: false })
    rogues.push(rogue)
    const now = Date.now()
    const huge = { cpu: 100_000, memory: 1_000_000_000 }
    await rogue.gossip({
      v: 1, kind: 'host', id: rogue.id, host: rogue.id, seq: 1, issuedAt: now, expiresAt: now + 120_000,
      body: { name: 'huge', api: 'http://127.0.0.1:1/', addrs: rogue.node.getMultiaddrs().map(m => m.toString()), drivers: ['process'], capacity: huge, free: huge, instances: 0, version: '0.1.0', operators: [], tags: {} },
    })
    await eventually(async () => (await getJson(w, '/v1/peers')).hosts.some((h: any) => h.id === rogue.id), 10_000, 'W to see the rogue\'s host advert')
    const plan = await getJson(w, `/v1/placement?template=${template}&count=3`)
    assert.deepEqual(plan.hosts, [{ host: rogue.id, count: 3 }], 'the rogue has most room, it says')
    await assert.rejects(cli(w, alice, ['deploy', 'sleeper', '--count', '3']), (e: CliError) => /PEER_UNREACHABLE|PEER_PROTOCOL/.test(e.message))
    const after = await getJson(w, `/v1/placement?template=${template}&count=3`)
    assert.ok(!after.hosts.some((h: any) => h.host === rogue.id), `the rogue is left out: ${JSON.stringify(after.hosts)}`)
    const deployed = await cli(w, alice, ['deploy', 'sleeper', '--count', '2'])
    assert.ok(deployed.instances.every((i: any) => i.host === v.info.peerId || i.host === w.info.peerId))
    assert.equal((await getJson(w, `/v1/instances?host=${rogue.id}`)).instances.length, 0)
    for (const i of deployed.instances) await cli(w, alice, ['instance', 'destroy', i.id])
  })

  it('takes no more adverts or names from a flooding peer than its caps, and still syncs a host that joins', async () => {
    const rogue = await startRogue(w)
    rogues.push(rogue)
    const now = Date.now()
    const ids = Array.from({ length: 20_000 }, (_, i) => `sha256:${i.toString(16).padStart(64, '0')}`)
    const signed = await Promise.all(ids.map(async (id, i) => await signAdvert(rogue.key, templateAdvert(rogue.id, { id, seq: i, issuedAt: now, expiresAt: now + 240_000 }))))
    rogue.offer('adverts', signed.map(a => ({ key: `template/${rogue.id}/${a.id}`, record: a })))
    const flooder = generateOwnerKey()
    const names = ids.slice(0, 15_000).map((id, i) => signNameRecord(flooder, { name: 'flood', tag: `v${i}`, kind: 'version', template: id }))
    rogue.offer('xenos/names/1', names.map(n => ({ key: `${n.owner}/${n.name}/${n.tag}`, record: n })))
    for (const a of signed.slice(0, 300)) await rogue.node.services.pubsub.publish(ADVERT_TOPIC, encodeAdvert(a))
    // W pulls from a peer as soon as it connects (and from one at random every 30 s).
    await rogue.redial()
    await eventually(async () => await metric(w, 'xenos_adverts_rejected_total{reason="over-cap"}') > 1000, 60_000, 'W to refuse what is over its caps', 500)
    const fromRogue = (await getJson(w, `/v1/search?host=${rogue.id}&limit=1000`)).results.length
    assert.ok(fromRogue <= 1000, `${fromRogue} of the rogue's adverts`)
    assert.ok(await metric(w, 'xenos_adverts_cached') <= 1024 + 50, 'one host\'s adverts take at most its share of the cache')
    await eventually(async () => (await getJson(w, `/v1/names?owner=${flooder.id}`)).names.length >= 900, 60_000, 'W to take the names it has room for', 500)
    await sleep(6000)
    const kept = (await getJson(w, `/v1/names?owner=${flooder.id}`)).names.length
    assert.ok(kept <= 1000, `${kept} names of one owner`)
    assert.ok((await getJson(w, '/v1/search')).results.length <= 100, 'a search answers a page, not the whole cache')
    assert.equal(w.proc.exitCode, null, `W ran out of its ${W_HEAP_MIB} MiB heap`)
    // A host that joins through W gets what it needs from it, page by page.
    const z = await startHost({ name: 'joiner', bootstrap: [w] })
    running.push(z)
    await eventually(async () => (await getJson(z, `/v1/search?kind=template&q=${template}`)).results.some((r: any) => r.host === v.info.peerId), 20_000, 'the joiner to learn V\'s template')
  })

  it('leaves every instance running or failed, none twice, after a kill -9 in the middle of a deploy of eight, and finishes it with the same request id', async t => {
    const k = await startHost({ name: 'killed', bootstrap: [w] })
    running.push(k)
    await cli(k, alice, ['template', 'import', join(dir, 'sleeper.yaml')])
    const deploying = cliRun(k, alice, ['deploy', 'sleeper', '--count', '8', '--host', 'killed', '--request-id', 'eight'])
    const instances = join(k.dataDir, 'instances')
    await eventually(async () => (await readdir(instances)).length >= 1 || undefined, 30_000, 'the deploy to begin', 2)
    await stopHost(k, 'SIGKILL')
    const outcome = await deploying.then(r => r.result as unknown, (e: unknown) => e)
    if (outcome instanceof CliError) assert.match(outcome.message, /--request-id eight/, 'the client is told how to learn the outcome')
    const back = await startHost({ name: 'killed', dataDir: k.dataDir, bootstrap: [w] })
    running.push(back)
    const listed = (await getJson(back, `/v1/instances?host=${back.info.peerId}`)).instances
    assert.ok(listed.length === 0 || listed.length === 8, `all or none of the records: ${listed.length}`)
    for (const i of listed) assert.ok(i.state === 'running' || i.state === 'failed', `${i.id} is ${i.state as string}`)
    t.diagnostic(`after the kill: ${listed.map((i: any) => i.state).join(' ') || 'no records'}`)
    const again = await cli(back, alice, ['deploy', 'sleeper', '--count', '8', '--host', 'killed', '--request-id', 'eight'])
    const now = (await getJson(back, `/v1/instances?host=${back.info.peerId}`)).instances
    assert.equal(now.length, 8, 'none made twice')
    assert.deepEqual(again.instances.map((i: any) => i.id).sort(), now.map((i: any) => i.id).sort())
    if (listed.length === 8) assert.deepEqual(listed.map((i: any) => i.id).sort(), now.map((i: any) => i.id).sort())
    for (const i of now) {
      const state = (await cli(back, alice, ['instance', 'show', i.id])).state
      assert.ok(state === 'running' || state === 'failed', `${i.id as string} is ${state as string}`)
    }

    // A destroy cut by kill -9 is finished on restart, and the instance is shown nowhere after.
    await cli(back, alice, ['template', 'import', join(dir, 'stubborn.yaml')])
    const stubborn = (await cli(back, alice, ['deploy', 'stubborn', '--host', 'killed'])).instances[0]
    await eventually(async () => (await getJson(w, `/v1/search?from=dht&q=${stubborn.id}`)).results.length > 0 || undefined, 15_000, 'its advert to reach the DHT')
    const destroying = cli(back, alice, ['instance', 'destroy', stubborn.id]).catch(() => undefined)
    // Killed once the destroy is under way (its marker written), while the instance holds out against SIGTERM.
    await eventually(async () => existsSync(join(k.dataDir, 'instances', stubborn.id, 'destroying')) || undefined, 30_000, 'the destroy to begin', 50)
    await stopHost(back, 'SIGKILL')
    await destroying
    const third = await startHost({ name: 'killed', dataDir: k.dataDir, bootstrap: [w] })
    running.push(third)
    assert.equal((await getJson(third, `/v1/instances?host=${third.info.peerId}`)).instances.some((i: any) => i.id === stubborn.id), false, 'its host finished the destroy')
    await eventually(async () => (await getJson(w, `/v1/search?from=dht&q=${stubborn.id}`)).results.length === 0 || undefined, 20_000, 'the DHT to forget it')
    await assert.rejects(cli(w, alice, ['instance', 'show', stubborn.id]), /INSTANCE_NOT_FOUND/)

    // An ordinary destroy: gone from the cache and the DHT at once.
    const one = now[0]
    await eventually(async () => (await getJson(w, `/v1/search?from=dht&q=${one.id as string}`)).results.length > 0 || undefined, 15_000, 'its advert to reach the DHT')
    await cli(w, alice, ['instance', 'destroy', one.id])
    await eventually(async () => (await getJson(w, `/v1/search?from=dht&q=${one.id as string}`)).results.length === 0 || undefined, 10_000, 'the DHT to forget a destroyed instance')
    await eventually(async () => await publicViewOf(w, one.id) === undefined || undefined, 5000, 'W to forget it')

    // A signed request replayed after its host restarted is refused.
    const two = (await cli(third, alice, ['deploy', 'sleeper', '--host', 'killed'])).instances[0]
    const header = encodeAuthHeader(signAction(aliceKey, { action: 'stop', target: two.id, params: {}, host: third.info.peerId }))
    const send = async (h: TestHost): Promise<Response> => await fetch(`${h.api}/v1/instances/${two.id as string}/stop`, { method: 'POST', headers: { 'x-xenos-auth': header } })
    assert.equal((await send(third)).status, 200)
    await stopHost(third, 'SIGKILL')
    const fourth = await startHost({ name: 'killed', dataDir: k.dataDir, bootstrap: [w] })
    running.push(fourth)
    const replay = await send(fourth)
    assert.equal(replay.status, 401)
    assert.match(((await replay.json()) as any).error.message, /already used/)
    for (const i of [...now.slice(1), two]) await cli(fourth, alice, ['instance', 'destroy', i.id])
  })
})
