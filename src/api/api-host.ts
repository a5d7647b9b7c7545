import type { Host } from '../node/index.ts'

/**
 * What of a host the API uses: the parts that answer its routes, and of the overlay only what
 * it shows (peers, adverts, counters), not the libp2p node.
 */
export type ApiHost = Pick<Host,
  | 'log' | 'info' | 'verifier' | 'router' | 'catalog' | 'deployer' | 'replicas' | 'deployments' | 'supervisor' | 'migrations' | 'draining'
  | 'library' | 'blobs' | 'names' | 'publishName' | 'templates' | 'fetcher' | 'data' | 'dataAccess' | 'tasks' | 'outputs' | 'services' | 'banking' | 'bidding' | 'bidder' | 'metrics'
> & {
  overlay: Pick<Host['overlay'], 'peerId' | 'search' | 'lookup' | 'lookupName' | 'cache' | 'counters' | 'gossipSubscribers' | 'connectedPeers'>
}
