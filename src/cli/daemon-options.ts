import { Command, Option } from 'commander'
import { DEFAULT_DATA_DIR, type HostOptionsInput } from '../node/index.ts'
import { XenosError } from '../core/index.ts'
import { collect } from './command.ts'
import { applyConfigFile } from './daemon-config.ts'

/** Adds the host's options to a command (`xenosd` and `xenos node start` share them). */
export function withDaemonOptions (cmd: Command): Command {
  return cmd
    .option('--config <file>', 'take options from this YAML file (keys as the long options are named: api, listen, advert-ttl, …); the command line wins')
    .hook('preAction', async (c) => {
      const file = c.getOptionValue('config') as string | undefined
      if (file !== undefined) await applyConfigFile(c, file)
    })
    .addOption(new Option('--data <dir>', 'identity key, state, instances and logs').env('XENOS_DATA').default(DEFAULT_DATA_DIR))
    .option('--api <host:port>', 'HTTP API address', '127.0.0.1:7380')
    .option('--listen <multiaddr>', 'overlay listen address (repeatable)', collect)
    .option('--bootstrap <multiaddr>', 'host to join through, ending in /p2p/<peer id> (repeatable)', collect)
    .option('--driver <name>', 'driver to offer (repeatable)', collect)
    .option('--name <name>', 'host name shown in search results')
    .option('--tag <key=value>', 'what this host is, for descriptions to place components by (repeatable)', collect)
    .option('--advertise-address <ip>', 'address services bind to and endpoints name')
    .option('--cpu <cores>', 'CPU cores to offer (default: all)', Number)
    .option('--memory <MiB>', 'memory to offer in MiB (default: 75% of RAM)', Number)
    .option('--overcommit-cpu <factor>', 'admit up to this many times the CPU offered', Number)
    .option('--overcommit-memory <factor>', 'admit up to this many times the memory offered', Number)
    .addOption(new Option('--accel <accel>', 'VM acceleration').choices(['auto', 'kvm', 'tcg']).default('auto'))
    .option('--advert-ttl <seconds>', 'lifetime of this host\'s adverts', Number)
    .option('--forward-grace <seconds>', 'how long old endpoints of a moved instance keep forwarding to it (default: 600)', Number)
    .option('--data-quota <MiB>', 'the most data one owner may keep on this host (default: 10240)', Number)
    .option('--host-quota <MiB>', 'the most data all owners together may keep on this host (default: 80% of the data dir\'s file system)', Number)
    .option('--operator <key>', 'owner id of a key that operates this host (repeatable; default: the key in DATA/operator.pem, made on first start)', collect)
    .option('--guest-outbound', 'let VMs whose template asks for it reach the network (and this host\'s loopback with it): only where every template is trusted')
    .option('--bank', 'run a bank: the ledger of the market\'s credits (its key: DATA/bank.pem, made on first start)')
    .option('--bank-grant <credits>', 'what the bank gives each new account (default: 0)', Number)
    .option('--accept-bank <key>', 'a bank (by its key) this host and its users deal with (repeatable)', collect)
    .option('--market-floor <share>', 'the share of the CPU each instance without a bid gets while others bid (default: 0.05)', Number)
    .option('--market-only', 'refuse deploys without a bid for each instance: every instance here pays for its share')
    .option('--mdns', 'find hosts on the local network with mDNS')
    .option('--no-direct-migration', 'receive migrating VMs only through the overlay, not on a port of their own')
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
}

export interface DaemonFlags {
  data: string
  api: string
  listen?: string[]
  bootstrap?: string[]
  driver?: string[]
  name?: string
  tag?: string[]
  advertiseAddress?: string
  cpu?: number
  memory?: number
  advertTtl?: number
  forwardGrace?: number
  dataQuota?: number
  hostQuota?: number
  operator?: string[]
  guestOutbound?: boolean
  overcommitCpu?: number
  overcommitMemory?: number
  accel: string
  mdns?: boolean
  bank?: boolean
  bankGrant?: number
  acceptBank?: string[]
  marketFloor?: number
  marketOnly?: boolean
  directMigration: boolean
  logLevel: string
}

export function daemonOptionsFrom (flags: DaemonFlags): HostOptionsInput & { dataDir: string } {
  const m = /^(.+):(\d+)$/.exec(flags.api)
  if (m === null) throw new XenosError('INVALID_ARGUMENT', `--api must be HOST:PORT, got "${flags.api}"`)
  if ((flags.cpu === undefined) !== (flags.memory === undefined)) throw new XenosError('INVALID_ARGUMENT', '--cpu and --memory go together')
  return {
    dataDir: flags.data,
    api: { host: m[1] ?? '', port: Number(m[2]) },
    ...(flags.listen === undefined ? {} : { listen: flags.listen }),
    ...(flags.bootstrap === undefined ? {} : { bootstrap: flags.bootstrap }),
    ...(flags.driver === undefined ? {} : { drivers: flags.driver as Array<'process'> }),
    ...(flags.name === undefined ? {} : { name: flags.name }),
    ...(flags.tag === undefined ? {} : { tags: Object.fromEntries(flags.tag.map(tagOf)) }),
    ...(flags.advertiseAddress === undefined ? {} : { advertiseAddress: flags.advertiseAddress }),
    ...(flags.cpu === undefined || flags.memory === undefined ? {} : { capacity: { cpu: flags.cpu, memory: flags.memory } }),
    ...(flags.advertTtl === undefined ? {} : { advertTtlMs: Math.round(flags.advertTtl * 1000) }),
    ...(flags.forwardGrace === undefined ? {} : { forwardGraceMs: Math.round(flags.forwardGrace * 1000) }),
    ...(flags.dataQuota === undefined ? {} : { dataQuotaBytes: Math.round(flags.dataQuota * 2 ** 20) }),
    ...(flags.hostQuota === undefined ? {} : { hostQuotaBytes: Math.round(flags.hostQuota * 2 ** 20) }),
    ...(flags.operator === undefined ? {} : { operators: flags.operator }),
    guestOutbound: flags.guestOutbound === true,
    bank: flags.bank === true,
    ...(flags.bankGrant === undefined ? {} : { bankGrant: flags.bankGrant }),
    ...(flags.acceptBank === undefined ? {} : { acceptBanks: flags.acceptBank }),
    ...(flags.marketFloor === undefined ? {} : { marketFloor: flags.marketFloor }),
    marketOnly: flags.marketOnly === true,
    overcommit: { cpu: flags.overcommitCpu ?? 1, memory: flags.overcommitMemory ?? 1 },
    accel: flags.accel as 'auto',
    mdns: flags.mdns === true,
    directMigration: flags.directMigration,
    logLevel: flags.logLevel as 'info',
  }
}

function tagOf (text: string): [string, string] {
  const at = text.indexOf('=')
  if (at < 1) throw new XenosError('INVALID_ARGUMENT', `--tag ${text}: give KEY=VALUE`)
  return [text.slice(0, at), text.slice(at + 1)]
}
