/**
 * @packageDocumentation
 * A host's durable state in SQLite (`node:sqlite`, WAL, synchronous writes): the templates it
 * holds and the instances it runs. A crash at any moment leaves every row either before or after
 * a change.
 *
 * @example
 * ```ts
 * const store = openStore('/var/lib/xenos/state.db')
 * store.templates.list()
 * store.close()
 * ```
 */
import { openDatabase, openLightConnection, transaction, type Database } from './database.ts'
import { DataTable } from './data.ts'
import { DeploymentTable } from './deployments.ts'
import { DiskExportTable } from './disk-exports.ts'
import { ForwardTable } from './forwards.ts'
import { InstanceTable } from './instances.ts'
import { LedgerTable } from './ledger.ts'
import { BidTable } from './bids.ts'
import { BudgetTable } from './budgets.ts'
import { SettingsTable } from './settings.ts'
import { SnapshotTable } from './snapshots.ts'
import { NameTable } from './names.ts'
import { NonceTable } from './nonces.ts'
import { BlobClaimTable } from './blob-claims.ts'
import { TaskTable } from './tasks.ts'
import { TemplateTable } from './templates.ts'

export { writeFileAtomic, renameDurably } from './files.ts'
export { loadOrCreateOwnerKey, loadOrCreateOwnerKeySync, readOwnerKeySync } from './keys.ts'
export type { InstanceRecord, InstanceChange, InstanceLink, RemoteDisk } from './instances.ts'
export type { DiskExportRecord } from './disk-exports.ts'
export { waitingComponent, type ComponentRecord, type DeploymentRecord, type DeploymentState, type DeploymentTable, type EarlierDescription, type PlacedInstance } from './deployments.ts'
export type { ForwardRecord } from './forwards.ts'
export type { DataFileRecord, DataGrantRecord, DataRights, DataUploadRecord } from './data.ts'
export type { SnapshotRecord } from './snapshots.ts'
export type { TaskChange, TaskRecord } from './tasks.ts'
export type { NameRow } from './names.ts'
export type { LedgerTable } from './ledger.ts'
export type { BidTable, BidRecord, PayoutRecord } from './bids.ts'
export type { BudgetTable, BudgetRecord, BudgetPaymentRecord } from './budgets.ts'
export type { BlobClaimRecord } from './blob-claims.ts'

export interface Store {
  templates: TemplateTable
  instances: InstanceTable
  snapshots: SnapshotTable
  names: NameTable
  diskExports: DiskExportTable
  data: DataTable
  tasks: TaskTable
  deployments: DeploymentTable
  forwards: ForwardTable
  settings: SettingsTable
  nonces: NonceTable
  blobClaims: BlobClaimTable
  ledger: LedgerTable
  bids: BidTable
  budgets: BudgetTable
  transaction: <T>(fn: () => T) => T
  close: () => void
}

export function openStore (path: string): Store {
  const db: Database = openDatabase(path)
  const light = openLightConnection(path, db)
  return {
    templates: new TemplateTable(db),
    instances: new InstanceTable(db),
    snapshots: new SnapshotTable(db),
    names: new NameTable(db),
    diskExports: new DiskExportTable(db),
    data: new DataTable(db),
    tasks: new TaskTable(db),
    deployments: new DeploymentTable(db),
    forwards: new ForwardTable(db),
    settings: new SettingsTable(db),
    nonces: new NonceTable(light),
    blobClaims: new BlobClaimTable(db),
    ledger: new LedgerTable(db),
    bids: new BidTable(db),
    budgets: new BudgetTable(db),
    transaction: fn => transaction(db, fn),
    close: () => {
      if (light !== db) light.close()
      db.close()
    },
  }
}
