import type { Command } from 'commander'
import { setTimeout as sleep } from 'node:timers/promises'
import { formatDataUri, XenosError, type TaskView } from '../core/index.ts'
import type { ApiClient } from './client.ts'
import { client, out, resolveHost } from './command.ts'
import { refOf, stagedInputs } from './data.ts'
import { RolloutView } from './rollout-view.ts'
import { ago, bytes, shortId, table } from './table.ts'

/** How often a running task's record is asked for. */
const TASK_POLL_MS = 1000

/** Task `id`, asked of the host that runs or ran it (found anew each time: a task moves with its instance). */
async function taskOf (api: ApiClient, id: string): Promise<TaskView> {
  const { host } = await api.get<{ host: string }>(`/v1/tasks/${encodeURIComponent(id)}/host`)
  return await api.signed<TaskView>('GET', `/v1/tasks/${encodeURIComponent(id)}`, 'task.get', id, {}, undefined, host)
}

function ended (t: TaskView): boolean {
  return t.state === 'succeeded' || t.state === 'failed'
}

/** What a task is doing, in a few words: its state, and its VM's while it runs. */
function doing (t: TaskView): string {
  if (t.state !== 'running') return t.state
  return t.instanceState === 'running' ? 'running' : `running (VM ${t.instanceState ?? 'gone'})`
}

/** Waits for a task to end, showing on stderr what it does and for how long (redrawn in place on a terminal). */
async function untilEnded (api: ApiClient, id: string): Promise<TaskView> {
  const tty = process.stderr.isTTY
  let said = ''
  for (;;) {
    const t = await taskOf(api, id)
    const line = `task ${t.id} on ${shortId(t.host)}: ${doing(t)}`
    if (tty) process.stderr.write(`\r${line} ${((Date.now() - t.createdAt) / 1000).toFixed(0)} s\u001b[K`)
    else if (line !== said) process.stderr.write(`${line}\n`)
    said = line
    if (ended(t)) {
      if (tty) process.stderr.write('\n')
      return t
    }
    await sleep(TASK_POLL_MS)
  }
}

function taskReport (t: TaskView): string {
  const seconds = (from: number, to: number): string => `${((to - from) / 1000).toFixed(1)} s`
  const took = t.endedAt === null || t.collectingAt === null ? '' : ` in ${seconds(t.createdAt, t.endedAt)} (VM ${seconds(t.createdAt, t.collectingAt)}, storing its outputs ${seconds(t.collectingAt, t.endedAt)})`
  return [
    `task ${t.id} ${t.state}${took}${t.exitCode === null ? '' : ` (exit code ${t.exitCode})`}${t.error === null ? '' : `: ${t.error}`}`,
    t.files.length === 0 ? `no outputs under ${t.outputs}/` : table(['OUTPUT', 'SIZE', 'SHA256'], t.files.map(f => [f.uri, bytes(f.size), f.sha256.slice(0, 16)])),
    ...t.refused.map(r => `refused ${r.path}: ${r.reason}`),
    ...(t.keep && t.instanceState !== null ? [`its VM ${t.id} is kept: "xenos logs ${t.id}", then "xenos destroy ${t.id}"`] : []),
  ].join('\n')
}

/**
 * Tasks: `xenos run` and the records of tasks. A task's host drives it to its end (outputs
 * stored, VM destroyed) whether or not the CLI that started it is still there.
 */
export function registerTaskCommands (program: Command): void {
  program.command('run <template>').description('Run a task: a VM of TEMPLATE with your files (or directories) staged read-only at /in, until it ends; the files it leaves at /out go to your repository under --out, and the VM is destroyed (unless --keep). Interrupting this command does not stop the task: see "xenos task show"')
    .option('--in <name>', 'a file or directory of yours (data://me/PATH or PATH), staged at /in/NAME; repeatable', (v: string, p: string[] | undefined) => [...p ?? [], v])
    .requiredOption('--out <dir>', 'where its outputs go in your repository (data://me/DIR or DIR)')
    .option('--out-size <MiB>', 'size of the disk it writes its outputs on', Number, 1024)
    .option('--host <host>', 'host to run it on (default: the one with most room)')
    .option('--keep', 'keep the ended VM, for inspection')
    .action(async (ref: string, o: { in?: string[], out: string, outSize: number, host?: string, keep?: boolean }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const dest = refOf(o.out, api.owner)
      if (dest.owner !== api.owner) throw new XenosError('FORBIDDEN', `a task's outputs go to your own repository (data://me/…), not to ${formatDataUri(dest)}`)
      if (!Number.isInteger(o.outSize) || o.outSize < 1 || o.outSize > 2 ** 20) throw new XenosError('INVALID_ARGUMENT', '--out-size must be a whole number of MiB from 1 to 1048576')
      const t = await api.template<{ id: string, name: string, version: string }>(ref)
      const request = {
        hosts: o.host === undefined ? null : [await resolveHost(api, o.host)],
        count: 1,
        spec: {
          name: null,
          outputBytes: o.outSize * 2 ** 20,
          task: { outputs: dest.path, keep: o.keep === true },
          ...(o.in === undefined ? {} : { inputs: await stagedInputs(api, o.in) }),
        },
      }
      process.stderr.write(`starting ${t.name}:${t.version}${o.in === undefined ? '' : ` with ${o.in.length} input(s)`}…\n`)
      const view = new RolloutView(new Map())
      const deployed = await api.deploy(t.id, request, { onProgress: parts => { view.update(parts) } }).finally(() => { view.stop() })
      const started = deployed.instances[0]
      if (started === undefined) throw new XenosError('NO_HOST_AVAILABLE', `the task did not start: ${deployed.failures.map(f => f.message).join('; ')}`)
      const task = await untilEnded(api, started.id)
      out(flags, task, () => taskReport(task))
      if (task.state !== 'succeeded') process.exitCode = 1
    })

  const tasks = program.command('task').description('Your tasks: how they went and the outputs they left')

  tasks.command('ls').description('Your tasks run on the host the CLI talks to, newest first')
    .option('--limit <n>', 'at most this many', Number, 100)
    .action(async (o: { limit: number }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const { tasks: list } = await api.signed<{ tasks: TaskView[] }>('GET', `/v1/tasks?limit=${o.limit}`, 'task.list', 'tasks', {})
      out(flags, list, () => list.length === 0 ? 'no tasks on this host' : table(['TASK', 'STATE', 'EXIT', 'STARTED', 'OUTPUTS', 'TO'],
        list.map(t => [t.id, doing(t), t.exitCode === null ? '' : String(t.exitCode), ago(t.createdAt), String(t.files.length), t.outputs])))
    })

  tasks.command('show <id>').description('A task (asked of the host that runs or ran it): its state, exit code and outputs')
    .option('--wait', 'wait until it has ended')
    .action(async (id: string, o: { wait?: boolean }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const t = o.wait === true ? await untilEnded(api, id) : await taskOf(api, id)
      out(flags, t, () => ended(t) ? taskReport(t) : `task ${t.id} on ${shortId(t.host)}: ${doing(t)} for ${((Date.now() - t.createdAt) / 1000).toFixed(0)} s; outputs will go to ${t.outputs}/`)
      if (ended(t) && t.state !== 'succeeded') process.exitCode = 1
    })
}
