/**
 * @packageDocumentation
 * The composition root: builds one host from the other folders (store, overlay, template
 * library, drivers) and holds the host's own logic: the instance supervisor and the cloud router
 * that forwards actions to the host running an instance. `main.ts` is `xenosd`.
 *
 * @example
 * ```ts
 * const host = await Host.create({ dataDir: '/tmp/xenos-a', listen: ['/ip4/127.0.0.1/tcp/0'] })
 * await host.start()
 * host.cloud.list()
 * await host.stop()
 * ```
 */
export { Host, XENOS_VERSION, OPERATOR_KEY_FILE } from './host.ts'
export { Cloud, viewFromAdvert, type TemplateSummary } from './cloud.ts'
export { type DeployResult } from './deploy.ts'
export { Migrations, drainResultSchema, migrationResultSchema, type DrainResult, type DrainStatus, type MigrationResult, type MigrationStatus } from './migration.ts'
export { ROLLOUT_PHASES, type FetchProgress, type HostRollout, type RolloutPhase } from './rollout.ts'
export { hostOptionsSchema, DEFAULT_API_PORT, DEFAULT_P2P_PORT, DEFAULT_DATA_DIR, type HostOptions, type HostOptionsInput } from './options.ts'
export { instanceIdSchema, instanceViewSchema, instanceMetricsSchema, peerIdSchema, templateIdSchema, deploySpecSchema, deployPartSchema, deriveParamsSchema, placementPlanSchema, snapshotIdSchema, snapshotViewSchema, dataFileViewSchema, taskViewSchema, type DeployInput, type DeployPart, type DeploySpec, type PlacementPlan, type TaskView } from './rpc-schemas.ts'
export { collectResultSchema, type CollectResult } from './outputs.ts'
