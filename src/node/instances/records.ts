import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { XenosError, type Driver, type InstanceState, type TaskHandle, type Template } from '../../core/index.ts'
import type { InstanceRecord, Store } from '../../store/index.ts'

/** Marks the directory of an instance still arriving by migration (it names the host it comes from): a restart removes it whole. */
export const INCOMING_MARKER = 'incoming'
/** Marks the directory of an instance being destroyed: a restart finishes the job. */
export const DESTROYING_MARKER = 'destroying'

export interface InstanceRecordsInit {
  store: Pick<Store, 'instances' | 'templates'>
  drivers: ReadonlyMap<string, Driver>
  /** Where instance directories live. */
  instancesDir: string
  hostId: string
  /** Called after every change to an instance; `undefined` record means it is gone. */
  onChange: (id: string, record: InstanceRecord | undefined) => void
}

/**
 * This host's instance records with what they name (template, driver, task handle, directory),
 * each read failing with the error a user should see. Every change goes through `set`, which
 * tells the host.
 */
export class InstanceRecords {
  readonly #init: InstanceRecordsInit

  constructor (init: InstanceRecordsInit) {
    this.#init = init
  }

  get hostId (): string {
    return this.#init.hostId
  }

  get (id: string): InstanceRecord {
    const r = this.#init.store.instances.get(id)
    if (r === undefined) throw new XenosError('INSTANCE_NOT_FOUND', `no instance ${id} on host ${this.#init.hostId}`)
    return r
  }

  find (id: string): InstanceRecord | undefined {
    return this.#init.store.instances.get(id)
  }

  has (id: string): boolean {
    return this.find(id) !== undefined
  }

  list (): InstanceRecord[] {
    return this.#init.store.instances.list()
  }

  set (id: string, change: Parameters<Store['instances']['update']>[1]): void {
    this.#init.onChange(id, this.#init.store.instances.update(id, change))
  }

  /** Tells the host that instances were written or removed outside `set`. */
  changed (id: string, record: InstanceRecord | undefined): void {
    this.#init.onChange(id, record)
  }

  template (r: InstanceRecord): Template {
    const t = this.#init.store.templates.get(r.templateId)
    if (t === undefined) throw new XenosError('TEMPLATE_NOT_FOUND', `template ${r.templateId} of instance ${r.id} is missing on this host`)
    return t
  }

  handle (r: InstanceRecord): TaskHandle {
    if (r.handle === null) throw new XenosError('INVALID_STATE', `instance ${r.id} has no running task`)
    return r.handle
  }

  driverFor (name: string): Driver {
    const driver = this.#init.drivers.get(name)
    if (driver === undefined) throw new XenosError('DRIVER_UNAVAILABLE', `driver "${name}" is not enabled on host ${this.#init.hostId}; start xenosd with --driver ${name}`)
    return driver
  }

  expect (r: InstanceRecord, states: readonly InstanceState[], action: string): void {
    if (!states.includes(r.state)) {
      throw new XenosError('INVALID_STATE', `cannot ${action} instance ${r.id}: it is ${r.state} (${action} needs ${states.join(' or ')})`)
    }
  }

  /** The directory of instance `id`: its disk, console log, staged disks and markers. */
  dir (id: string): string {
    return join(this.#init.instancesDir, id)
  }

  /** The host instance `id` is arriving from by migration; undefined unless it is arriving. */
  arrivingFrom (id: string): string | undefined {
    try {
      return readFileSync(join(this.dir(id), INCOMING_MARKER), 'utf8')
    } catch {
      return undefined
    }
  }

  isArriving (id: string): boolean {
    return existsSync(join(this.dir(id), INCOMING_MARKER))
  }
}
