/**
 * @packageDocumentation
 * The data repository: owners' files (`data://OWNER/PATH`) on a host, uploaded resumably and
 * verified, read back or listed only by their owner and the keys it granted.
 *
 * @example
 * ```ts
 * const repo = new DataRepository({ store, blobs, uploadsDir, quota: (owner, bytes, what) => {}, hostId, onStored, onRemoved })
 * const up = await repo.startUpload(me, me, 'inputs/video.mp4', size, sha256)
 * await repo.write(me, up.id, 0, createReadStream('video.mp4'))
 * await repo.complete(me, up.id)
 * ```
 */
export { DataRepository, type ContentStore, type DataContent, type DataRepositoryInit, type DataUploadView } from './repository.ts'
export { buildInputImage, type StagedFile } from './stage.ts'
export { collectOutputs, createEmptyImage, createOutputImage, type Collected, type CollectedFile } from './collect.ts'
