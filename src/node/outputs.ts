import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { checkDataPath, collectResultSchema, instanceIdSchema, requestAuthSchema, XenosError, type CollectResult, type DataFileView, type RequestAuth } from '../core/index.ts'
import { collectOutputs, type DataRepository } from '../data/index.ts'
import type { Overlay } from '../overlay/index.ts'
import { callHost } from './remote.ts'
import type { RequestVerifier } from './replay.ts'
import type { InstanceSupervisor } from './instances/index.ts'

export interface OutputsInit {
  overlay: Pick<Overlay, 'peerId' | 'rpc' | 'learnHost'>
  supervisor: Pick<InstanceSupervisor, 'view' | 'withOutputs'>
  repository: Pick<DataRepository, 'storeLocal'>
  verifier: RequestVerifier
  /** Where outputs are copied out before they are stored. */
  workDir: string
}

const prefixSchema = z.string().min(1).max(1024)
const collectRequestSchema = z.strictObject({ id: instanceIdSchema, prefix: prefixSchema, auth: requestAuthSchema })

/**
 * Stage-out: once an instance with an outputs disk has ended, the files it left at /out go into
 * its owner's repository under a prefix, on the host that ran it (signed by the owner).
 */
export class Outputs {
  readonly #init: OutputsInit

  constructor (init: OutputsInit) {
    this.#init = init
  }

  serve (): void {
    this.#init.overlay.rpc.handle('instance.collect', collectRequestSchema, async req => await this.#collectHere(req.id, req.prefix, req.auth))
  }

  async collect (id: string, prefix: string, auth: RequestAuth): Promise<CollectResult> {
    if (auth.host === this.#init.overlay.peerId) return await this.#collectHere(id, prefix, auth)
    return collectResultSchema.parse(await callHost(this.#init.overlay, auth.host, 'instance.collect', { id, prefix, auth }, 30 * 60_000))
  }

  async #collectHere (id: string, prefix: string, auth: RequestAuth): Promise<CollectResult> {
    const who = this.#init.verifier.verify(auth, { action: 'collect', target: id, params: { prefix } })
    if (this.#init.supervisor.view(id).owner !== who) throw new XenosError('FORBIDDEN', `instance ${id} belongs to another owner; only its owner may collect its outputs`)
    return await this.store(id, prefix)
  }

  /** Stores the outputs of instance `id` (held here, ended) under `prefix` in its owner's namespace. */
  async store (id: string, prefix: string): Promise<CollectResult> {
    checkDataPath(prefix)
    return await this.#init.supervisor.withOutputs(id, async (image, owner) => {
      await mkdir(this.#init.workDir, { recursive: true })
      const work = await mkdtemp(join(this.#init.workDir, 'collect-'))
      try {
        const found = await collectOutputs(image, work)
        const files: DataFileView[] = []
        for (const f of found.files) files.push(await this.#init.repository.storeLocal(owner, owner, `${prefix}/${f.path}`, f.file, f.size))
        return { files, refused: found.refused }
      } finally {
        await rm(work, { recursive: true, force: true })
      }
    })
  }
}
