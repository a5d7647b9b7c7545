/**
 * @packageDocumentation
 * Content-addressed swarm transfer between hosts over libp2p streams: every host serves the
 * chunks it holds (of complete blobs, and of blobs it is still fetching), and a host that lacks a
 * blob fetches its chunks from all the peers that hold them at once, checking each against the
 * blob's index before keeping it.
 *
 * @example
 * ```ts
 * await serveChunks(node, blobStore, log)
 * await swarmFetch({ node, sink: blobStore, blob: 'sha256:…', maxBytes, providers: async () => peerIds, log })
 * ```
 */
export { serveChunks, fetchIndex, fetchHave, fetchChunk, encodeHave, decodeHave, CHUNK_PROTOCOL, type ChunkSource, type ServeOptions } from './protocol.ts'
export { swarmFetch, type ChunkSink, type PartialSink, type SwarmFetchInit, type SwarmProgress, type SwarmResult } from './swarm.ts'
export { Tunnels, TUNNEL_PROTOCOL, type TunnelListener, type TunnelTarget } from './tunnel.ts'
export { dialWithHeader, readHeader, HandshakeRefused, type IncomingHandshake } from './handshake.ts'
export { splice, type SpliceOptions } from './splice.ts'
export { SocketStream } from './socket-stream.ts'
