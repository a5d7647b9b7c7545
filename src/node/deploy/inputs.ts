import { randomBytes } from 'node:crypto'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { checkDataPath, parseDataUri, XenosError, type DeploySpec } from '../../core/index.ts'
import { buildInputImage, type StagedFile } from '../../data/index.ts'
import type { DataAccess, ReadAuthority } from '../data-access.ts'

/** An input as its host stages it: the name (and a directory's files) and what lets the host read it in its owner's stead. */
export type InputToStage = NonNullable<DeploySpec['inputs']>[number] & { authority: ReadAuthority }

export interface InputStagerInit {
  data: Pick<DataAccess, 'content'>
  /** Where the disks of inputs are built, before instances link them. */
  dir: string
}

/** Builds the read-only disks a deploy's instances find their inputs on, at /in. */
export class InputStager {
  readonly #init: InputStagerInit

  constructor (init: InputStagerInit) {
    this.#init = init
  }

  /**
   * Builds the read-only disk of a deploy's inputs: each file, here or fetched from the host that
   * holds it, read with `owner`'s rights (the deploy's signer, who must have signed each input;
   * or the owner of the deployment an instance was placed under, whose description names it).
   */
  async stage (owner: string, inputs: InputToStage[]): Promise<string> {
    const files: StagedFile[] = []
    const held: Array<() => Promise<void>> = []
    try {
      for (const input of inputs) {
        const signer = 'auth' in input.authority ? input.authority.auth.owner : input.authority.placed.place.grant.owner
        if (signer !== owner) throw new XenosError('FORBIDDEN', `input ${input.uri} is signed by another key than the deploy: sign both with the same key`)
        const signed = parseDataUri(input.uri, owner)
        // A file appears at /in/NAME; a directory's files at /in/DIR/… (NAME, DIR: the last segment).
        const name = signed.path.slice(signed.path.lastIndexOf('/') + 1)
        for (const relative of input.files ?? ['']) {
          const ref = relative === '' ? signed : { owner: signed.owner, path: checkDataPath(`${signed.path}/${relative}`) }
          const { file, blobPath, release } = await this.#init.data.content(owner, input.authority, ref, signed)
          held.push(release)
          files.push({ name: relative === '' ? name : `${name}/${relative}`, path: blobPath, size: file.size })
        }
      }
      const image = join(this.#init.dir, `${randomBytes(8).toString('hex')}.img`)
      await mkdir(this.#init.dir, { recursive: true })
      await buildInputImage(files, image)
      return image
    } finally {
      for (const release of held) await release()
    }
  }
}
