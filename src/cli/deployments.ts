import type { Command } from 'commander'
import { readFile } from 'node:fs/promises'
import { XenosError, type DeploymentView, type Supervision } from '../core/index.ts'
import { resolveDescription } from '../deploy/index.ts'
import type { ApiClient } from './client.ts'
import { client, hostNames, out, type HostRow } from './command.ts'
import { ago, hostLabel, table } from './table.ts'

/** A deployment's components, a row each: path, state, where its instances run, what happened last. */
function deploymentTable (d: DeploymentView, names: ReadonlyMap<string, string>): string {
  const why = d.termination === null ? d.error : `${d.termination.kind}: ${d.termination.cause}`
  const head = `${d.name}: ${d.state}${why === null ? '' : ` (${why})`}, supervised by ${hostLabel(names, d.supervisor)}`
  return [head, table(['COMPONENT', 'STATE', 'INSTANCES', 'LAST EVENT', 'SINCE'],
    d.components.map(c => [c.path, c.termination === null ? c.state : `${c.state} (${c.termination.kind})`, c.instances.map(i => `${i.id}@${hostLabel(names, i.host)}`).join(' ') || '-', c.event ?? '-', ago(c.updatedAt)]))].join('\n')
}

/** Where the latest checkpoint of each instance is kept, and how old it is. */
function checkpointsTable (d: DeploymentView, names: ReadonlyMap<string, string>): string {
  const rows = d.components.flatMap(c => c.checkpoints.map(cp => [c.path, cp.instance, hostLabel(names, cp.host), cp.snapshot, ago(cp.at)]))
  return rows.length === 0 ? '' : `\n\ncheckpoints:\n${table(['COMPONENT', 'OF INSTANCE', 'KEPT ON', 'SNAPSHOT', 'TAKEN'], rows)}`
}

/** How many of each component's latest events `deployment show` prints. */
const EVENTS_SHOWN = 5

/** The latest events of every component, newest last (Nomad's "Recent Events"). */
function recentEvents (d: DeploymentView): string {
  const rows = d.components.flatMap(c => c.events.slice(-EVENTS_SHOWN).map(e => [c.path, ago(e.at), e.event]))
  return rows.length === 0 ? '' : `\n\nrecent events:\n${table(['COMPONENT', 'WHEN', 'EVENT'], rows)}`
}

/** Where the user's deployment `name` is supervised, found through the host the CLI talks to (which relays requests signed for it). */
async function supervisionOf (api: ApiClient, name: string): Promise<Supervision> {
  return await api.get<Supervision>(`/v1/deployments/${encodeURIComponent(name)}/supervisors?owner=${encodeURIComponent(api.owner)}`)
}

/** The host that supervises the user's deployment `name` now. */
async function supervisorOf (api: ApiClient, name: string): Promise<string> {
  return (await supervisionOf(api, name)).acting
}

/** The supervisors an apply of deployment `name` names: those it has, if it runs (an update keeps them), else this host and the first `count - 1` others. */
async function supervisorsFor (api: ApiClient, name: string, count: number): Promise<{ supervisors: string[], update: boolean }> {
  const held = await supervisionOf(api, name).catch((err: unknown) => {
    if (err instanceof XenosError && err.code === 'DEPLOYMENT_NOT_FOUND') return undefined
    throw err
  })
  if (held !== undefined && held.state !== 'terminated') return { supervisors: held.supervisors, update: true }
  const self = await api.hostId()
  const { hosts } = await api.get<{ hosts: HostRow[] }>('/v1/peers')
  return { supervisors: [self, ...hosts.map(h => h.id).filter(h => h !== self).slice(0, count - 1)], update: false }
}

/** Shows a deployment's progress on stderr: a line each time a component changes. */
function progressPrinter (): (v: DeploymentView) => void {
  const said = new Map<string, string>()
  return v => {
    for (const c of v.components) {
      const line = `${c.path}: ${c.state}${c.event === null ? '' : ` — ${c.event}`}`
      if (said.get(c.path) !== line) process.stderr.write(`${line}\n`)
      said.set(c.path, line)
    }
  }
}

/** `xenos apply`, `xenos deployment …` and `xenos terminate`: whole deployments from descriptions (docs/descriptions.md). */
export function registerDeploymentCommands (program: Command): void {
  program.command('apply <file>').description('Run a description of a whole deployment (docs/descriptions.md) on this host, which supervises it; applied again, changed, it updates the deployment in place')
    .option('--supervisors <n>', 'hosts that hold the deployment and may act for you: this one, and the first others that take over if it dies (1 to 5; an update keeps those it has)', Number, 3)
    .action(async (file: string, o: { supervisors: number }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const text = await readFile(file, 'utf8')
      // Resolved here first: a mistake is shown with its line before anything is sent.
      const { name } = resolveDescription(text, file)
      if (!Number.isInteger(o.supervisors) || o.supervisors < 1 || o.supervisors > 5) throw new XenosError('INVALID_ARGUMENT', '--supervisors must be a whole number from 1 to 5')
      const { supervisors, update } = await supervisorsFor(api, name, o.supervisors)
      const names = await hostNames(api)
      process.stderr.write(update
        ? `updating ${name}, supervised by ${supervisors.map(h => hostLabel(names, h)).join(', ')}: what changed is made anew, one instance at a time…\n`
        : `applying ${name}, supervised by this host${supervisors.length > 1 ? ` (and ${supervisors.length - 1} more, should it die)` : ''}…\n`)
      const d = await api.apply(name, text, supervisors, progressPrinter())
      out(flags, d, () => deploymentTable(d, names))
      if (d.state !== 'running') process.exitCode = 1
    })

  const deployment = program.command('deployment').description('Deployments from descriptions: list, show')
  deployment.command('list').description('Your deployments this host supervises')
    .action(async (_o: unknown, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const { deployments } = await api.signed<{ deployments: DeploymentView[] }>('GET', '/v1/deployments', 'deployments', await api.hostId(), {})
      out(flags, deployments, () => deployments.length === 0 ? 'no deployments' : table(['NAME', 'STATE', 'COMPONENTS', 'UPDATED'], deployments.map(d => [d.name, d.state, String(d.components.length), ago(d.updatedAt)])))
    })
  deployment.command('show <name>').description('A deployment: each component with its state, instances and last event')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const d = await api.signed<DeploymentView>('GET', `/v1/deployments/${encodeURIComponent(name)}`, 'deployment.get', name, {}, undefined, await supervisorOf(api, name))
      const names = await hostNames(api)
      out(flags, d, () => deploymentTable(d, names) + checkpointsTable(d, names) + recentEvents(d))
    })

  program.command('terminate <name>').description('End every instance of a deployment, in the reverse of the order they started in')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const show = progressPrinter()
      const d = await api.watched<DeploymentView>(`/v1/deployments/${encodeURIComponent(name)}/terminate`, 'deployment.terminate', name, {}, undefined, p => { show(p as DeploymentView) }, await supervisorOf(api, name))
      const names = await hostNames(api)
      out(flags, d, () => deploymentTable(d, names))
    })
}
