/**
 * Task turnaround: a user uploads an input to the repository, runs a task on it (`xenos run`:
 * stage-in, boot, run, stage-out, VM destroyed) and downloads the output, against running the
 * same command natively on the host on local files. Two tasks, as Goiri et al. measure a file
 * copy and mencoder: a copy-heavy one (`cp` of a 256 MiB file) and a CPU-bound one (`gzip -9` of
 * 32 MiB of text). Each runs on the host that holds its input (`local`) and on another host that
 * fetches it over the overlay (`remote`). Both sides run the same busybox binary (the guests'),
 * so the ratio is the cost of the VM (TCG here when KVM is missing) and of moving the data.
 * Writes bench/results/tasks-latest.json.
 *
 *   npm run bench:tasks                 # 3 runs each
 *   XENOS_BENCH_RUNS=1 npm run bench:tasks
 */
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { DEFAULT_CACHE_DIR } from '../src/cli/build.ts'
import { unpackedPackage } from '../src/images/guest/debian.ts'
import { cli, ROOT, startHost, stopHosts, tempDir } from '../test/helpers/cluster.ts'
import { round, summary, timed } from './stats.ts'

const RUNS = Number(process.env.XENOS_BENCH_RUNS ?? 3)
const HOST_ARGS = ['--cpu', '2', '--memory', '2048']

interface TaskKind {
  name: string
  /** What the task does, with its input at IN and its output at OUT. */
  command: string
  input: (file: string) => Promise<void>
  outMiB: number
}

const KINDS: TaskKind[] = [
  {
    name: 'copy',
    command: 'cp IN OUT',
    input: async file => { await writeFile(file, randomBytes(256 * 2 ** 20)) },
    outMiB: 400,
  },
  {
    name: 'gzip',
    command: 'gzip -9 -c IN > OUT',
    // Text that compresses, so gzip works for its output rather than giving up on noise.
    input: async file => {
      const words = Array.from({ length: 4096 }, () => randomBytes(3 + Math.floor(Math.random() * 6)).toString('base64url'))
      const lines: string[] = []
      let size = 0
      while (size < 32 * 2 ** 20) {
        const line = Array.from({ length: 12 }, () => words[Math.floor(Math.random() * words.length)]).join(' ') + '\n'
        lines.push(line)
        size += line.length
      }
      await writeFile(file, lines.join(''))
    },
    outMiB: 64,
  },
]

function templateOf (kind: TaskKind): string {
  return [
    `name: task-${kind.name}`,
    'version: "1"',
    'resources: {cpu: 1, memory: 256}',
    `command: ${JSON.stringify(kind.command.replace('IN', '/in/input').replace('OUT', '/out/output'))}`,
    '',
  ].join('\n')
}

const busybox = join(await unpackedPackage('busybox-static', DEFAULT_CACHE_DIR), 'bin', 'busybox')
const dir = await tempDir('bench-tasks')
const user = join(dir, 'user.pem')
const a = await startHost({ name: 'bench-task-a', extraArgs: HOST_ARGS })
const b = await startHost({ name: 'bench-task-b', bootstrap: [a], extraArgs: HOST_ARGS })
const rows: Array<Record<string, unknown>> = []
try {
  for (const kind of KINDS) {
    const input = join(dir, `${kind.name}.in`)
    await kind.input(input)
    const inputBytes = (await stat(input)).size
    await mkdir(join(dir, kind.name), { recursive: true })
    await writeFile(join(dir, kind.name, 'template.yaml'), templateOf(kind))
    await cli(a, user, ['template', 'build', join(dir, kind.name)])
    const native: number[] = []
    for (let i = 0; i < RUNS; i++) {
      const out = join(dir, `${kind.name}.native`)
      native.push(await timed(async () => { execFileSync(busybox, ['sh', '-c', kind.command.replace('IN', input).replace('OUT', out)]) }))
      await rm(out, { force: true })
    }
    for (const placement of ['local', 'remote'] as const) {
      const runs: Array<{ uploadS: number, runS: number, vmS: number, collectS: number, downloadS: number, totalS: number }> = []
      for (let i = 0; i < RUNS; i++) {
        const name = `bench/${kind.name}-${placement}-${i}`
        const uploadS = await timed(async () => await cli(a, user, ['data', 'put', input, `${name}/input`]))
        let task: { state: string, error: string | null, files: Array<{ uri: string }>, createdAt: number, collectingAt: number, endedAt: number } | undefined
        const runS = await timed(async () => {
          task = await cli(a, user, ['run', `task-${kind.name}`, '--in', `${name}/input`, '--out', `${name}/out`, '--out-size', String(kind.outMiB), '--host', placement === 'local' ? 'bench-task-a' : 'bench-task-b'])
        })
        if (task?.state !== 'succeeded') throw new Error(`the ${kind.name} task failed: ${task?.error ?? ''}`)
        const output = join(dir, `${kind.name}.out`)
        const downloadS = await timed(async () => await cli(a, user, ['data', 'get', task?.files[0]?.uri ?? '', output], false))
        await rm(output, { force: true })
        // On the host: the VM from its creation (inputs staged) to its end, then the outputs stored.
        const vmS = (task.collectingAt - task.createdAt) / 1000
        const collectS = (task.endedAt - task.collectingAt) / 1000
        runs.push({ uploadS: round(uploadS, 2), runS: round(runS, 2), vmS: round(vmS, 2), collectS: round(collectS, 2), downloadS: round(downloadS, 2), totalS: round(uploadS + runS + downloadS, 2) })
        console.error(`${kind.name}, ${placement}, run ${i + 1}: ${JSON.stringify(runs.at(-1))}`)
      }
      const nativeP50 = summary(native).p50
      rows.push({
        task: kind.name,
        placement,
        inputMiB: round(inputBytes / 2 ** 20),
        nativeS: summary(native.map(s => round(s, 2))),
        uploadS: summary(runs.map(r => r.uploadS)),
        runS: summary(runs.map(r => r.runS)),
        vmS: summary(runs.map(r => r.vmS)),
        collectS: summary(runs.map(r => r.collectS)),
        downloadS: summary(runs.map(r => r.downloadS)),
        totalS: summary(runs.map(r => r.totalS)),
        ratio: round(summary(runs.map(r => r.totalS)).p50 / Math.max(nativeP50, 0.01)),
        runs,
      })
    }
  }
} finally {
  await stopHosts([a, b])
}
const accel = process.env.XENOS_ACCEL ?? (execFileSync('sh', ['-c', 'test -w /dev/kvm && echo kvm || echo tcg']).toString().trim())
const result = { benchmark: 'tasks', date: new Date().toISOString(), runs: RUNS, accel, rows }
await writeFile(join(ROOT, 'bench/results/tasks-latest.json'), JSON.stringify(result, null, 2) + '\n')
console.log('| task | input | runs on | native p50 (s) | upload p50 (s) | xenos run p50 (s) | of which VM p50 (s) | of which collect p50 (s) | download p50 (s) | turnaround p50 / max (s) | turnaround / native |')
console.log('|---|---|---|---|---|---|---|---|---|---|---|')
for (const r of rows as any[]) {
  console.log(`| ${r.task} | ${r.inputMiB} MiB | ${r.placement} | ${r.nativeS.p50} | ${r.uploadS.p50} | ${r.runS.p50} | ${r.vmS.p50} | ${r.collectS.p50} | ${r.downloadS.p50} | ${r.totalS.p50} / ${r.totalS.max} | ${r.ratio}× |`)
}
