import { execFileSync } from 'node:child_process'

/**
 * Hosts for benchmarks: network namespaces `xbI` at 10.78.0.I on a private bridge, each link
 * limited to `rate` in both directions with tc tbf. The bridge itself gets 10.78.0.254 so the
 * benchmark can reach every host's API. Needs root and iproute2.
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

export function netnsUp (hosts: number, rate: string): void {
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
    // Upload limited inside the host, download limited on its side of the bridge.
    execFileSync('ip', ['netns', 'exec', ns(i), 'tc', 'qdisc', 'add', 'dev', 'eth0', 'root', 'tbf', 'rate', rate, 'burst', '256kb', 'latency', '50ms'])
    execFileSync('tc', ['qdisc', 'add', 'dev', `veth-${ns(i)}`, 'root', 'tbf', 'rate', rate, 'burst', '256kb', 'latency', '50ms'])
  }
}

export function netnsDown (hosts: number): void {
  for (let i = 1; i <= hosts; i++) quiet(() => { ip('netns', 'del', ns(i)) })
  quiet(() => { ip('link', 'del', BRIDGE) })
}
