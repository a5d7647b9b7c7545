import { DescriptionError } from './errors.ts'
import { join, type SourceNode } from './source.ts'

type MapNode = Extract<SourceNode, { kind: 'map' }>

/**
 * Applies SmartFrog's `extends`: a component (or prototype) that extends prototype P is P's body,
 * itself resolved, deep-merged with its own (maps merge key by key, the extending side's
 * scalars and lists replace). Chains work; a cycle is an error. Returns the tree without
 * `prototypes`.
 */
export function applyPrototypes (root: MapNode): MapNode {
  const prototypes = root.entries.get('prototypes')
  if (prototypes !== undefined && prototypes.kind !== 'map') throw new DescriptionError('prototypes is a map of names to component bodies', prototypes.at, 'prototypes')
  const resolved = new Map<string, MapNode>()

  const prototype = (name: string, from: SourceNode, path: string, chain: string[]): MapNode => {
    const done = resolved.get(name)
    if (done !== undefined) return done
    if (chain.includes(name)) throw new DescriptionError(`extends makes a cycle: ${[...chain, name].join(' → ')}`, from.at, path)
    const body = prototypes?.entries.get(name)
    if (body === undefined) throw new DescriptionError(`no prototype "${name}"${prototypes === undefined ? '' : ` (prototypes: ${[...prototypes.entries.keys()].join(', ')})`}`, from.at, path)
    if (body.kind !== 'map') throw new DescriptionError('a prototype is a map of attributes', body.at, join('prototypes', name))
    const out = extend(body, join('prototypes', name), [...chain, name])
    resolved.set(name, out)
    return out
  }

  /** `node` with what it extends merged under it (its own `extends` gone). */
  const extend = (node: MapNode, path: string, chain: string[]): MapNode => {
    const base = node.entries.get('extends')
    if (base === undefined) return node
    if (base.kind !== 'scalar' || typeof base.value !== 'string') throw new DescriptionError('extends names one prototype', base.at, join(path, 'extends'))
    const own = new Map(node.entries)
    own.delete('extends')
    return merge(prototype(base.value, base, join(path, 'extends'), chain), { ...node, entries: own })
  }

  /** Every component under `node`'s `components`, extended, and theirs in turn. */
  const components = (node: MapNode, path: string): MapNode => {
    const children = node.entries.get('components')
    if (children?.kind !== 'map') return node
    const entries = new Map<string, SourceNode>()
    for (const [name, child] of children.entries) {
      const at = join(join(path, 'components'), name)
      entries.set(name, child.kind === 'map' ? components(extend(child, at, []), at) : child)
    }
    return { ...node, entries: new Map(node.entries).set('components', { ...children, entries }) }
  }

  const entries = new Map(root.entries)
  entries.delete('prototypes')
  return components({ ...root, entries }, '')
}

/** `over` deep-merged onto `base`: maps key by key; anything else from `over` replaces. */
function merge (base: MapNode, over: MapNode): MapNode {
  const entries = new Map(base.entries)
  for (const [key, value] of over.entries) {
    const under = entries.get(key)
    entries.set(key, under?.kind === 'map' && value.kind === 'map' ? merge(under, value) : value)
  }
  return { kind: 'map', entries, at: over.at, keys: new Map([...base.keys, ...over.keys]) }
}
