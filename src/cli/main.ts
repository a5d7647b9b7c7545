import { Command, Option } from 'commander'
import { resolve } from 'node:path'
import { XENOS_VERSION, XenosError } from '../core/index.ts'
import { ApiClient } from './client.ts'
import { client, collect, hostNames, out, resolveHost, type GlobalFlags } from './command.ts'
import { registerBankCommands } from './bank.ts'
import { registerMarketCommands } from './market.ts'
import { registerDataCommands } from './data.ts'
import { registerDeploymentCommands } from './deployments.ts'
import { registerDeployCommands } from './deploy.ts'
import { reportFailure } from './failure.ts'
import { COMPLETE_COMMAND, completions, completionScript } from './completion.ts'
import { runDaemon } from './daemon.ts'
import { daemonOptionsFrom, withDaemonOptions, type DaemonFlags } from './daemon-options.ts'
import { registerHostCommands } from './hosts.ts'
import { registerSignCommands } from './sign.ts'
import { registerInstanceCommands } from './instances.ts'
import { DEFAULT_KEY_FILE, loadOrCreateUserKey } from './keys.ts'
import { LOCAL_CLOUD_DIR, runLocalCloud } from './local-cloud.ts'
import { registerTaskCommands } from './tasks.ts'
import { registerTemplateCommands } from './templates.ts'
import { ago, hostLabel, shortId, table } from './table.ts'

interface SearchResult { kind: string, id: string, host: string, issuedAt: number, body: Record<string, unknown> }

