import { ACTIVE_STATES, type InstanceView, type MarketView, type ServiceStatus, type Template } from '../../core/index.ts'
import type { InstanceRecord } from '../../store/index.ts'
import type { Milestones } from './health.ts'

/** Where the view of an instance is seen from: its host, and what that host learnt of it while it runs. */
export interface ViewContext {
  host: string
  /** Address services bind to and endpoints name. */
  address: string
  services: ServiceStatus[]
  milestones: Milestones | undefined
  /** Its bid and share, on a host with a market. */
  market: MarketView
}

/** Instance `r` as the API and other hosts see it: endpoints while it holds resources, services and milestones while it runs. */
export function viewOf (r: InstanceRecord, template: Template | undefined, c: ViewContext): InstanceView {
  const view: InstanceView = {
    id: r.id,
    name: r.name,
    template: r.templateId,
    templateName: template === undefined ? '' : `${template.manifest.name}:${template.manifest.version}`,
    host: c.host,
    state: r.state,
    owner: r.owner,
    endpoints: ACTIVE_STATES.has(r.state) ? r.ports.map(p => ({ name: p.name, url: `${p.protocol}://${c.address}:${p.hostPort}` })) : [],
    services: r.state === 'running' ? c.services : [],
    resources: r.resources,
    createdAt: r.createdAt,
    updatedAt: r.updatedAt,
  }
  const m = r.state === 'running' ? c.milestones : undefined
  if (m?.bootedAt !== undefined) view.bootedAt = m.bootedAt
  if (m?.healthyAt !== undefined) view.healthyAt = m.healthyAt
  if (r.error !== null) view.error = r.error
  if (r.exitCode !== null) view.exitCode = r.exitCode
  return { ...view, ...c.market }
}
