import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { UnsignedAdvert } from '../../src/core/index.ts'

/** A host key and a ready-to-sign template advert from it, for advert tests. */
export async function hostKey (): Promise<{ key: PrivateKey, id: string }> {
  const key = await generateKeyPair('Ed25519')
  return { key, id: peerIdFromPrivateKey(key).toString() }
}

export function templateAdvert (host: string, over: Partial<UnsignedAdvert> = {}, now = Date.now()): UnsignedAdvert {
  return {
    v: 1,
    kind: 'template',
    id: `sha256:${'a'.repeat(64)}`,
    host,
    seq: 0,
    issuedAt: now,
    expiresAt: now + 30_000,
    body: { name: 'forged', version: '1', driver: 'process', tags: { kind: 'web' }, resources: { cpu: 0.1, memory: 64 }, ports: [] },
    ...over,
  } as UnsignedAdvert
}
