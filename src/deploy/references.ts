import { DescriptionError } from './errors.ts'
import { join, type SourceNode } from './source.ts'

type MapNode = Extract<SourceNode, { kind: 'map' }>

/** A value known only once a component runs: its instance's `id`, its `host`, or one of its `endpoints` (the address that follows it). */
export interface RuntimeRef {
  /** The component's path (`master`, `cluster.db`). */
  component: string
  attribute: 'id' | 'host' | 'endpoint'
  /** The endpoint's name; absent: the component's first TCP endpoint. */
  endpoint?: string | undefined
}

/** A string with run-time parts, put together when the components it names run. */
export interface RuntimeValue {
  runtime: Array<string | RuntimeRef>
}

export type Value = string | number | boolean | null | Value[] | { [key: string]: Value } | RuntimeValue

export function isRuntime (v: unknown): v is RuntimeValue {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && Array.isArray((v as { runtime?: unknown }).runtime)
}

/** A component of the tree (the root is the deployment itself), with the path it has as a component and in the tree. */
interface Context {
  node: MapNode
  component: string
  path: string
}

/** What a reference names so far: a component, or a value at a path of the tree. */
type Target = { context: Context } | { path: string }

interface Indexed {
  node: SourceNode
  /** The components that enclose it, the root first. */
  contexts: Context[]
}

const REFERENCE = /\$(\$?)\{([^}]*)\}/g
const PART = /^(?:[A-Za-z_][A-Za-z0-9_-]*|\d+)$/
const RUNTIME_ATTRIBUTES = new Set(['id', 'host', 'endpoints'])

/**
 * Resolves every `${reference}` in the tree, SmartFrog's way: the first part is the nearest
 * component, from the one the value is written in outwards, that has a child component, a value
 * (under `values`) or an attribute of that name (`ROOT`, `PARENT` start at the root, or at the
 * enclosing component's parent); each further part is looked up in what the one before named.
 * A reference that is the whole string keeps its value's type; within a longer string it is
 * written in. What a component is only when it runs (`id`, `host`, `endpoints.NAME`) stays a
 * run-time part. `$${` writes `${`.
 */
