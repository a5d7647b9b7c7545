import type { Command } from 'commander'
import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { lstat, readdir, rename, rm, stat } from 'node:fs/promises'
import { basename, join, relative, sep } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { checkDataPath, formatDataUri, hashing, isDataUri, MAX_STAGED_FILES, parseDataUri, XenosError, type DataFileView, type DataRef, type DeploySpec } from '../core/index.ts'
import type { ApiClient } from './client.ts'
import { client, out } from './command.ts'
import { counting, progressBar } from './progress.ts'
import { ago, bytes, table } from './table.ts'

/** Files of a directory sent at once: many small files cost round trips more than bytes. */
const PARALLEL_UPLOADS = 8

interface UploadView { id: string, uri: string, size: number, sha256: string, offset: number }
interface GrantView { owner: string, grantee: string, rights: 'read' | 'write', createdAt: number }

/** `data://OWNER/PATH`, or a bare PATH in the user's own namespace. */
export function refOf (target: string, self: string, allowEmpty = false): DataRef {
  if (isDataUri(target)) return parseDataUri(target, self, allowEmpty)
  return { owner: self, path: checkDataPath(target.replace(/\/$/, ''), allowEmpty) }
}

async function sha256Of (file: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const piece of createReadStream(file)) hash.update(piece as Buffer)
  return hash.digest('hex')
}

/**
 * The regular files under `dir`, relative to it with `/` between segments. A link anywhere
 * (or a device, a socket…) stops the walk: an upload holds only what is really under the directory.
 */
async function filesUnder (dir: string): Promise<string[]> {
  const out: string[] = []
  const walk = async (d: string): Promise<void> => {
    for (const entry of await readdir(d, { withFileTypes: true })) {
      const full = join(d, entry.name)
      if (entry.isDirectory()) await walk(full)
      else if (entry.isFile()) out.push(relative(dir, full).split(sep).join('/'))
      else throw new XenosError('INVALID_ARGUMENT', `${full} is ${entry.isSymbolicLink() ? 'a symbolic link' : 'not a regular file'}: an upload takes only regular files and directories`)
    }
  }
  await walk(dir)
  return out.sort()
}

/** Uploads one file, resuming an upload of the same content under way; shows progress unless `quiet`. */
async function putFile (api: ApiClient, file: string, ref: DataRef, quiet: boolean): Promise<DataFileView> {
  const { size } = await stat(file)
  const sha256 = await sha256Of(file)
  const uri = formatDataUri(ref)
  let up = await api.signed<UploadView>('POST', '/v1/data/uploads', 'data.put', uri, { size, sha256 }, { uri, size, sha256 })
  if (up.offset < size) {
    const bar = quiet ? undefined : progressBar(`put ${ref.path}`, size)
    if (up.offset > 0 && !quiet) process.stderr.write(`resuming at ${bytes(up.offset)}\n`)
    const from = up.offset
    try {
      up = await api.signedUpload<UploadView>(`/v1/data/uploads/${up.id}?offset=${from}`, 'data.upload', up.id, { offset: from },
        counting(createReadStream(file, { start: from }), n => bar?.update(from + n)))
    } finally {
      bar?.stop()
    }
  }
  return await api.signed<DataFileView>('POST', `/v1/data/uploads/${up.id}/complete`, 'data.complete', up.id, {})
}

/**
 * Files and directories to stage into a deploy's instances (each host of the deploy gets the
 * user's signature to read them). A name is a directory when the host the CLI talks to lists
 * files under it (a trailing slash insists); the host that stages it then reads each of those
 * files, wherever it is held.
 */
export async function stagedInputs (api: ApiClient, targets: string[]): Promise<NonNullable<DeploySpec['inputs']>> {
  return await Promise.all(targets.map(async target => {
    const ref = refOf(target, api.owner)
    const uri = formatDataUri(ref)
    const { files } = await api.signed<{ files: DataFileView[] }>('GET', `/v1/data/files?uri=${encodeURIComponent(uri)}&limit=${MAX_STAGED_FILES + 1}`, 'data.list', uri, {})
      // Another owner's files may be readable with a grant held on another host only.
      .catch((err: unknown) => { if (err instanceof XenosError && err.code === 'FORBIDDEN') return { files: [] }; throw err })
    const under = files.filter(f => f.path.startsWith(`${ref.path}/`)).map(f => f.path.slice(ref.path.length + 1))
    if (target.endsWith('/') && under.length === 0) throw new XenosError('DATA_NOT_FOUND', `there are no files under ${uri}/ on this host: list them with "xenos data ls ${uri}"`)
    if (under.length === 0 || files.some(f => f.path === ref.path)) return { uri }
    if (under.length > MAX_STAGED_FILES) throw new XenosError('INVALID_ARGUMENT', `${uri}/ holds more than ${MAX_STAGED_FILES} files: stage an archive of them, or a smaller directory`)
    return { uri, files: under }
  }))
}

