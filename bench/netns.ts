import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { ROOT } from '../test/helpers/cluster.ts'

/**
 * Hosts for benchmarks: network namespaces `xbI` at 10.78.0.I on a private bridge, each link
 * limited to `rate` in both directions with tc tbf when a rate is given. The bridge itself gets
 * 10.78.0.254 so the benchmark can reach every host's API. Needs root and iproute2.
 */
export const SUBNET = '10.78.0'
const BRIDGE = 'xbbr0'

const ip = (...args: string[]): void => { execFileSync('ip', args, { stdio: 'ignore' }) }
const quiet = (fn: () => void): void => { try { fn() } catch {} }

export function ns (i: number): string {
  return `xb${i}`
}

export function addressOf (i: number): string {
  return `${SUBNET}.${i}`
}

export function netnsUp (hosts: number, rate?: string): void {
  netnsDown(hosts)
  ip('link', 'add', BRIDGE, 'type', 'bridge')
  ip('link', 'set', BRIDGE, 'up')
  ip('addr', 'add', `${SUBNET}.254/24`, 'dev', BRIDGE)
  for (let i = 1; i <= hosts; i++) {
    ip('netns', 'add', ns(i))
    ip('link', 'add', `veth-${ns(i)}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns(i))
    ip('link', 'set', `veth-${ns(i)}`, 'master', BRIDGE, 'up')
    ip('netns', 'exec', ns(i), 'ip', 'addr', 'add', `${addressOf(i)}/24`, 'dev', 'eth0')
    ip('netns', 'exec', ns(i), 'ip', 'link', 'set', 'eth0', 'up')
    ip('netns', 'exec', ns(i), 'ip', 'link', 'set', 'lo', 'up')
    if (rate === undefined) continue
    // Upload limited inside the host, download limited on its side of the bridge.
    execFileSync('ip', ['netns', 'exec', ns(i), 'tc', 'qdisc', 'add', 'dev', 'eth0', 'root', 'tbf', 'rate', rate, 'burst', '256kb', 'latency', '50ms'])
    execFileSync('tc', ['qdisc', 'add', 'dev', `veth-${ns(i)}`, 'root', 'tbf', 'rate', rate, 'burst', '256kb', 'latency', '50ms'])
  }
}

export function netnsDown (hosts: number): void {
  // The link first: a namespace is taken down lazily, and its end of the link with it.
  for (let i = 1; i <= hosts; i++) quiet(() => { ip('link', 'del', `veth-${ns(i)}`) })
  for (let i = 1; i <= hosts; i++) quiet(() => { ip('netns', 'del', ns(i)) })
  quiet(() => { ip('link', 'del', BRIDGE) })
}

/** Takes host `i`'s link down: its packets are dropped, nothing tells its peers (a machine that lost power or its network). */
export function cutLink (i: number): void {
  ip('link', 'set', `veth-${ns(i)}`, 'down')
}

export function healLink (i: number): void {
  ip('link', 'set', `veth-${ns(i)}`, 'up')
}

/** What host `i` has sent and received on its link so far (every protocol: the bridge side of its veth). */
export async function linkCounters (i: number): Promise<{ packets: number, bytes: number }> {
  const stat = async (name: string): Promise<number> => Number(await readFile(`/sys/class/net/veth-${ns(i)}/statistics/${name}`, 'utf8'))
  // The bridge side receives what the host sends, and sends what it receives.
  const [rxp, txp, rxb, txb] = await Promise.all(['rx_packets', 'tx_packets', 'rx_bytes', 'tx_bytes'].map(stat))
  return { packets: (rxp ?? 0) + (txp ?? 0), bytes: (rxb ?? 0) + (txb ?? 0) }
}

export const XENOSD_API_PORT = 7400
export const XENOSD_P2P_PORT = 7000

export function apiOf (i: number): string {
  return `http://${addressOf(i)}:${XENOSD_API_PORT}`
}

/** Starts xenosd in host `i`'s namespace; resolves with it once its API answers. */
export async function startXenosdIn (i: number, dataDir: string, bootstrap: string[], extraArgs: string[] = []): Promise<{ proc: ChildProcess, peerId: string, multiaddr: string }> {
  // bin/xenosd: what an operator runs, compiled once built.
  const proc = spawn('ip', ['netns', 'exec', ns(i), join(ROOT, 'bin/xenosd'),
    '--data', dataDir, '--api', `${addressOf(i)}:${XENOSD_API_PORT}`, '--listen', `/ip4/${addressOf(i)}/tcp/${XENOSD_P2P_PORT}`, '--name', `h${i}`,
    '--log-level', 'warn', ...bootstrap.flatMap(b => ['--bootstrap', b]), ...extraArgs], { stdio: ['ignore', 'inherit', 'inherit'] })
  for (let t = 0; t < 300; t++) {
    try {
      const info = JSON.parse(await readFile(join(dataDir, 'host.json'), 'utf8')) as { pid: number, peerId: string, multiaddrs: string[] }
      if (info.pid > 0 && (await fetch(`${apiOf(i)}/v1/host`)).ok) return { proc, peerId: info.peerId, multiaddr: info.multiaddrs[0] ?? '' }
    } catch {}
    await sleep(100)
  }
  proc.kill('SIGKILL')
  throw new Error(`xenosd in ${ns(i)} did not start`)
}
