import type { Database } from './database.ts'

/** An instance that moved away: until `until`, this host points its clients to `to` and forwards its old ports there. */
export interface ForwardRecord {
  instanceId: string
  to: string
  ports: Array<{ name: string, address: string, port: number }>
  until: number
}

interface ForwardRow { instance_id: string, to_host: string, ports: string, until: number }

/** The moved-away instances a host still answers for, so that a restart keeps forwarding them. */
export class ForwardTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  put (f: ForwardRecord): void {
    this.#db.prepare('INSERT OR REPLACE INTO forwards (instance_id, to_host, ports, until) VALUES (?, ?, ?, ?)').run(f.instanceId, f.to, JSON.stringify(f.ports), f.until)
  }

  list (): ForwardRecord[] {
    return (this.#db.prepare('SELECT * FROM forwards ORDER BY until').all() as unknown as ForwardRow[])
      .map(r => ({ instanceId: r.instance_id, to: r.to_host, ports: JSON.parse(r.ports) as ForwardRecord['ports'], until: r.until }))
  }

  remove (instanceId: string): void {
    this.#db.prepare('DELETE FROM forwards WHERE instance_id = ?').run(instanceId)
  }
}
