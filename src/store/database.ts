import { chmodSync } from 'node:fs'
import { DatabaseSync } from 'node:sqlite'

/**
 * Schema migrations, applied in order; `PRAGMA user_version` records how many ran. Never edit a
 * migration that has shipped: append a new one.
 */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE templates (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     version TEXT NOT NULL,
     manifest TEXT NOT NULL,
     imported_at INTEGER NOT NULL
   );
   CREATE INDEX templates_name ON templates(name, version);
   CREATE TABLE instances (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     template_id TEXT NOT NULL REFERENCES templates(id),
     owner TEXT NOT NULL,
     state TEXT NOT NULL,
     driver TEXT NOT NULL,
     handle TEXT,
     ports TEXT NOT NULL,
     resources TEXT NOT NULL,
     error TEXT,
     created_at INTEGER NOT NULL,
     updated_at INTEGER NOT NULL
   );
   CREATE INDEX instances_owner ON instances(owner);`,
  `CREATE TABLE snapshots (
     id TEXT PRIMARY KEY,
     instance_id TEXT NOT NULL,
     template_id TEXT NOT NULL REFERENCES templates(id),
     owner TEXT NOT NULL,
     created_at INTEGER NOT NULL
   );`,
  `CREATE TABLE names (
     owner TEXT NOT NULL,
     name TEXT NOT NULL,
     tag TEXT NOT NULL,
     kind TEXT NOT NULL,
     template TEXT NOT NULL,
     seq INTEGER NOT NULL,
     record TEXT NOT NULL,
     PRIMARY KEY (owner, name, tag)
   );`,
  `ALTER TABLE instances ADD COLUMN remote_disk TEXT;
   CREATE TABLE disk_exports (
     instance_id TEXT PRIMARY KEY,
     owner TEXT NOT NULL,
     peer TEXT NOT NULL,
     token TEXT NOT NULL,
     server TEXT NOT NULL,
     created_at INTEGER NOT NULL
   );`,
  `CREATE TABLE data_files (
     owner TEXT NOT NULL,
     path TEXT NOT NULL,
     blob TEXT NOT NULL,
     size INTEGER NOT NULL,
     sha256 TEXT NOT NULL,
     updated_at INTEGER NOT NULL,
     PRIMARY KEY (owner, path)
   );
   CREATE TABLE data_uploads (
     id TEXT PRIMARY KEY,
     owner TEXT NOT NULL,
     path TEXT NOT NULL,
     size INTEGER NOT NULL,
     sha256 TEXT NOT NULL,
     created_at INTEGER NOT NULL
   );
   CREATE TABLE data_grants (
     owner TEXT NOT NULL,
     grantee TEXT NOT NULL,
     rights TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     PRIMARY KEY (owner, grantee)
   );`,
  `ALTER TABLE instances ADD COLUMN exit_code INTEGER;
   CREATE TABLE tasks (
     id TEXT PRIMARY KEY,
     owner TEXT NOT NULL,
     template_id TEXT NOT NULL,
     inputs TEXT NOT NULL,
     outputs_prefix TEXT NOT NULL,
     keep INTEGER NOT NULL,
     state TEXT NOT NULL,
     exit_code INTEGER,
     error TEXT,
     outputs TEXT NOT NULL,
     refused TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     collecting_at INTEGER,
     ended_at INTEGER
   );
   CREATE INDEX tasks_owner ON tasks(owner, created_at);`,
  `CREATE TABLE forwards (
     instance_id TEXT PRIMARY KEY,
     to_host TEXT NOT NULL,
     ports TEXT NOT NULL,
     until INTEGER NOT NULL
   );
   CREATE TABLE settings (
     key TEXT PRIMARY KEY,
     value TEXT NOT NULL
   );`,
  // A disk may be served to more than one host while its instance moves on from one to the next.
  `CREATE TABLE disk_exports_by_peer (
     instance_id TEXT NOT NULL,
     owner TEXT NOT NULL,
     peer TEXT NOT NULL,
     token TEXT NOT NULL,
     server TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     PRIMARY KEY (instance_id, peer)
   );
   INSERT INTO disk_exports_by_peer SELECT instance_id, owner, peer, token, server, created_at FROM disk_exports;
   DROP TABLE disk_exports;
   ALTER TABLE disk_exports_by_peer RENAME TO disk_exports;`,
  // Signed requests already used; what placed each instance here; who imported each template and
  // who uploaded the image files of templates still to come; when each name's template was last seen.
  `CREATE TABLE nonces (
     key TEXT PRIMARY KEY,
     expires_at INTEGER NOT NULL
   );
   CREATE INDEX nonces_expiry ON nonces(expires_at);
   ALTER TABLE instances ADD COLUMN placement TEXT;
   ALTER TABLE templates ADD COLUMN owner TEXT;
   CREATE TABLE blob_claims (
     owner TEXT NOT NULL,
     blob TEXT NOT NULL,
     size INTEGER NOT NULL,
     created_at INTEGER NOT NULL,
     PRIMARY KEY (owner, blob)
   );
   ALTER TABLE names ADD COLUMN seen_at INTEGER NOT NULL DEFAULT 0;`,
  // The services each instance reaches at an address its host sets up.
  `ALTER TABLE instances ADD COLUMN links TEXT NOT NULL DEFAULT '[]';`,
  // The environment a deploy gives each instance, over its template's.
  `ALTER TABLE instances ADD COLUMN env TEXT NOT NULL DEFAULT '{}';`,
  // The deployments (descriptions) a host supervises.
  `CREATE TABLE deployments (
     owner TEXT NOT NULL,
     name TEXT NOT NULL,
     text TEXT NOT NULL,
     grant TEXT NOT NULL,
     state TEXT NOT NULL,
     components TEXT NOT NULL,
     error TEXT,
     created_at INTEGER NOT NULL,
     updated_at INTEGER NOT NULL,
     PRIMARY KEY (owner, name)
   );`,
  // Deployments are held by several supervisors: which one acts, since which takeover.
  `ALTER TABLE deployments ADD COLUMN acting TEXT NOT NULL DEFAULT '';
   ALTER TABLE deployments ADD COLUMN term INTEGER NOT NULL DEFAULT 0;`,
  // Descriptions a deployment ran before an update, which some of its instances still run under.
  `ALTER TABLE deployments ADD COLUMN earlier TEXT NOT NULL DEFAULT '[]';`,
  // Tasks a deployment's supervisor placed: under which place, and whether their outputs go with them.
  `ALTER TABLE tasks ADD COLUMN placed TEXT;`,
  // A bank's ledger, chained entry by entry, and the balances it leads to (written together).
  `CREATE TABLE ledger (
     seq INTEGER PRIMARY KEY,
     kind TEXT NOT NULL,
     from_account TEXT NOT NULL,
     to_account TEXT NOT NULL,
     amount INTEGER NOT NULL CHECK (amount > 0),
     nonce TEXT NOT NULL,
     order_json TEXT,
     at INTEGER NOT NULL,
     prev TEXT NOT NULL,
     hash TEXT NOT NULL,
     UNIQUE (from_account, nonce)
   );
   CREATE INDEX ledger_to ON ledger(to_account, seq);
   CREATE TABLE balances (
     account TEXT PRIMARY KEY,
     balance INTEGER NOT NULL
   );`,
  // A host's market: the bid on each instance, the receipts that paid for bids (each spent once),
  // and what the host's escrow owes (refunds, earnings) until the bank has carried it out.
  `CREATE TABLE bids (
     instance_id TEXT PRIMARY KEY,
     owner TEXT NOT NULL,
     bank TEXT NOT NULL,
     paid INTEGER NOT NULL CHECK (paid >= 0),
     charged INTEGER NOT NULL CHECK (charged >= 0 AND charged <= paid),
     charged_to INTEGER NOT NULL,
     until INTEGER NOT NULL,
     opened_at INTEGER NOT NULL
   );
   CREATE TABLE bid_receipts (
     bank TEXT NOT NULL,
     seq INTEGER NOT NULL,
     instance_id TEXT NOT NULL,
     amount INTEGER NOT NULL,
     at INTEGER NOT NULL,
     PRIMARY KEY (bank, seq)
   );
   CREATE TABLE payouts (
     nonce TEXT PRIMARY KEY,
     bank TEXT NOT NULL,
     to_account TEXT NOT NULL,
     amount INTEGER NOT NULL CHECK (amount > 0),
     memo TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     receipt TEXT
   );`,
  // What each owner's allowance paid (counted in the transaction of each payment under it), and the
  // budgets a host's bidder spends under allowances, with the payments it signed until each is done.
  `ALTER TABLE ledger ADD COLUMN allowance TEXT;
   CREATE INDEX ledger_allowance ON ledger(allowance) WHERE allowance IS NOT NULL;
   CREATE TABLE budgets (
     id TEXT PRIMARY KEY,
     owner TEXT NOT NULL,
     allowance TEXT NOT NULL,
     hosts TEXT NOT NULL,
     state TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     updated_at INTEGER NOT NULL
   );
   CREATE TABLE budget_payments (
     nonce TEXT PRIMARY KEY,
     budget TEXT NOT NULL,
     instance_id TEXT NOT NULL,
     amount INTEGER NOT NULL CHECK (amount > 0),
     seconds INTEGER NOT NULL,
     spend TEXT NOT NULL,
     receipt TEXT,
     state TEXT NOT NULL,
     created_at INTEGER NOT NULL
   );
   CREATE INDEX budget_payments_of ON budget_payments(budget, state);`,
]

export type Database = DatabaseSync

/** A database that lives in memory only (tests). */
export const MEMORY = ':memory:'

/** Opens (creating if needed) the host's database in WAL mode and brings its schema up to date. */
export function openDatabase (path: string): Database {
  const db = new DatabaseSync(path)
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;')
  // Only its host reads it (SQLite creates it as the umask says).
  if (path !== MEMORY) chmodSync(path, 0o600)
  const row = db.prepare('PRAGMA user_version').get() as { user_version: number }
  for (let v = row.user_version; v < MIGRATIONS.length; v++) {
    transaction(db, () => {
      db.exec(MIGRATIONS[v] ?? '')
      db.exec(`PRAGMA user_version = ${v + 1}`)
    })
  }
  return db
}

/** Another connection to the open database `db` at `path`, whose commits do not wait for the disk (see NonceTable). */
export function openLightConnection (path: string, db: Database): Database {
  if (path === MEMORY) return db
  const light = new DatabaseSync(path)
  light.exec('PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;')
  return light
}

/** Runs `fn` in one transaction: all of its writes land, or none do. */
export function transaction<T> (db: Database, fn: () => T): T {
  db.exec('BEGIN IMMEDIATE')
  try {
    const result = fn()
    db.exec('COMMIT')
    return result
  } catch (err) {
    db.exec('ROLLBACK')
    throw err
  }
}
