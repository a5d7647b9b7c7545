import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import { XENOS_VERSION, type InstanceState } from '../core/index.ts'
import type { RpcObservation } from '../overlay/index.ts'

/** How often the event loop's delay is sampled for nodejs_eventloop_lag_* (see the constructor). */
const EVENT_LOOP_SAMPLE_MS = 1000
/** Buckets, in seconds, for what takes from milliseconds (a request) to minutes (a VM's boot under TCG, a migration). */
const SECONDS_BUCKETS = [0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900]

/**
 * A host's Prometheus metrics (prom-client): the process's own, build info, and what the host's
 * parts report as they work; gauges of its state are added by whoever reads it (the API).
 * One registry per host, so several hosts in one process keep theirs apart.
 */
export class HostMetrics {
  readonly registry = new Registry()
  readonly #http: Histogram<'method' | 'route' | 'status_code'>
  readonly #rpc: Histogram<'method' | 'side' | 'code'>
  readonly #deploys: Histogram<'result'>
  readonly #migrations: Histogram<'result'>
  readonly #downtime: Histogram
  readonly #boots: Histogram<'result'>
  readonly #pulls: Histogram<'result'>
  readonly #pulledBytes: Counter
  /** Since when each instance still being made has been on its way to running. */
  readonly #booting = new Map<string, number>()

  constructor () {
    // prom-client samples the event loop's delay every 10 ms by default: a timer at 100 Hz that
    // cost an idle host more CPU (0.57% of a core, measured) than all its overlay work. Once a
    // second still shows a loop that is late.
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS })
    // Gauges named like counters (promtool says so); nodejs_active_{handles,requests,resources} by type hold the same.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.registry.removeSingleMetric(name)
    const registers = [this.registry]
    new Gauge({ name: 'xenos_build_info', help: 'The version of xenosd and of Node.js it runs on; always 1.', labelNames: ['version', 'node'], registers }).set({ version: XENOS_VERSION, node: process.versions.node }, 1)
    this.#http = new Histogram({ name: 'xenos_http_request_duration_seconds', help: 'HTTP API requests, by method, route pattern and status, until the answer was sent (streams: until they ended).', labelNames: ['method', 'route', 'status_code'], buckets: SECONDS_BUCKETS, registers })
    this.#rpc = new Histogram({ name: 'xenos_rpc_duration_seconds', help: 'RPCs between hosts, as caller (client) or as the host that served them, by method and outcome (ok or error code).', labelNames: ['method', 'side', 'code'], buckets: SECONDS_BUCKETS, registers })
    this.#deploys = new Histogram({ name: 'xenos_deploy_duration_seconds', help: 'Deploys asked of this host, over all the hosts they name, by result (ok: every part made its instances; partial; failed).', labelNames: ['result'], buckets: SECONDS_BUCKETS, registers })
    this.#migrations = new Histogram({ name: 'xenos_migration_duration_seconds', help: 'Live migrations of instances away from this host, by result, from start to the destination taking over.', labelNames: ['result'], buckets: SECONDS_BUCKETS, registers })
    this.#downtime = new Histogram({ name: 'xenos_migration_downtime_seconds', help: 'How long moved instances were paused, between the source stopping them and the destination running them.', buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers })
    this.#boots = new Histogram({ name: 'xenos_instance_boot_duration_seconds', help: 'Instances made on this host, from their record to running (result ok) or failing (failed).', labelNames: ['result'], buckets: SECONDS_BUCKETS, registers })
    this.#pulls = new Histogram({ name: 'xenos_blob_pull_duration_seconds', help: 'Image files fetched from peers, by result.', labelNames: ['result'], buckets: SECONDS_BUCKETS, registers })
    this.#pulledBytes = new Counter({ name: 'xenos_blob_pulled_bytes_total', help: 'Bytes of image files pulls brought to this host.', registers })
  }

  http (method: string, route: string, status: number, seconds: number): void {
    this.#http.observe({ method, route, status_code: String(status) }, seconds)
  }

  rpc (o: RpcObservation): void {
    this.#rpc.observe({ method: o.method, side: o.side, code: o.code }, o.seconds)
  }

  deployed (result: 'ok' | 'partial' | 'failed', seconds: number): void {
    this.#deploys.observe({ result }, seconds)
  }

  migrated (result: 'ok' | 'failed', seconds: number, downtimeSeconds: number | null): void {
    this.#migrations.observe({ result }, seconds)
    if (downtimeSeconds !== null) this.#downtime.observe(downtimeSeconds)
  }

  pulled (error: string | null, seconds: number, bytes: number): void {
    this.#pulls.observe({ result: error === null ? 'ok' : 'failed' }, seconds)
    if (error === null) this.#pulledBytes.inc(bytes)
  }

  /** An instance's record changed: a boot ends when it leaves `creating` (an arrival by migration is no boot). */
  instanceChanged (id: string, state: InstanceState | undefined, now = Date.now()): void {
    if (state === 'creating') {
      if (!this.#booting.has(id)) this.#booting.set(id, now)
      return
    }
    const since = this.#booting.get(id)
    if (since === undefined) return
    this.#booting.delete(id)
    if (state === 'running' || state === 'failed') this.#boots.observe({ result: state === 'running' ? 'ok' : 'failed' }, (now - since) / 1000)
  }

  async text (): Promise<string> {
    return await this.registry.metrics()
  }
}
