import { Command } from 'commander'
import { toXenosError, XENOS_VERSION } from '../core/index.ts'
import { runDaemon } from './daemon.ts'
import { daemonOptionsFrom, withDaemonOptions, type DaemonFlags } from './daemon-options.ts'

/** `xenosd`: the coordinator every host runs. */
const program = withDaemonOptions(new Command('xenosd').description('Run a Xenos host: join the overlay, serve the API, run instances')
  .version(XENOS_VERSION, '-V, --version', 'print the version of Xenos and exit'))
  .action(async (flags: DaemonFlags) => { await runDaemon(daemonOptionsFrom(flags)) })

program.parseAsync().catch((err: unknown) => {
  const e = toXenosError(err)
  process.stderr.write(`xenosd: ${e.code}: ${e.message}\n`)
  process.exit(1)
})
