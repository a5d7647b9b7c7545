import { readFileSync } from 'node:fs'
import { join } from 'node:path'

/**
 * The version of Xenos a host runs: package.json's (two folders up, from the sources as from the
 * compiled build), in its host advert, the API's OpenAPI document and `--version`.
 */
export const XENOS_VERSION = (JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version
