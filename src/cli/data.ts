import type { Command } from 'commander'
import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { lstat, readdir, rename, rm, stat } from 'node:fs/promises'
import { basename, join, relative, sep } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { checkDataPath, formatDataUri, hashing, isDataUri, parseDataUri, XenosError, type DataFileView, type DataRef, type RequestAuth } from '../core/index.ts'
import type { ApiClient } from './client.ts'
import { counting, progressBar } from './progress.ts'
import { ago, bytes, table } from './table.ts'

/** Files of a directory sent at once: many small files cost round trips more than bytes. */
const PARALLEL_UPLOADS = 8

interface UploadView { id: string, uri: string, size: number, sha256: string, offset: number }
interface GrantView { owner: string, grantee: string, rights: 'read' | 'write', createdAt: number }

export interface DataCommandsInit {
  client: (cmd: Command) => Promise<{ api: ApiClient, flags: { json?: boolean } }>
  out: (flags: { json?: boolean }, json: unknown, human: () => string) => void
  resolveHost: (api: ApiClient, ref: string) => Promise<string>
}

interface CollectView { files: DataFileView[], refused: Array<{ path: string, reason: string }> }
interface InstanceState { id: string, host: string, state: string, error?: string | undefined }
/** How often a task's state is asked while it runs. */
const TASK_POLL_MS = 1000

/** `data://OWNER/PATH`, or a bare PATH in the user's own namespace. */
function refOf (target: string, self: string, allowEmpty = false): DataRef {
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

/** Files of the user's to stage into a deploy's instances, each with the user's signature to read it. */
export function signedInputs (api: ApiClient, targets: string[]): Array<{ uri: string, auth: RequestAuth }> {
  return targets.map(t => {
    const uri = formatDataUri(refOf(t, api.owner))
    return { uri, auth: api.authFor('data.get', uri, {}) }
  })
}

export function registerDataCommands (program: Command, { client, out, resolveHost }: DataCommandsInit): void {
  program.command('run <template>').description('Run a task: a VM of TEMPLATE with your files staged read-only at /in, until it ends; the files it leaves at /out go to your repository under --out, and the VM is destroyed (unless --keep)')
    .option('--in <file>', 'a file of yours (data://me/PATH or PATH) to stage at /in/NAME; repeatable', (v: string, p: string[] | undefined) => [...p ?? [], v])
    .requiredOption('--out <dir>', 'where its outputs go in your repository (data://me/DIR or DIR)')
    .option('--out-size <MiB>', 'size of the disk it writes its outputs on', Number, 1024)
    .option('--host <host>', 'host to run it on (default: the one with most room)')
    .option('--keep', 'keep the ended VM, for inspection')
    .action(async (ref: string, o: { in?: string[], out: string, outSize: number, host?: string, keep?: boolean }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const dest = refOf(o.out, api.owner)
      if (dest.owner !== api.owner) throw new XenosError('FORBIDDEN', `a task's outputs go to your own repository (data://me/…), not to ${formatDataUri(dest)}`)
      if (!Number.isInteger(o.outSize) || o.outSize < 1 || o.outSize > 2 ** 20) throw new XenosError('INVALID_ARGUMENT', '--out-size must be a whole number of MiB from 1 to 1048576')
      const t = await api.template<{ id: string, name: string, version: string }>(ref)
      const params = {
        hosts: o.host === undefined ? null : [await resolveHost(api, o.host)],
        count: 1,
        name: null,
        outputBytes: o.outSize * 2 ** 20,
        ...(o.in === undefined ? {} : { inputs: signedInputs(api, o.in) }),
      }
      process.stderr.write(`starting ${t.name}:${t.version}${o.in === undefined ? '' : ` with ${o.in.length} input(s)`}…\n`)
      const started = (await api.deploy(t.id, params)).instances[0]
      if (started === undefined) throw new XenosError('NO_HOST_AVAILABLE', 'the task did not start')
      process.stderr.write(`task ${started.id} runs on ${started.host.slice(-8)}; waiting for it to end…\n`)
      let v: InstanceState = started
      while (!['exited', 'failed', 'stopped'].includes(v.state)) {
        await sleep(TASK_POLL_MS)
        v = await api.get<InstanceState>(`/v1/instances/${encodeURIComponent(started.id)}`)
      }
      process.stderr.write(`task ${v.id} ${v.state}; collecting its outputs…\n`)
      const collected = await api.signed<CollectView>('POST', `/v1/instances/${encodeURIComponent(v.id)}/collect`, 'collect', v.id, { prefix: dest.path }, { prefix: dest.path })
      if (o.keep !== true) await api.signed('POST', `/v1/instances/${encodeURIComponent(v.id)}/destroy`, 'destroy', v.id, {})
      const result = { instance: v.id, host: v.host, state: v.state, ...(v.error === undefined ? {} : { error: v.error }), outputs: collected.files, refused: collected.refused }
      out(flags, result, () => [
        `task ${v.id} ${v.state}${v.error === undefined ? '' : `: ${v.error}`}`,
        collected.files.length === 0 ? 'no outputs' : table(['OUTPUT', 'SIZE', 'SHA256'], collected.files.map(f => [f.uri, bytes(f.size), f.sha256.slice(0, 16)])),
        ...collected.refused.map(r => `refused ${r.path}: ${r.reason}`),
      ].join('\n'))
      if (v.state !== 'exited') process.exitCode = 1
    })

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
