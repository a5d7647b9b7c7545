/**
 * @packageDocumentation
 * The words of Xenos as types, schemas and pure functions: templates, instances, adverts, owners,
 * the driver contract, the error registry, and the messages hosts and clients exchange (views,
 * deploys, migrations), each with the schema that checks it. Nothing here does I/O; every other folder
 * depends on this one.
 *
 * @example
 * ```ts
 * import { generateOwnerKey, signAction, verifyAction } from './core/index.ts'
 * const me = generateOwnerKey()
 * const auth = signAction(me, { action: 'stop', target: 'i-0123456789abcdef', params: {} })
 * verifyAction(auth, { action: 'stop', target: 'i-0123456789abcdef', params: {} }) // throws if forged
 * ```
 */
export * from './errors.ts'
export * from './canonical.ts'
export * from './duration.ts'
export * from './chunks.ts'
export * from './template.ts'
export * from './instance.ts'
export * from './owner.ts'
export * from './placement.ts'
export * from './names.ts'
export * from './advert.ts'
export * from './data.ts'
export * from './views.ts'
export * from './deploy.ts'
export * from './migration.ts'
export * from './deployments.ts'
export * from './market.ts'
export * from './version.ts'
export * from './driver.ts'
