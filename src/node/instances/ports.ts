import { createServer } from 'node:net'
import type { Template } from '../../core/index.ts'
import type { InstanceRecord, Store } from '../../store/index.ts'

/** Asks the kernel for a free TCP port on `address`, skipping ports already promised to instances. */
export async function allocatePort (address: string, taken: ReadonlySet<number>): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = createServer()
      server.once('error', reject)
      server.listen(0, address, () => {
        const addr = server.address()
        server.close(() => { resolve(typeof addr === 'object' && addr !== null ? addr.port : 0) })
      })
    })
    if (port > 0 && !taken.has(port)) return port
  }
  throw new Error(`no free port on ${address}`)
}

export async function isPortFree (address: string, port: number): Promise<boolean> {
  return await new Promise(resolve => {
    const server = createServer()
    server.once('error', () => { resolve(false) })
    server.listen(port, address, () => { server.close(() => { resolve(true) }) })
  })
}

/**
 * Gives instances host ports of their own: for their template's endpoints on the address
 * services bind to, and for the links of a process on loopback. `pending` holds ports promised
 * to records not written yet.
 */
export class PortPlanner {
  readonly #instances: Pick<Store['instances'], 'list'>
  readonly #address: string

  constructor (instances: Pick<Store['instances'], 'list'>, address: string) {
    this.#instances = instances
    this.#address = address
  }

  /** Ports for `template`'s endpoints: each the one it had before (`previous`) while that is free. */
  async endpoints (template: Template, previous: InstanceRecord['ports'], pending: ReadonlySet<number> = new Set()): Promise<InstanceRecord['ports']> {
    const taken = this.#taken(pending)
    const out: InstanceRecord['ports'] = []
    for (const spec of template.manifest.ports) {
      const before = previous.find(p => p.name === spec.name)
      const hostPort = before !== undefined && await isPortFree(this.#address, before.hostPort)
        ? before.hostPort
        : await allocatePort(this.#address, taken)
      taken.add(hostPort)
      out.push({ ...spec, hostPort })
    }
    return out
  }

  /** A loopback port for a link, fixed for the instance's life: a process's environment names it. */
  async link (pending: Set<number>): Promise<number> {
    const port = await allocatePort('127.0.0.1', this.#taken(pending))
    pending.add(port)
    return port
  }

  /** Host ports instances and their links hold, and `pending` ones. */
  #taken (pending: ReadonlySet<number>): Set<number> {
    return new Set([...pending, ...this.#instances.list().flatMap(r => [...r.ports.map(p => p.hostPort), ...r.links.flatMap(l => l.port ?? [])])])
  }
}
