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
 * host.router.list()
 * await host.stop()
 * ```
 */
export { BANK_KEY_FILE, Host, OPERATOR_KEY_FILE } from './host.ts'
export { bankWhereSchema, LEDGER_PAGE, type BankWhere } from './banking.ts'
export { InstanceRouter, viewFromAdvert } from './router.ts'
export { TemplateCatalog } from './catalog.ts'
export { Draining, Migrations } from './migration/index.ts'
export { hostOptionsSchema, DEFAULT_API_PORT, DEFAULT_P2P_PORT, DEFAULT_DATA_DIR, type HostOptions, type HostOptionsInput } from './options.ts'