export function buildProgram (): Command {
  const program = new Command('xenos')
    .description('Find, deploy, control and measure services on a Xenos cloud')
    .version(XENOS_VERSION, '-V, --version', 'print the version of Xenos and exit')
    .option('--api <url>', 'API of any Xenos host', process.env.XENOS_API ?? 'http://127.0.0.1:7380')
    .option('--json', 'print JSON instead of tables')
    .option('--key <file>', 'your user key (created on first use)', process.env.XENOS_KEY ?? DEFAULT_KEY_FILE)
    .showHelpAfterError()

  withDaemonOptions(program.command('node').description('Run this machine as a Xenos host').command('start').description('Start xenosd in the foreground'))
    .action(async (flags: DaemonFlags) => { await runDaemon(daemonOptionsFrom(flags)) })

  program.command('cloud').description('Run a small Xenos cloud on this machine (several hosts on loopback)')
    .option('--hosts <n>', 'how many hosts', Number, 3)
    .option('--data <dir>', 'where the hosts keep their state', LOCAL_CLOUD_DIR)
    .option('--first-api-port <port>', 'API port of host1; the others follow', Number, 7380)
    .option('--template <dir|file>', 'VM template directory to build, or manifest file to import, and deploy', resolve(import.meta.dirname, '..', '..', 'examples', 'hello-web'))
    .action(async (o: { hosts: number, data: string, firstApiPort: number, template: string }, cmd: Command) => {
      if (!Number.isInteger(o.hosts) || o.hosts < 1 || o.hosts > 32) throw new XenosError('INVALID_ARGUMENT', '--hosts must be from 1 to 32')
      const flags = cmd.optsWithGlobals<GlobalFlags>()
      const { key } = await loadOrCreateUserKey(flags.key)
      await runLocalCloud({
        hosts: o.hosts, dataDir: o.data, firstApiPort: o.firstApiPort, template: o.template, operator: key.id,
        api: url => new ApiClient({ api: url, key }),
        print: line => { process.stdout.write(line + '\n') },
      })
    })

  program.command('whoami').description('Show your owner id').action(async (_o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    out(flags, { owner: api.owner }, () => api.owner)
  })

  registerHostCommands(program)
  registerTemplateCommands(program)
  program.command('search [text]').description('Search the overlay for templates, instances and hosts')
    .addOption(new Option('--kind <kind>', 'only this kind').choices(['template', 'instance', 'host']))
    .option('--tag <key=value>', 'tag that must match (repeatable)', collect)
    .option('--host <peer>', 'only adverts from this host')
    .option('--by-price', 'hosts cheapest first (credits per second of all bids on a host, per CPU it offers)')
    .action(async (text: string | undefined, o: { kind?: string, tag?: string[], host?: string, byPrice?: boolean }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const q = new URLSearchParams()
      if (text !== undefined) q.set('q', text)
      if (o.kind !== undefined) q.set('kind', o.kind)
      if (o.host !== undefined) q.set('host', await resolveHost(api, o.host))
      for (const t of o.tag ?? []) q.append('tag', t)
      if (o.byPrice === true) q.set('sort', 'price')
      const { results } = await api.get<{ results: SearchResult[] }>(`/v1/search?${q.toString()}`)
      const names = await hostNames(api)
      out(flags, results, () => results.length === 0 ? 'nothing found' : table(['KIND', 'ID', 'NAME', 'HOST', 'DETAIL', 'SEEN'], results.map(r => [
        r.kind, r.kind === 'host' ? shortId(r.id) : r.id.slice(0, 19), typeof r.body.name === 'string' ? r.body.name : '', hostLabel(names, r.host), detailOf(r), ago(r.issuedAt),
      ])))
    })

  program.command('completion <shell>').description('Print a shell\'s completion for xenos (bash or zsh): source <(xenos completion bash)')
    .action((shell: string) => { process.stdout.write(completionScript(shell, program.name())) })

  registerDeployCommands(program)
  registerInstanceCommands(program)
  registerDataCommands(program)
  registerTaskCommands(program)
  registerDeploymentCommands(program)
  registerBankCommands(program)
  registerMarketCommands(program)
  registerSignCommands(program)

  program.command('connect <target>').description('Open a port on the host the CLI talks to that reaches a service of yours (instance id or name) through the overlay, wherever it runs; it follows the service when it migrates')
    .option('--port <port>', 'local port (default: any free one)', Number, 0)
    .option('--address <ip>', 'address to listen on (other than loopback: only for the host\'s operator)', '127.0.0.1')
    .option('--endpoint <name>', 'which endpoint of the service (default: its first TCP one)')
    .action(async (target: string, o: { port: number, address: string, endpoint?: string }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const stop = new AbortController()
      process.once('SIGINT', () => { stop.abort() })
      process.once('SIGTERM', () => { stop.abort() })
      const names = await hostNames(api)
      let reaching: string | undefined
      try {
        const params = { endpoint: o.endpoint ?? null, address: o.address, port: o.port }
        for await (const { event, data } of api.signedEvents('/v1/connect', 'connect', target, params, { target, port: o.port, address: o.address, ...(o.endpoint === undefined ? {} : { endpoint: o.endpoint }) }, stop.signal)) {
          const d = data as { address: string, port: number, connections: number, failed: number, lastHost?: string, lastInstance?: string }
          if (flags.json) process.stdout.write(`${JSON.stringify({ event, ...d })}\n`)
          else if (event === 'listening') process.stdout.write(`${d.address}:${d.port} reaches ${target} through the overlay (Ctrl-C to stop)\n`)
          else if (event === 'stats' && d.lastHost !== undefined && `${d.lastInstance}@${d.lastHost}` !== reaching) {
            reaching = `${d.lastInstance}@${d.lastHost}`
            process.stdout.write(`now reaching ${d.lastInstance ?? '?'} on ${hostLabel(names, d.lastHost)} (${d.connections} connections, ${d.failed} failed)\n`)
          }
        }
      } catch (err) {
        if (!stop.signal.aborted) throw err
      }
    })

  return program
}

function detailOf (r: SearchResult): string {
  const b = r.body
  if (r.kind === 'template') return `${String(b.version)} ${String(b.driver)} ${Object.entries(b.tags as Record<string, string>).map(([k, v]) => `${k}=${v}`).join(',')}`.trim()
  if (r.kind === 'instance') return `${String(b.state)} ${(b.endpoints as Array<{ url: string }>).map(e => e.url).join(' ')}`.trim()
  const free = b.free as { cpu: number, memory: number }
  return `free ${free.cpu} CPU ${free.memory} MiB, ${String(b.instances)} instances${typeof b.price === 'number' ? `, price ${b.price.toFixed(4)}` : ''}`
}

const args = process.argv.slice(2)
// The shell's completion asks before anything is parsed: its words are a command line half typed.
if (args[0] === COMPLETE_COMMAND) {
  const words = completions(buildProgram(), args.slice(1))
  if (words.length > 0) process.stdout.write(`${words.join('\n')}\n`)
} else {
  buildProgram().parseAsync().catch((err: unknown) => {
    reportFailure(err, args, text => process.stderr.write(text))
    process.exit(1)
  })
}
