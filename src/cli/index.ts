/**
 * @packageDocumentation
 * The `xenos` command line and the `xenosd` daemon entry. Every verb talks to a host's HTTP API,
 * signs owner actions with the user's key and prints a table, or JSON with `--json`.
 *
 * @example
 * ```sh
 * xenos template import examples/hello.yaml
 * xenos deploy hello --count 3
 * xenos instance list
 * ```
 */
export { ApiClient } from './client.ts'
export { runDaemon, type HostFile } from './daemon.ts'
export { loadOrCreateUserKey, DEFAULT_KEY_FILE } from './keys.ts'