export function resolveReferences (root: MapNode): Value {
  const index = new Map<string, Indexed>()
  const contextsByComponent = new Map<string, Context>()
  const walk = (node: SourceNode, path: string, contexts: Context[]): void => {
    index.set(path, { node, contexts })
    if (node.kind === 'map') {
      for (const [key, child] of node.entries) {
        const childPath = join(path, key)
        if (key === 'components' && child.kind === 'map') {
          index.set(childPath, { node: child, contexts })
          for (const [name, component] of child.entries) {
            const componentPath = join(childPath, name)
            const parent = contexts.at(-1)
            if (component.kind !== 'map') {
              walk(component, componentPath, contexts)
              continue
            }
            const context = { node: component, component: join(parent?.component ?? '', name), path: componentPath }
            contextsByComponent.set(componentPath, context)
            walk(component, componentPath, [...contexts, context])
          }
        } else {
          walk(child, childPath, contexts)
        }
      }
    } else if (node.kind === 'list') {
      node.items.forEach((item, i) => { walk(item, `${path}[${i}]`, contexts) })
    }
  }
  const rootContext: Context = { node: root, component: '', path: '' }
  walk(root, '', [rootContext])

  const done = new Map<string, Value>()
  const resolving: string[] = []

  /** The child named `name` of component `c`: a component, a value, or one of its attributes. */
  const inComponent = (c: Context, name: string): Target | undefined => {
    const childPath = join(join(c.path, 'components'), name)
    const child = contextsByComponent.get(childPath)
    if (child !== undefined) return { context: child }
    const values = c.node.entries.get('values')
    if (values?.kind === 'map' && values.entries.has(name)) return { path: join(join(c.path, 'values'), name) }
    if (name !== 'components' && name !== 'values' && c.node.entries.has(name)) return { path: join(c.path, name) }
    return undefined
  }

  const reference = (text: string, at: Indexed, path: string): Value => {
    const parts = text.split('.')
    if (parts.some(p => !PART.test(p))) throw new DescriptionError(`\${${text}} is not a reference: names joined by "."`, at.node.at, path)
    const missing = (): DescriptionError => new DescriptionError(`\${${text}} names nothing in the description`, at.node.at, path)
    const contexts = at.contexts
    let target: Target | undefined
    let rest: string[]
    const [first = '', ...after] = parts
    if (first === 'ROOT') {
      target = { context: rootContext }
      rest = after
    } else if (first === 'PARENT') {
      // PARENT.PARENT… climbs one enclosing component a step.
      let up = 0
      while (parts[up] === 'PARENT') up++
      const parent = contexts.at(-1 - up)
      if (parent === undefined) throw new DescriptionError(`\${${text}} climbs above the deployment`, at.node.at, path)
      target = { context: parent }
      rest = parts.slice(up)
    } else {
      for (let i = contexts.length - 1; i >= 0 && target === undefined; i--) target = inComponent(contexts[i] as Context, first)
      rest = after
    }
    if (target === undefined) throw missing()
    for (const [i, part] of rest.entries()) {
      if ('context' in target) {
        if (RUNTIME_ATTRIBUTES.has(part) && inComponent(target.context, part) === undefined) return runtime(text, target.context, rest.slice(i), at, path)
        target = inComponent(target.context, part)
      } else {
        const node = index.get(target.path)?.node
        const next = node?.kind === 'map' && node.entries.has(part) ? join(target.path, part) : node?.kind === 'list' && /^\d+$/.test(part) && Number(part) < node.items.length ? `${target.path}[${part}]` : undefined
        target = next === undefined ? undefined : contextsByComponent.has(next) ? { context: contextsByComponent.get(next) as Context } : { path: next }
      }
      if (target === undefined) throw missing()
    }
    if ('context' in target) throw new DescriptionError(`\${${text}} names component ${target.context.component}: name one of its values, or its id, host or endpoints.NAME`, at.node.at, path)
    return value(target.path)
  }

  const runtime = (text: string, c: Context, parts: string[], at: Indexed, path: string): Value => {
    const [attribute, endpoint, ...more] = parts
    if (attribute === 'endpoints' && more.length === 0) return { runtime: [{ component: c.component, attribute: 'endpoint', ...endpoint === undefined ? {} : { endpoint } }] }
    if ((attribute === 'id' || attribute === 'host') && endpoint === undefined) return { runtime: [{ component: c.component, attribute }] }
    throw new DescriptionError(`\${${text}}: of a running component only id, host and endpoints.NAME can be named`, at.node.at, path)
  }

  const interpolate = (text: string, at: Indexed, path: string): Value => {
    const pieces: Value[] = []
    let last = 0
    for (const m of text.matchAll(REFERENCE)) {
      if (m.index > last) pieces.push(text.slice(last, m.index))
      pieces.push(m[1] === '$' ? `\${${m[2] ?? ''}}` : reference(m[2] ?? '', at, path))
      last = m.index + m[0].length
    }
    if (last === 0 && pieces.length === 0) return text
    if (last < text.length) pieces.push(text.slice(last))
    if (pieces.length === 1 && text.startsWith('${')) return pieces[0] as Value
    const runtime: Array<string | RuntimeRef> = []
    for (const piece of pieces) {
      if (isRuntime(piece)) runtime.push(...piece.runtime)
      else if (typeof piece === 'string' || typeof piece === 'number' || typeof piece === 'boolean') runtime.push(String(piece))
      else throw new DescriptionError('a reference within a longer string names a map, a list or null: make it the whole value', at.node.at, path)
    }
    const joined = runtime.reduce<Array<string | RuntimeRef>>((out, p) => {
      const prev = out.at(-1)
      if (typeof p === 'string' && typeof prev === 'string') out[out.length - 1] = prev + p
      else out.push(p)
      return out
    }, [])
    return joined.length === 1 && typeof joined[0] === 'string' ? joined[0] : { runtime: joined }
  }

  const value = (path: string): Value => {
    const known = done.get(path)
    if (known !== undefined) return known
    const at = index.get(path)
    if (at === undefined) throw new Error(`no node at ${path}`)
    if (resolving.includes(path)) throw new DescriptionError(`references make a cycle: ${[...resolving.slice(resolving.indexOf(path)), path].join(' → ')}`, at.node.at, path)
    resolving.push(path)
    let out: Value
    const node = at.node
    if (node.kind === 'map') {
      const object: Record<string, Value> = {}
      for (const key of node.entries.keys()) object[key] = value(join(path, key))
      out = object
    } else if (node.kind === 'list') {
      out = node.items.map((_, i) => value(`${path}[${i}]`))
    } else {
      out = typeof node.value === 'string' ? interpolate(node.value, at, path) : node.value
    }
    resolving.pop()
    done.set(path, out)
    return out
  }

  return value('')
}
