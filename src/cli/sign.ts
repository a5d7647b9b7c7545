import type { Command } from 'commander'
import { encodeAuthHeader, XenosError } from '../core/index.ts'
import { client, out, resolveHost } from './command.ts'

/**
 * `xenos sign`: the X-Xenos-Auth header of one request, signed with the user key, for clients
 * that are not this CLI (curl, a client generated from /openapi.json, XML-RPC). Good for one use
 * within 60 s, on the host it names.
 */
export function registerSignCommand (program: Command): void {
  program.command('sign <action> <target>').description('Print an X-Xenos-Auth header value: your signature of ACTION on TARGET, for one request (docs/security.md; /openapi.json says what each route signs)')
    .option('--params <json>', 'the parameters signed, as JSON', '{}')
    .option('--for <host>', 'the host that carries the request out (default: the host the CLI talks to)')
    .action(async (action: string, target: string, o: { params: string, for?: string }, cmd: Command) => {
      let params: unknown
      try {
        params = JSON.parse(o.params)
      } catch (err) {
        throw new XenosError('INVALID_ARGUMENT', `--params is not JSON: ${(err as Error).message}`)
      }
      const { api, flags } = await client(cmd)
      const host = o.for === undefined ? await api.hostId() : await resolveHost(api, o.for)
      const header = encodeAuthHeader(api.authFor(action, target, params, host))
      out(flags, { header, host }, () => header)
    })
}
