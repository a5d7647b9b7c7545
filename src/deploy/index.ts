/**
 * @packageDocumentation
 * Descriptions of whole deployments (SmartFrog's language, in YAML): parsed with the place of
 * every value, prototypes applied (`extends`), references resolved (`${master.endpoints.http}`),
 * and checked. Pure: no I/O. See docs/descriptions.md.
 *
 * @example
 * ```ts
 * const d = resolveDescription(await readFile('cluster.yaml', 'utf8'), 'cluster.yaml')
 * d.components.workers.dependsOn // ['master']
 * ```
 */
export { resolveDescription, type Component, type Compound, type Description, type Workload } from './resolve.ts'
export { isRuntime, type RuntimeRef, type RuntimeValue } from './references.ts'
export { DescriptionError, type Position } from './errors.ts'
export { FAILURE_POLICIES } from './schema.ts'
