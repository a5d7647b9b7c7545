import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import pino from 'pino'
import { generateOwnerKey, instanceIdOfPlace, sha256Hex, signDeploymentGrant, XenosError, type PlaceRequest, type SupervisedRequest, type TaskView } from '../../src/core/index.ts'
import { resolveDescription } from '../../src/deploy/index.ts'
import { ComponentOps } from '../../src/node/deployments/components.ts'
import { workloadAt } from '../../src/node/deployments/places.ts'
import { TaskFailed, TaskRuns } from '../../src/node/deployments/task-runs.ts'
import { openStore } from '../../src/store/index.ts'
import { hostKey } from '../helpers/adverts.ts'

/** A task whose host answers, run after run, with the states `outcomes` gives (one per run). */
async function taskOf (policy: string, attempts: number, outcomes: Array<'succeeded' | 'failed' | 'host gone'>): Promise<{ ops: ComponentOps, run: () => Promise<void>, placed: PlaceRequest[], released: string[], owner: string, hosts: string[] }> {
  const text = `name: job\ncomponents:\n  step:\n    template: t\n    task: { outputs: out }\n    onFailure: ${policy}\n    restarts: { attempts: ${attempts}, backoff: 10ms }\n    liveness: { every: 100ms, failAfter: 1 }\n    placement: { tags: { pool: a } }\n`
  const owner = generateOwnerKey()
  const [self, other] = await Promise.all([hostKey(), hostKey()])
  const hosts = [self.id, other.id]
  const grant = signDeploymentGrant(owner, { name: 'job', description: sha256Hex(text), supervisors: [self.id] })
  const store = openStore(':memory:')
  store.deployments.insert({ owner: owner.id, name: 'job', text, grant, earlier: [], state: 'applying', components: {}, error: null, acting: self.id, term: 0, createdAt: 1, updatedAt: 1 })
  const gone = new Set<string>()
  const placed: PlaceRequest[] = []
  const released: string[] = []
  const view = (id: string, state: TaskView['state']): TaskView => ({
    id, host: self.id, owner: owner.id, template: `sha256:${'c'.repeat(64)}`, inputs: [], outputs: `data://${owner.id}/out`, keep: false, state, instanceState: null,
    exitCode: state === 'failed' ? 1 : 0, error: state === 'failed' ? 'it ended with code 1' : null, files: state === 'succeeded' ? [{ uri: `data://${owner.id}/out/r.txt`, owner: owner.id, path: 'out/r.txt', size: 1, sha256: 'a'.repeat(64), host: self.id, updatedAt: 1 }] : [], refused: [], createdAt: 1, collectingAt: null, endedAt: null,
  })
  // The hosts the task is placed on, this one and another: the neighbour of the unit under test.
  const places = {
    placeTask: async (req: PlaceRequest) => { placed.push(req); return view(instanceIdOfPlace(req.place), 'running') },
    taskStatus: async (req: SupervisedRequest) => {
      const outcome = outcomes[placed.length - 1] ?? 'failed'
      if (outcome !== 'host gone') return view(req.id, outcome)
      gone.add(placed.at(-1)?.place.host ?? '')
      throw new XenosError('PEER_UNREACHABLE', 'its host does not answer')
    },
    act: async (req: SupervisedRequest) => { if (req.action === 'release') released.push(req.id) },
  }
  const remote: Record<string, (req: any) => Promise<unknown>> = { 'task.place': places.placeTask, 'task.status': places.taskStatus, 'instance.supervised': places.act }
  const hostAdvert = (host: string): unknown => ({ host, kind: 'host', body: { name: host, drivers: ['qemu'], tags: { pool: 'a' }, free: { cpu: 4, memory: 4096 } } })
  const overlay = {
    peerId: self.id,
    search: () => hosts.filter(h => !gone.has(h)).map(hostAdvert),
    sign: async (b: Uint8Array) => Buffer.from(await self.key.sign(b)).toString('base64url'),
    learnHost: async () => true,
    rpc: { call: async (_host: string, method: string, req: unknown) => await remote[method]?.(req) },
  }
  const liveness = { hostAlive: (h: string) => !gone.has(h), healthy: () => {} }
  const ops = new ComponentOps({ overlay: overlay as never, store, places: places as never, deployer: {} as never, liveness: liveness, log: pino({ level: 'silent' }) })
  const catalog = { resolve: async () => ({ id: `sha256:${'c'.repeat(64)}`, name: 't', driver: 'qemu', resources: { cpu: 1, memory: 96 } }) }
  const runs = new TaskRuns({ ops, catalog: catalog as never, liveness, log: pino({ level: 'silent' }) })
  const description = resolveDescription(text, 'job.yaml')
  const w = workloadAt(description, 'step')
  assert.ok(w !== undefined)
  return { ops, placed, released, owner: owner.id, hosts, run: async () => { await runs.run(ops.get(owner.id, 'job'), description, w, () => {}) } }
}

/** How a supervisor runs a task component to its end, and what it does when the task fails. */
describe('task components', () => {
  it('run again, the next generation, until one succeeds: each failed run is ended first, and the outputs are written down', async () => {
    const t = await taskOf('restart', 2, ['failed', 'failed', 'succeeded'])
    await t.run()
    const c = t.ops.get(t.owner, 'job').components.step
    assert.equal(c?.state, 'completed')
    assert.deepEqual(c?.outputs, ['out/r.txt'])
    assert.equal(c?.instances[0]?.generation, 2, 'three runs, three generations')
    assert.equal(t.released.length, 2, 'each failed run ended before the next')
    assert.ok(c?.events?.some(e => /running it again \(2 of 2\)/.test(e.event)))
  })

  it('fail for good once its attempts are spent, with an abnormal termination', async () => {
    const t = await taskOf('restart', 1, ['failed', 'failed'])
    await assert.rejects(t.run(), (err: unknown) => err instanceof TaskFailed && err.path === 'step')
    const c = t.ops.get(t.owner, 'job').components.step
    assert.deepEqual([c?.state, c?.termination?.kind, t.placed.length], ['failed', 'abnormal', 2])
  })

  it('are let be when their policy says so, and run elsewhere when their host is gone', async () => {
    const ignored = await taskOf('ignore', 3, ['failed'])
    await ignored.run()
    assert.deepEqual([ignored.ops.get(ignored.owner, 'job').components.step?.state, ignored.placed.length], ['failed', 1], 'no second run')

    const moved = await taskOf('restart', 1, ['host gone', 'succeeded'])
    await moved.run()
    assert.equal(new Set(moved.placed.map(p => p.place.host)).size, 2, 'the second run on the host that lives')
    assert.ok(moved.ops.get(moved.owner, 'job').components.step?.events?.some(e => /is gone/.test(e.event)))
  })
})
