/**
 * Time to the first served request: a cold boot of the `counter` VM against resuming it from a
 * suspended state (XenoServer's resume-from-snapshot fast deployment). Both are timed from the
 * API call to the first HTTP answer, on one real xenosd; for resume also to the moment the call
 * returns, with the VM running again. Writes bench/results/vm-boot-latest.json.
 *
 *   npm run bench:boot
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { cli, httpGet, ROOT, startHost, stopHost, tempDir } from '../test/helpers/cluster.ts'
import { ApiClient, loadOrCreateUserKey } from '../src/cli/index.ts'
import { summary } from './stats.ts'

const RUNS = 5

async function firstAnswer (url: string, since: number, timeoutMs = 180_000): Promise<number> {
  while (performance.now() - since < timeoutMs) {
    const text = await httpGet(url, 500)
    if (text !== undefined && /^\d+$/.test(text.trim())) return performance.now() - since
    await new Promise(resolve => setTimeout(resolve, 5))
  }
  throw new Error(`${url} did not answer`)
}

const host = await startHost({ name: 'bench-boot', extraArgs: ['--cpu', '4', '--memory', '2048'] })
const user = join(await tempDir('bench-keys'), 'user.pem')
const cold: number[] = []
const resume: number[] = []
const resumeRunning: number[] = []
try {
  const template = await cli(host, user, ['template', 'build', join(ROOT, 'examples/counter')])
  // Timed through the API directly, so the CLI's own start-up is not counted.
  const api = new ApiClient({ api: host.api, key: (await loadOrCreateUserKey(user)).key })
  const act = async (id: string, action: string): Promise<unknown> => await api.signed('POST', `/v1/instances/${id}/${action}`, action, id, {})
  for (let i = 0; i < RUNS; i++) {
    const params = { hosts: null, count: 1, spec: { name: null } }
    let t0 = performance.now()
    const inst = (await api.deploy(template.id, params)).instances[0]!
    const url = `${inst.endpoints[0]!.url}/count`
    cold.push(await firstAnswer(url, t0))
    await act(inst.id, 'suspend')
    t0 = performance.now()
    await act(inst.id, 'resume')
    resumeRunning.push(performance.now() - t0)
    resume.push(await firstAnswer(url, t0))
    await act(inst.id, 'destroy')
  }
} finally {
  await stopHost(host)
}
const result = { benchmark: 'vm-boot', date: new Date().toISOString(), runs: RUNS, coldBootMs: summary(cold), resumeMs: summary(resume), resumeRunningMs: summary(resumeRunning) }
await writeFile(join(ROOT, 'bench/results/vm-boot-latest.json'), JSON.stringify(result, null, 2) + '\n')
console.log('| path | first served request p50 / max (ms) |')
console.log('|---|---|')
console.log(`| cold boot | ${result.coldBootMs.p50} / ${result.coldBootMs.max} |`)
console.log(`| resume from suspended state | ${result.resumeMs.p50} / ${result.resumeMs.max} |`)
console.log(`| … of which until the resume call returns (VM running again) | ${result.resumeRunningMs.p50} / ${result.resumeRunningMs.max} |`)
