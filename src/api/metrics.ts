import { INSTANCE_STATES } from '../core/index.ts'
import type { ApiHost } from './api-host.ts'

/** Prometheus text exposition of a host: capacity, overlay health and per-instance usage. */
export async function prometheusText (host: ApiHost): Promise<string> {
  const lines: string[] = []
  const metric = (name: string, type: 'gauge' | 'counter', help: string, samples: Array<[Record<string, string>, number]>): void => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`)
    for (const [labels, value] of samples) {
      const l = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, '_')}"`).join(',')
      lines.push(`${name}${l === '' ? '' : `{${l}}`} ${value}`)
    }
  }
  const info = host.info()
  const { counters } = host.overlay
  metric('xenos_host_capacity_cpu', 'gauge', 'CPU cores this host offers.', [[{}, info.capacity.cpu]])
  metric('xenos_host_free_cpu', 'gauge', 'CPU cores not held by instances.', [[{}, info.free.cpu]])
  metric('xenos_host_capacity_memory_mib', 'gauge', 'Memory this host offers, MiB.', [[{}, info.capacity.memory]])
  metric('xenos_host_free_memory_mib', 'gauge', 'Memory not held by instances, MiB.', [[{}, info.free.memory]])
  metric('xenos_overlay_peers', 'gauge', 'Connected overlay peers.', [[{}, host.overlay.connectedPeers().length]])
  metric('xenos_overlay_gossip_subscribers', 'gauge', 'Peers known to subscribe to the advert topic.', [[{}, host.overlay.gossipSubscribers()]])
  metric('xenos_adverts_cached', 'gauge', 'Adverts in the local cache.', [[{}, host.overlay.cache.size]])
  metric('xenos_adverts_cached_bytes', 'gauge', 'Bytes the adverts in the local cache take, as JSON.', [[{}, host.overlay.cache.bytes]])
  metric('xenos_adverts_accepted_total', 'counter', 'Adverts from peers that were new and valid, by the path they came on.',
    Object.entries(counters.acceptedVia).map(([via, n]) => [{ via }, n]))
  metric('xenos_adverts_stale_total', 'counter', 'Valid adverts from peers that were not newer than the cached copy.', [[{}, counters.stale]])
  metric('xenos_adverts_rejected_total', 'counter', 'Adverts from peers dropped as invalid, by reason.',
    Object.entries(counters.rejected).map(([reason, n]) => [{ reason }, n]))
  metric('xenos_hosts_down_total', 'counter', 'Hosts taken for dead: after this host\'s probes went unanswered, or on another host\'s notice after this host\'s own ping did.',
    Object.entries(counters.hostsDown).map(([how, n]) => [{ how }, n]))
  const views = host.supervisor.list()
  const pulls = host.fetcher
  metric('xenos_blob_fetched_bytes_total', 'counter', 'Bytes of image files fetched from peers.', [[{}, pulls.counters.fetchedBytes]])
  metric('xenos_blob_bad_chunks_total', 'counter', 'Peers dropped from a pull for sending chunks that did not match the index.', [[{}, pulls.counters.penalties]])
  metric('xenos_blob_pulls_active', 'gauge', 'Image files being fetched now.', [[{}, pulls.transfers.size]])
  metric('xenos_instances', 'gauge', 'Instances on this host by state.', INSTANCE_STATES.map(s => [{ state: s }, views.filter(v => v.state === s).length]))
  const usage = await Promise.all(views.map(async v => ({ v, m: await host.supervisor.metrics(v.id).catch(() => undefined) })))
  const live = usage.filter(u => u.m !== undefined && (u.v.state === 'running' || u.v.state === 'paused'))
  metric('xenos_instance_cpu_seconds_total', 'counter', 'CPU time used by the instance.', live.map(u => [{ instance: u.v.id, name: u.v.name }, u.m?.cpuSeconds ?? 0]))
  metric('xenos_instance_memory_bytes', 'gauge', 'Memory used by the instance.', live.map(u => [{ instance: u.v.id, name: u.v.name }, u.m?.memoryBytes ?? 0]))
  metric('xenos_instance_service_healthy', 'gauge', 'Last health check of each registered service of a running instance: 1 passing, 0 failing.',
    views.flatMap(v => v.services.filter(s => s.registered && s.health !== 'unknown').map(s => [{ instance: v.id, service: s.name }, s.health === 'passing' ? 1 : 0] as [Record<string, string>, number])))
  metric('xenos_instance_uptime_seconds', 'gauge', 'Seconds since the instance last started.', live.map(u => [{ instance: u.v.id, name: u.v.name }, u.m?.uptimeSeconds ?? 0]))
  return lines.join('\n') + '\n'
}
