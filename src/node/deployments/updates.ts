import { XenosError, type DeploymentGrant } from '../../core/index.ts'
import { isRuntime, type Description, type Workload } from '../../deploy/index.ts'
import { waitingComponent, type ComponentRecord, type DeploymentRecord, type EarlierDescription } from '../../store/index.ts'
import { workloadsOf } from './order.ts'

/** The description and grant that instance, orphan or checkpoint `x` of deployment `d` was placed (or taken) under. */
export function placedUnder (d: Pick<DeploymentRecord, 'name' | 'text' | 'grant' | 'earlier'>, x: { grant?: string | undefined }): EarlierDescription {
  if (x.grant === undefined || x.grant === d.grant.sig) return { text: d.text, grant: d.grant }
  const earlier = d.earlier.find(e => e.grant.sig === x.grant)
  if (earlier === undefined) throw new XenosError('INTERNAL', `deployment ${d.name} no longer holds the description one of its instances was placed under`)
  return earlier
}

/**
 * The components of `after` whose instances must be made anew to run as it says: those whose
 * workload differs from `before`'s in what its instances are made of (not in its count, what it
 * waits for, its liveness or what is done when it dies), or whose count crosses one (which
 * names its instances otherwise), and those whose environment holds the host or id of one
 * that is made anew (fixed when an instance is made). A count alone adds or ends instances; an
 * endpoint follows its component by itself (a component referred to has one instance, whose
 * name stays).
 */
export function outdatedBy (before: Description, after: Description): Set<string> {
  const was = new Map(workloadsOf(before).map(({ workload }) => [workload.path, workload]))
  const outdated = new Set<string>()
  for (const { workload } of workloadsOf(after)) {
    const old = was.get(workload.path)
    if (old === undefined) continue
    const renamed = (old.count > 1) !== (workload.count > 1)
    if (renamed || shape(old) !== shape(workload) || [...outdated].some(p => holdsHostOrId(workload, p))) outdated.add(workload.path)
  }
  return outdated
}

/** What makes an instance of a workload what it is: all but what only its supervisor acts on (how many, when, how it is watched and what is done when it dies). */
function shape (w: Workload): string {
  const { count: _count, dependsOn: _dependsOn, onFailure: _onFailure, restarts: _restarts, liveness: _liveness, ...rest } = w
  return JSON.stringify(rest)
}

/** Whether workload `d`'s environment holds the host or the id of component `path`. */
export function holdsHostOrId (d: Workload, path: string): boolean {
  return Object.values(d.env).some(v => isRuntime(v) && v.runtime.some(part => typeof part !== 'string' && part.component === path && part.attribute !== 'endpoint'))
}

/**
 * Deployment `d` updated to run `text` (resolved: `after`) under `grant`: what it has now is
 * written down as placed under its earlier grant, the components that must be made anew are
 * marked outdated, new ones wait to be brought up; those `after` drops stay until they are ended.
 */
export function updatedTo (d: DeploymentRecord, before: Description, text: string, grant: DeploymentGrant, after: Description, now = Date.now()): Pick<DeploymentRecord, 'text' | 'grant' | 'earlier' | 'components'> {
  const old = d.grant.sig
  const stamp = <T extends { grant?: string | undefined }>(x: T): T => ({ ...x, grant: x.grant ?? old })
  const outdated = outdatedBy(before, after)
  const components: Record<string, ComponentRecord> = {}
  for (const [path, c] of Object.entries(d.components)) {
    components[path] = {
      ...c,
      instances: c.instances.map(stamp),
      ...c.orphans === undefined ? {} : { orphans: c.orphans.map(stamp) },
      ...c.retiring === undefined ? {} : { retiring: c.retiring.map(stamp) },
      ...c.checkpoints === undefined ? {} : { checkpoints: c.checkpoints.map(stamp) },
      outdated: c.outdated === true || outdated.has(path),
    }
  }
  for (const { workload } of workloadsOf(after)) {
    components[workload.path] ??= waitingComponent(now)
  }
  return { text, grant, earlier: stillUsed({ ...d, earlier: [{ text: d.text, grant: d.grant }, ...d.earlier], components }), components }
}

/** The earlier descriptions of `d` that an instance, orphan, retiring instance or checkpoint of it is still under. */
export function stillUsed (d: Pick<DeploymentRecord, 'earlier' | 'components'>): EarlierDescription[] {
  const used = new Set(Object.values(d.components).flatMap(c => [...c.instances, ...c.orphans ?? [], ...c.retiring ?? [], ...c.checkpoints ?? []].map(x => x.grant)))
  return d.earlier.filter(e => used.has(e.grant.sig))
}
