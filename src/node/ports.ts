import { createServer } from 'node:net'

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
