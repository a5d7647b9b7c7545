/**
 * Deployments from descriptions, against doing the same by hand:
 * - applying a master and 8 workers (`xenos apply`, workers started once the master is healthy,
 *   each given its address) against the 9 `xenos deploy --wait` calls a user would make
 *   (the master, then each worker linked to it), with 4 and 8 hosts;
 * - the host running the master killed (SIGKILL): time until the master serves again on another
 *   host, and until every worker reaches the new master through its unchanged link.
 * Process templates (busybox httpd), so the measure is Xenos's own, not a VM's boot; hosts'
 * adverts live 6 s (as in the tests), liveness is checked every second, two misses make a death.
 * Writes bench/results/deployments-latest.json.
 *
 *   node --disable-warning=ExperimentalWarning bench/deployments.ts
 *   XENOS_BENCH_RUNS=1 node --disable-warning=ExperimentalWarning bench/deployments.ts
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { apiOf, cli, eventually, getJson, httpGet, ROOT, startHost, stopHost, stopHosts, tempDir, type TestHost } from '../test/helpers/cluster.ts'
import { round, summary, timed } from './stats.ts'

const RUNS = Number(process.env.XENOS_BENCH_RUNS ?? 3)
const WORKERS = 8

function webTemplate (name: string, setup: string): string {
  return `name: ${name}\nversion: "1"\ndriver: process\ncommand: "mkdir -p www; ${setup} exec busybox httpd -f -p \${XENOS_HOST}:\${XENOS_PORT_HTTP} -h www"\nports: [{ name: http, protocol: http }]\nresources: { cpu: 0.01, memory: 8 }\n`
}
const MASTER = webTemplate('bmaster', 'echo $XENOS_INSTANCE_ID > www/index.html;')
const WORKER = webTemplate('bworker', '(while :; do busybox wget -q -O www/seen.tmp http://$MASTER/ && mv www/seen.tmp www/seen; sleep 0.2; done) &')
const description = (name: string): string => [
  `name: ${name}`,
  'components:',
  '  master:',
  '    template: bmaster',
  '    onFailure: replace',
  '    liveness: { every: 1s, failAfter: 2 }',
  '    placement: { tags: { tier: master } }',
  '  workers:',
  '    template: bworker',
  `    count: ${WORKERS}`,
  '    after: [master]',
  '    env: { MASTER: "${master.endpoints.http}" }',
  '',
].join('\n')

const rows: unknown[] = []
for (const n of [4, 8]) {
  const dir = await tempDir(`bench-deployments-${n}`)
  const user = join(dir, 'user.pem')
  const a = await startHost({ name: 'bench-d-a', extraArgs: ['--cpu', '2', '--memory', '2048'] })
  const hosts: TestHost[] = [a]
  try {
    hosts.push(...await Promise.all(Array.from({ length: n - 1 }, async (_, i) => await startHost({
      name: `bench-d-${i + 1}`, bootstrap: [a], extraArgs: ['--cpu', '2', '--memory', '2048', ...i < 2 ? ['--tag', 'tier=master'] : []],
    }))))
    for (const [file, text] of [['master.yaml', MASTER], ['worker.yaml', WORKER]] as const) {
      await writeFile(join(dir, file), text)
      await cli(a, user, ['template', 'import', join(dir, file)])
    }
    await eventually(async () => (await getJson(a, '/v1/peers')).hosts.length >= n || undefined, 30_000, 'every host to be advertised')
    const api = await apiOf(a, user)
    const apply: number[] = []
    const byHand: number[] = []
    const backMs: number[] = []
    const reachedMs: number[] = []
    for (let run = 0; run < RUNS; run++) {
      // 9 deploys by hand: the master, then each worker linked to it.
      byHand.push(await timed(async () => {
        await cli(a, user, ['deploy', 'bmaster', '--name', `m${run}`, '--wait'])
        for (let w = 0; w < WORKERS; w++) await cli(a, user, ['deploy', 'bworker', '--wait', '--link', `master=m${run}`, '--env', 'MASTER=${XENOS_LINK_MASTER}'])
      }))
      for (const h of hosts) {
        for (const v of (await getJson(h, '/v1/instances')).instances as Array<{ id: string, host: string }>) if (v.host === h.info.peerId) await cli(h, user, ['instance', 'destroy', v.id]).catch(() => {})
      }
      const file = join(dir, `run${run}.yaml`)
      await writeFile(file, description(`b${run}`))
      let d: any
      apply.push(await timed(async () => { d = await cli(a, user, ['apply', file]) }))
      const master = d.components.find((c: any) => c.path === 'master').instances[0]
      const dead = hosts.find(h => h.info.peerId === master.host) as TestHost
      const t0 = Date.now()
      await stopHost(dead, 'SIGKILL')
      const replaced = await eventually(async () => {
        const v: any = await api.signed('GET', `/v1/deployments/b${run}`, 'deployment.get', `b${run}`, {})
        const m = v.components.find((c: any) => c.path === 'master')
        return m.state === 'running' && m.instances[0].id !== master.id ? m.instances[0] : undefined
      }, 120_000, 'the master to be made anew', 50)
      backMs.push(Date.now() - t0)
      // Workers that ran on the killed host are made anew too: the ones running now are asked.
      const workers = await eventually(async () => {
        const v: any = await api.signed('GET', `/v1/deployments/b${run}`, 'deployment.get', `b${run}`, {})
        const settled = v.components.every((c: any) => c.state === 'running' && c.instances.every((i: any) => i.host !== dead.info.peerId))
        return settled ? v.components.find((c: any) => c.path === 'workers').instances : undefined
      }, 120_000, 'every component to run again', 50)
      const workerUrls = await Promise.all(workers.map(async (i: any) => (await api.signed<any>('GET', `/v1/instances/${i.id as string}`, 'get', i.id, {}, undefined, i.host)).endpoints[0].url as string))
      await Promise.all(workerUrls.map(async url => await eventually(async () => (await httpGet(`${url}/seen`))?.trim() === replaced.id || undefined, 60_000, 'a worker to reach the new master', 50)))
      reachedMs.push(Date.now() - t0)
      console.error(`${n} hosts, run ${run + 1}: apply ${round(apply.at(-1) ?? 0, 2)} s, by hand ${round(byHand.at(-1) ?? 0, 2)} s, master back ${backMs.at(-1)} ms, workers reach it ${reachedMs.at(-1)} ms`)
      await cli(a, user, ['terminate', `b${run}`])
      // The killed host comes back for the next run.
      hosts[hosts.indexOf(dead)] = await startHost({ name: dead.name, dataDir: dead.dataDir, bootstrap: [a], extraArgs: ['--cpu', '2', '--memory', '2048', '--tag', 'tier=master'] })
      await eventually(async () => (await getJson(a, '/v1/peers')).hosts.length >= n || undefined, 30_000, 'the host to be back')
    }
    rows.push({
      hosts: n,
      applyS: summary(apply.map(s => round(s, 2))),
      byHandS: summary(byHand.map(s => round(s, 2))),
      ratio: round(summary(byHand).p50 / summary(apply).p50, 2),
      masterBackMs: summary(backMs),
      workersReachMs: summary(reachedMs),
    })
  } finally {
    await stopHosts(hosts)
  }
}
const result = { benchmark: 'deployments', date: new Date().toISOString(), runs: RUNS, workers: WORKERS, advertTtlS: 6, rows }
await writeFile(join(ROOT, 'bench/results/deployments-latest.json'), JSON.stringify(result, null, 2) + '\n')
console.log('| hosts | `xenos apply` 1 + 8, p50 / max (s) | 9 × `xenos deploy --wait`, p50 / max (s) | by hand / apply | master\'s host killed → master serving elsewhere, p50 / max (ms) | → every worker reaches it, p50 / max (ms) |')
console.log('|---|---|---|---|---|---|')
for (const r of rows as any[]) {
  console.log(`| ${r.hosts} | ${r.applyS.p50} / ${r.applyS.max} | ${r.byHandS.p50} / ${r.byHandS.max} | ${r.ratio}× | ${r.masterBackMs.p50} / ${r.masterBackMs.max} | ${r.workersReachMs.p50} / ${r.workersReachMs.max} |`)
}
