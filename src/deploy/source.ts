import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node as YamlNode } from 'yaml'
import { DescriptionError, type Position } from './errors.ts'

/** A description's tree as written, each node with where it was written (values from a prototype keep the prototype's place). */
export type SourceNode =
  | { kind: 'map', entries: Map<string, SourceNode>, at: Position, keys: Map<string, Position> }
  | { kind: 'list', items: SourceNode[], at: Position }
  | { kind: 'scalar', value: string | number | boolean | null, at: Position }

/** Descriptions are small: a larger file is a mistake. */
export const MAX_DESCRIPTION_BYTES = 256 * 1024

/** Parses YAML text into a tree with positions; refuses anchors, tags and keys that are not plain strings. */
export function parseSource (text: string, file: string): SourceNode {
  if (Buffer.byteLength(text) > MAX_DESCRIPTION_BYTES) throw new DescriptionError(`the description is larger than ${MAX_DESCRIPTION_BYTES / 1024} KiB`, { file, line: 1, col: 1 }, '')
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false })
  const positionOf = (offset: number | undefined): Position => ({ file, ...lineCounter.linePos(offset ?? 0) })
  const problem = doc.errors[0]
  if (problem !== undefined) throw new DescriptionError(problem.message.split('\n')[0] ?? 'bad YAML', positionOf(problem.pos[0]), '')
  const convert = (node: unknown, path: string): SourceNode => {
    const yamlNode = node as YamlNode | null
    const at = positionOf(yamlNode?.range?.[0])
    if (yamlNode === null) return { kind: 'scalar', value: null, at }
    if (yamlNode.tag !== undefined && !yamlNode.tag.startsWith('tag:yaml.org,2002:')) throw new DescriptionError(`tag ${yamlNode.tag} is not part of the language`, at, path)
    if (isMap(yamlNode)) {
      const entries = new Map<string, SourceNode>()
      const keys = new Map<string, Position>()
      for (const pair of yamlNode.items) {
        const key = pair.key
        if (!isScalar(key) || typeof key.value !== 'string') throw new DescriptionError('every key is a plain name', positionOf((key as YamlNode | null)?.range?.[0]), path)
        entries.set(key.value, convert(pair.value, join(path, key.value)))
        keys.set(key.value, positionOf(key.range?.[0]))
      }
      return { kind: 'map', entries, at, keys }
    }
    if (isSeq(yamlNode)) return { kind: 'list', items: yamlNode.items.map((item, i) => convert(item, `${path}[${i}]`)), at }
    if (isScalar(yamlNode)) {
      const value = yamlNode.value
      if (value === null || typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value))) return { kind: 'scalar', value, at }
      throw new DescriptionError('a value is a string, a number, true, false or null', at, path)
    }
    throw new DescriptionError('anchors and aliases are not part of the language: use prototypes and extends', at, path)
  }
  const root = convert(doc.contents, '')
  if (root.kind !== 'map') throw new DescriptionError('a description is a map with name and components', root.at, '')
  return root
}

/** The path of `key` under `path`, as errors name it (`components.workers.env`). */
export function join (path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`
}
