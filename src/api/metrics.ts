import type { FastifyInstance } from 'fastify'
import { Counter, Gauge, type Registry } from 'prom-client'
import { INSTANCE_STATES, type InstanceMetrics, type InstanceView } from '../core/index.ts'
import type { ApiHost } from './api-host.ts'

const MIB = 1024 * 1024

/** Labels of per-instance series: `instance_id`, since Prometheus gives `instance` to the scraped target. */
type InstanceLabels = 'instance_id' | 'name'

/**
 * Adds to the host's registry the metrics read from its state at each scrape: capacity, overlay
 * health, pulls, and per-instance usage; and times every HTTP request. Once per host: a second API
 * on the same host shares them.
 */
export function registerHostMetrics (app: FastifyInstance, host: ApiHost): void {
  app.addHook('onResponse', async (req, reply) => {
    // A route that matched nothing is one series, however many paths a client makes up.
    host.metrics.http(req.method, req.routeOptions.url ?? 'unmatched', reply.statusCode, reply.elapsedTime / 1000)
  })
  const registry = host.metrics.registry
  if (registry.getSingleMetric('xenos_host_capacity_cpus') !== undefined) return
  const registers = [registry]
  const gauge = (name: string, help: string, value: () => number): void => {
    new Gauge({ name, help, registers, collect () { this.set(value()) } })
  }
  gauge('xenos_host_capacity_cpus', 'CPU cores this host offers.', () => host.info().capacity.cpu)
  gauge('xenos_host_free_cpus', 'CPU cores not held by instances.', () => host.info().free.cpu)
  gauge('xenos_host_capacity_memory_bytes', 'Memory this host offers.', () => host.info().capacity.memory * MIB)
  gauge('xenos_host_free_memory_bytes', 'Memory not held by instances.', () => host.info().free.memory * MIB)
  gauge('xenos_overlay_peers', 'Connected overlay peers.', () => host.overlay.connectedPeers().length)
  gauge('xenos_overlay_gossip_subscribers', 'Peers known to subscribe to the advert topic.', () => host.overlay.gossipSubscribers())
  gauge('xenos_adverts_cached', 'Adverts in the local cache.', () => host.overlay.cache.size)
  gauge('xenos_adverts_cached_bytes', 'Bytes the adverts in the local cache take, as JSON.', () => host.overlay.cache.bytes)
  gauge('xenos_blob_pulls_active', 'Image files being fetched now.', () => host.fetcher.transfers.size)

  const { counters } = host.overlay
  const counter = <L extends string>(name: string, help: string, labelNames: L[], values: () => Array<[Partial<Record<L, string>>, number]>): void => {
    // Counts kept by the parts themselves, copied at each scrape.
    new Counter({ name, help, labelNames, registers, collect () { this.reset(); for (const [labels, n] of values()) this.inc(labels, n) } })
  }
  counter('xenos_adverts_accepted_total', 'Adverts from peers that were new and valid, by the path they came on.', ['via'], () => Object.entries(counters.acceptedVia).map(([via, n]) => [{ via }, n]))
  counter('xenos_adverts_stale_total', 'Valid adverts from peers that were not newer than the cached copy.', [], () => [[{}, counters.stale]])
  counter('xenos_adverts_rejected_total', 'Adverts from peers dropped as invalid, by reason.', ['reason'], () => Object.entries(counters.rejected).map(([reason, n]) => [{ reason }, n]))
  counter('xenos_hosts_down_total', 'Hosts taken for dead: after this host\'s probes went unanswered, or on another host\'s notice after this host\'s own ping did.', ['how'], () => Object.entries(counters.hostsDown).map(([how, n]) => [{ how }, n]))
  counter('xenos_blob_fetched_bytes_total', 'Bytes of image file chunks fetched from peers.', [], () => [[{}, host.fetcher.counters.fetchedBytes]])
  counter('xenos_blob_bad_chunks_total', 'Peers dropped from a pull for sending chunks that did not match the index.', [], () => [[{}, host.fetcher.counters.penalties]])

  registerInstanceMetrics(registry, host)
}

/** Per-instance series, from one reading of every instance's usage per scrape. */
function registerInstanceMetrics (registry: Registry, host: ApiHost): void {
  const registers = [registry]
  let reading: Promise<Array<{ v: InstanceView, m: InstanceMetrics }>> | undefined
  // The gauges of one scrape share one reading; the next scrape reads again.
  const usage = async (): Promise<Array<{ v: InstanceView, m: InstanceMetrics }>> => {
    reading ??= (async () => {
      const views = host.supervisor.list().filter(v => v.state === 'running' || v.state === 'paused')
      const read = await Promise.all(views.map(async v => ({ v, m: await host.supervisor.metrics(v.id).catch(() => undefined) })))
      setImmediate(() => { reading = undefined })
      return read.flatMap(r => r.m === undefined ? [] : [{ v: r.v, m: r.m }])
    })()
    return await reading
  }
  /** A series per instance whose driver gives `value` (undefined: it cannot tell). */
  const perInstance = (name: string, help: string, value: (m: InstanceMetrics) => number | undefined, type: 'gauge' | 'counter'): void => {
    const labelNames: InstanceLabels[] = ['instance_id', 'name']
    async function collect (this: Gauge<InstanceLabels> | Counter<InstanceLabels>): Promise<void> {
      this.reset()
      for (const { v, m } of await usage()) {
        const n = value(m)
        if (n === undefined) continue
        if (this instanceof Gauge) this.set({ instance_id: v.id, name: v.name }, n)
        else this.inc({ instance_id: v.id, name: v.name }, n)
      }
    }
    if (type === 'gauge') new Gauge({ name, help, labelNames, registers, collect })
    else new Counter({ name, help, labelNames, registers, collect })
  }
  perInstance('xenos_instance_cpu_seconds_total', 'CPU time used by the instance.', m => m.cpuSeconds, 'counter')
  perInstance('xenos_instance_memory_bytes', 'Memory used by the instance.', m => m.memoryBytes, 'gauge')
  perInstance('xenos_instance_disk_read_bytes_total', 'Bytes the instance\'s disks read.', m => m.diskReadBytes, 'counter')
  perInstance('xenos_instance_disk_written_bytes_total', 'Bytes the instance\'s disks wrote.', m => m.diskWriteBytes, 'counter')
  perInstance('xenos_instance_network_receive_bytes_total', 'Bytes the guest received on its network card, as it reports them.', m => m.netRxBytes, 'counter')
  perInstance('xenos_instance_network_transmit_bytes_total', 'Bytes the guest sent on its network card, as it reports them.', m => m.netTxBytes, 'counter')
  perInstance('xenos_instance_start_time_seconds', 'When the instance last started, in seconds since the Unix epoch.', m => (m.sampledAt / 1000) - m.uptimeSeconds, 'gauge')
  new Gauge({
    name: 'xenos_instances',
    help: 'Instances on this host by state.',
    labelNames: ['state'],
    registers,
    collect () {
      const views = host.supervisor.list()
      for (const s of INSTANCE_STATES) this.set({ state: s }, views.filter(v => v.state === s).length)
    },
  })
  new Gauge({
    name: 'xenos_instance_service_healthy',
    help: 'Last health check of each registered service of a running instance: 1 passing, 0 failing.',
    labelNames: ['instance_id', 'service'],
    registers,
    collect () {
      this.reset()
      for (const v of host.supervisor.list()) {
        for (const s of v.services) if (s.registered && s.health !== 'unknown') this.set({ instance_id: v.id, service: s.name }, s.health === 'passing' ? 1 : 0)
      }
    },
  })
}
