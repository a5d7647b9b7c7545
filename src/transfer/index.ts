/**
 * @packageDocumentation
 * Content-addressed transfer between hosts over libp2p streams: a host serves the blobs it
 * holds, and fetches the ones it lacks from a peer that advertises them, verifying every byte
 * against the digest before keeping it.
 *
 * @example
 * ```ts
 * await serveBlobs(node, blobStore, log)
 * await fetchBlob(node, peerId, 'sha256:…', blobStore, maxBytes, p => { bar.update(p.received / p.size) })
 * ```
 */
export { serveBlobs, fetchBlob, BLOB_PROTOCOL, type BlobSource, type BlobSink, type FetchProgress } from './blobs.ts'
