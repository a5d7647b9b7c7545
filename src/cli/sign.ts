import { randomBytes } from 'node:crypto'
import type { Command } from 'commander'
import { deploySpecSchema, encodeAuthHeader, INSTANCE_ID_PATTERN, XenosError } from '../core/index.ts'
import { checkCount, client, out, resolveHost } from './command.ts'

function jsonOption (flag: string, text: string): unknown {
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new XenosError('INVALID_ARGUMENT', `${flag} is not JSON: ${(err as Error).message}`)
  }
}

/**
 * Signatures for clients that are not this CLI (curl, a client generated from /openapi.json,
 * XML-RPC), made with the user key: `xenos sign`, a request's X-Xenos-Auth header, good once
 * within 60 s on the host it names; `xenos deploy-parts`, the signed parts of a deploy's body.
 */
export function registerSignCommands (program: Command): void {
  program.command('sign <action> <target>').description('Print an X-Xenos-Auth header value: your signature of ACTION on TARGET, for one request (docs/security.md; /openapi.json says what each route signs)')
    .option('--params <json>', 'the parameters signed, as JSON', '{}')
    .option('--for <host>', 'the host that carries the request out (default: the host that runs the instance TARGET names, or else the host the CLI talks to)')
    .action(async (action: string, target: string, o: { params: string, for?: string }, cmd: Command) => {
      const params = jsonOption('--params', o.params)
      const { api, flags } = await client(cmd)
      const host = o.for !== undefined
        ? await resolveHost(api, o.for)
        : INSTANCE_ID_PATTERN.test(target) ? await api.hostOf(target) : await api.hostId()
      const header = encodeAuthHeader(api.authFor(action, target, params, host))
      out(flags, { header, host }, () => header)
    })

  program.command('deploy-parts <template>').description('Print, as JSON, the parts of a deploy of template id TEMPLATE that you sign: what POST /v1/instances and XML-RPC\'s instances.deploy take')
    .option('--spec <json>', 'what each instance is (POST /v1/instances\'s spec)', '{"name":null}')
    .option('-n, --count <n>', 'instances', Number, 1)
    .option('--for <host>', 'the host that makes them (default: the host the CLI talks to)')
    .action(async (template: string, o: { spec: string, count: number, for?: string }, cmd: Command) => {
      const spec = deploySpecSchema.safeParse(jsonOption('--spec', o.spec))
      if (!spec.success) throw new XenosError('INVALID_ARGUMENT', `--spec: ${spec.error.issues[0]?.message ?? 'invalid'} at ${spec.error.issues[0]?.path.join('.') ?? ''}`)
      checkCount(o.count)
      const { api } = await client(cmd)
      const host = o.for === undefined ? await api.hostId() : await resolveHost(api, o.for)
      process.stdout.write(JSON.stringify(api.deployParts(template, [{ host, count: o.count }], spec.data, randomBytes(16).toString('hex'))) + '\n')
    })
}
