/**
 * @packageDocumentation
 * Drivers: the ways a host runs instances, all behind the `Driver` contract of core/. `process`
 * runs a template's command as a sandboxed host process with cgroup limits.
 *
 * @example
 * ```ts
 * const driver = processDriver({ cgroups: await detectCgroups(), uid: 65534, gid: 65534 })
 * const handle = await driver.start(spec)
 * await driver.pause(handle)
 * ```
 */
export { processDriver, substitute, DEFAULT_TASK_UID, type ProcessDriverInit } from './process/driver.ts'
export { detectCgroups, MAX_CPU_WEIGHT, type Cgroups } from './cgroup.ts'
export { qemuDriver, type QemuDriverInit } from './qemu/driver.ts'
export { readFileFrom, tailFile, tailFileFrom } from './procfs.ts'