export function registerDataCommands (program: Command): void {
  const data = program.command('data').description('Your files in the data repository (data://me/PATH): put, get, list, delete, and grant other keys access')

  data.command('put <source> <target>').description('Upload a file, or a directory\'s files under TARGET/, to the host the CLI talks to; run it again to resume a broken upload')
    .action(async (source: string, target: string, _o, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const base = refOf(target, api.owner)
      const info = await lstat(source)
      if (info.isFile()) {
        const file = await putFile(api, source, base, false)
        out(flags, file, () => `${file.uri} ${bytes(file.size)} sha256 ${file.sha256}`)
        return
      }
      if (!info.isDirectory()) throw new XenosError('INVALID_ARGUMENT', `${source} is neither a regular file nor a directory`)
      const files = await filesUnder(source)
      // Every name is checked before anything is sent.
      const refs = files.map(f => ({ owner: base.owner, path: checkDataPath(`${base.path}/${f}`) }))
      const bar = progressBar(`put ${files.length} files`, files.length)
      const done: DataFileView[] = []
      let next = 0
      const worker = async (): Promise<void> => {
        for (let i = next++; i < files.length; i = next++) {
          done.push(await putFile(api, join(source, files[i] ?? ''), refs[i] ?? base, true))
          bar.update(done.length)
        }
      }
      try {
        await Promise.all(Array.from({ length: Math.min(PARALLEL_UPLOADS, files.length) }, worker))
      } finally {
        bar.stop()
      }
      done.sort((x, y) => x.path < y.path ? -1 : 1)
      out(flags, { files: done }, () => `${done.length} files under ${formatDataUri(base)}/, ${bytes(done.reduce((n, f) => n + f.size, 0))}`)
    })

  data.command('get <target> [file]').description('Download a file (to FILE, "-" for standard output; default: its name here), checked against its SHA-256')
    .action(async (target: string, file: string | undefined, _o, cmd: Command) => {
      const { api } = await client(cmd)
      const ref = refOf(target, api.owner)
      const uri = formatDataUri(ref)
      const res = await api.signedDownload(`/v1/data/file?uri=${encodeURIComponent(uri)}`, 'data.get', uri, {})
      const size = Number(res.headers.get('content-length') ?? 0)
      const expected = res.headers.get('x-xenos-sha256') ?? ''
      const hash = createHash('sha256')
      const dest = file ?? basename(ref.path)
      const bar = dest === '-' ? undefined : progressBar(`get ${ref.path}`, size)
      // Written aside and moved into place only once whole and verified.
      const part = `${dest}.part`
      try {
        await pipeline(Readable.from(hashing(counting(res.body, n => bar?.update(n)), hash)), dest === '-' ? process.stdout : createWriteStream(part))
        const got = hash.digest('hex')
        if (got !== expected) throw new XenosError('PEER_PROTOCOL', `${uri} arrived with SHA-256 ${got}, not ${expected}: get it again`)
        if (dest !== '-') await rename(part, dest)
      } catch (err) {
        if (dest !== '-') await rm(part, { force: true })
        throw err
      } finally {
        bar?.stop()
      }
    })

  data.command('ls [target]').description('List your files (or another owner\'s that it granted you), under a directory if given')
    .option('--limit <n>', 'at most this many', Number, 10_000)
    .action(async (target: string | undefined, o: { limit: number }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const ref = refOf(target ?? `data://${api.owner}/`, api.owner, true)
      const uri = formatDataUri(ref)
      const { files } = await api.signed<{ files: DataFileView[] }>('GET', `/v1/data/files?uri=${encodeURIComponent(uri)}&limit=${o.limit}`, 'data.list', uri, {})
      out(flags, files, () => files.length === 0 ? `no files under ${uri}` : table(['PATH', 'SIZE', 'UPDATED', 'SHA256'], files.map(f => [f.path, bytes(f.size), ago(f.updatedAt), f.sha256.slice(0, 16)])))
    })

  data.command('rm <target>').description('Delete a file').action(async (target: string, _o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    const uri = formatDataUri(refOf(target, api.owner))
    await api.signed('DELETE', `/v1/data/file?uri=${encodeURIComponent(uri)}`, 'data.delete', uri, {})
    out(flags, { deleted: uri }, () => `deleted ${uri}`)
  })

  data.command('grant <key>').description('Let another owner id read your files on this host (with --write, also write and delete them); put "--" before an id that starts with "-"')
    .option('--write', 'also let it write and delete')
    .action(async (key: string, o: { write?: boolean }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const body = { grantee: key, rights: o.write === true ? 'write' : 'read' }
      const g = await api.signed<GrantView>('PUT', '/v1/data/grants', 'data.grant', `data://${api.owner}`, body, body)
      out(flags, g, () => `${g.grantee} may now ${g.rights} your data on this host`)
    })

  data.command('revoke <key>').description('Take back a grant; put "--" before an id that starts with "-"').action(async (key: string, _o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    await api.signed('DELETE', `/v1/data/grants/${encodeURIComponent(key)}`, 'data.revoke', `data://${api.owner}`, { grantee: key })
    out(flags, { revoked: key }, () => `${key} may no longer reach your data on this host`)
  })

  data.command('grants').description('The keys you granted access to your data on this host').action(async (_o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    const { grants } = await api.signed<{ grants: GrantView[] }>('GET', '/v1/data/grants', 'data.grants', `data://${api.owner}`, {})
    out(flags, grants, () => grants.length === 0 ? 'no grants' : table(['KEY', 'RIGHTS', 'SINCE'], grants.map(g => [g.grantee, g.rights, ago(g.createdAt)])))
  })
}
