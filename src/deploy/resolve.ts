import type { z } from 'zod'
import { DescriptionError } from './errors.ts'
import { applyPrototypes } from './prototypes.ts'
import { isRuntime, resolveReferences, type RuntimeRef, type RuntimeValue, type Value } from './references.ts'
import { compoundSchema, descriptionSchema, workloadSchema, type FAILURE_POLICIES } from './schema.ts'
import { join, parseSource, type SourceNode } from './source.ts'

type FailurePolicy = typeof FAILURE_POLICIES[number]

/** Instances of a template, resolved: what the engine deploys and watches. */
export interface Workload {
  kind: 'workload'
  /** The component's path (`workers`, `cluster.db`). */
  path: string
  template: string
  count: number
  resources?: { cpu: number, memory: number }
  env: Record<string, string | RuntimeValue>
  onFailure: FailurePolicy
  restarts: { attempts: number, backoffMs: number }
  checkpointMs?: number
  placement: { spread?: boolean | undefined, host?: string | undefined, tags?: Record<string, string> | undefined }
  liveness: { everyMs: number, failAfter: number }
  storage?: { inputs?: string[] | undefined, snapshot?: string | undefined, size?: number | undefined, keep: 'nothing' | 'outputs' }
  task?: { outputs: string, keep: boolean }
  /** Components that must be healthy first: those named in `after`, and those whose run-time values it takes. */
  dependsOn: string[]
}

export interface Compound {
  kind: 'compound' | 'sequence'
  path: string
  onFailure: FailurePolicy
  dependsOn: string[]
  components: Record<string, Component>
}

export type Component = Workload | Compound

export interface Description {
  name: string
  components: Record<string, Component>
}

/** Parses, extends, resolves and checks a description (YAML text, from `file`); every error names where and what. */
export function resolveDescription (text: string, file: string): Description {
  const merged = applyPrototypes(parseSource(text, file) as Extract<SourceNode, { kind: 'map' }>)
  refuseTbd(merged, '')
  const resolved = resolveReferences(merged) as Record<string, Value>
  const at = (path: string): SourceNode => nodeAt(merged, path)
  refuseMisplacedRuntime(resolved, '', at)
  const top = check(descriptionSchema, withoutValues(resolved), '', at)
  const components: Record<string, Component> = {}
  const all = new Map<string, Component>()
  for (const [name, body] of Object.entries(top.components)) components[name] = component(body as Value, join('components', name), name, at, all)
  linkDependencies(components, [], at, all)
  refuseCycles(all, at)
  return { name: top.name, components }
}

/** Checks one component (and, for a compound, its children) against its schema. */
function component (body: Value, path: string, componentPath: string, at: (p: string) => SourceNode, all: Map<string, Component>): Component {
  if (typeof body !== 'object' || body === null || Array.isArray(body) || isRuntime(body)) throw new DescriptionError('a component is a map', at(path).at, path)
  const own = withoutValues(body)
  let out: Component
  if ('template' in own) {
    if ('components' in own) throw new DescriptionError('a component has a template (instances of it) or components (a compound), not both', at(path).at, path)
    const w = check(workloadSchema, own, path, at)
    out = {
      kind: 'workload',
      path: componentPath,
      template: w.template,
      count: w.count,
      ...w.resources === undefined ? {} : { resources: w.resources },
      env: w.env,
      onFailure: w.onFailure ?? 'restart',
      restarts: { attempts: w.restarts.attempts, backoffMs: w.restarts.backoff },
      ...w.checkpoint === undefined ? {} : { checkpointMs: w.checkpoint },
      placement: w.placement,
      liveness: { everyMs: w.liveness.every, failAfter: w.liveness.failAfter },
      ...w.storage === undefined ? {} : { storage: w.storage },
      ...w.task === undefined ? {} : { task: w.task },
      dependsOn: w.after,
    }
  } else if ('components' in own) {
    const c = check(compoundSchema, own, path, at)
    const children: Record<string, Component> = {}
    for (const [name, child] of Object.entries(c.components)) children[name] = component(child as Value, join(join(path, 'components'), name), join(componentPath, name), at, all)
    out = { kind: c.kind, path: componentPath, onFailure: c.onFailure ?? 'terminate', dependsOn: c.after, components: children }
  } else {
    throw new DescriptionError('a component has a template (instances of it) or components (a compound)', at(path).at, path)
  }
  all.set(componentPath, out)
  return out
}

/**
 * Turns the names in each component's `after` into component paths (the nearest component of
 * that name: a sibling, else one of an enclosing compound's), and adds the components whose
 * run-time values it takes, which must be single instances.
 */
function linkDependencies (components: Record<string, Component>, scopes: Array<Record<string, Component>>, at: (p: string) => SourceNode, all: Map<string, Component>): void {
  const visible = [components, ...scopes]
  for (const c of Object.values(components)) {
    const path = treePathOf(c.path)
    c.dependsOn = c.dependsOn.map((name, i) => {
      const found = visible.map(s => s[name]).find(x => x !== undefined)
      if (found === undefined || found === c) throw new DescriptionError(`after names "${name}", which is no other component here or around`, at(`${path}.after[${i}]`).at, `${path}.after[${i}]`)
      return found.path
    })
    if (c.kind === 'workload') {
      for (const [key, v] of Object.entries(c.env)) {
        for (const ref of isRuntime(v) ? v.runtime.filter((p): p is RuntimeRef => typeof p !== 'string') : []) {
          const target = all.get(ref.component)
          const where = `${path}.env.${key}`
          if (target?.kind !== 'workload') throw new DescriptionError(`a run-time value comes from a component with a template; ${ref.component} is a compound`, at(where).at, where)
          if (target.count !== 1) throw new DescriptionError(`${ref.component} has ${target.count} instances: its ${ref.attribute} is not one value`, at(where).at, where)
          if (target === c) throw new DescriptionError('a component cannot take its own run-time values', at(where).at, where)
          if (!c.dependsOn.includes(target.path)) c.dependsOn.push(target.path)
        }
      }
    } else {
      linkDependencies(c.components, visible, at, all)
    }
  }
}

/** Components wait for what they depend on: that may not come round to themselves. */
function refuseCycles (all: Map<string, Component>, at: (p: string) => SourceNode): void {
  const state = new Map<string, 'visiting' | 'done'>()
  const visit = (path: string, chain: string[]): void => {
    if (state.get(path) === 'done') return
    if (state.get(path) === 'visiting') {
      const where = treePathOf(chain.at(-1) ?? path)
      throw new DescriptionError(`components wait for each other: ${[...chain.slice(chain.indexOf(path)), path].join(' → ')}`, at(where).at, where)
    }
    state.set(path, 'visiting')
    for (const next of all.get(path)?.dependsOn ?? []) visit(next, [...chain, path])
    state.set(path, 'done')
  }
  for (const path of all.keys()) visit(path, [])
}

/** A `TBD` left after extends is a value the description had to give. */
function refuseTbd (node: SourceNode, path: string): void {
  if (node.kind === 'scalar') {
    if (node.value === 'TBD') throw new DescriptionError('TBD not overridden', node.at, path)
  } else if (node.kind === 'map') {
    for (const [key, child] of node.entries) refuseTbd(child, join(path, key))
  } else {
    node.items.forEach((item, i) => { refuseTbd(item, `${path}[${i}]`) })
  }
}

/** Run-time values are put together when the components run: only a component's environment takes them. */
function refuseMisplacedRuntime (v: Value, path: string, at: (p: string) => SourceNode): void {
  if (isRuntime(v)) {
    if (!/\.env\.[^.]+$/.test(path) && !/(^|\.)values(\.|$)/.test(path)) throw new DescriptionError('an id, host or endpoint of a component is known only when it runs: only env values can take it', at(path).at, path)
    return
  }
  if (Array.isArray(v)) v.forEach((item, i) => { refuseMisplacedRuntime(item, `${path}[${i}]`, at) })
  else if (typeof v === 'object' && v !== null) for (const [key, child] of Object.entries(v)) refuseMisplacedRuntime(child, join(path, key), at)
}

function withoutValues (v: Record<string, Value> | Value[] | RuntimeValue): Record<string, Value> {
  return Object.fromEntries(Object.entries(v).filter(([key]) => key !== 'values'))
}

/** Parses `value` with `schema`; the first problem becomes an error at the place it was written. */
function check<S extends z.ZodType> (schema: S, value: unknown, path: string, at: (p: string) => SourceNode): z.output<S> {
  const parsed = schema.safeParse(value)
  if (parsed.success) return parsed.data
  const issue = parsed.error.issues[0]
  if (issue === undefined) throw new DescriptionError('is not valid', at(path).at, path)
  let where = path
  for (const key of issue.path) where = typeof key === 'number' ? `${where}[${key}]` : join(where, String(key))
  if (issue.code === 'unrecognized_keys') {
    const key = issue.keys[0] ?? ''
    const parent = at(where)
    throw new DescriptionError(`unknown key "${key}"`, parent.kind === 'map' ? parent.keys.get(key) ?? parent.at : parent.at, join(where, key))
  }
  throw new DescriptionError(issue.message, at(where).at, where)
}

/** The node at tree path `path`, or the nearest one above it that exists (for a key that is missing). */
function nodeAt (root: SourceNode, path: string): SourceNode {
  let node = root
  for (const part of path.match(/[^.[\]]+|\[\d+\]/g) ?? []) {
    const next: SourceNode | undefined = part.startsWith('[')
      ? (node.kind === 'list' ? node.items[Number(part.slice(1, -1))] : undefined)
      : (node.kind === 'map' ? node.entries.get(part) : undefined)
    if (next === undefined) return node
    node = next
  }
  return node
}

/** Where component `path` (`cluster.db`) is in the tree (`components.cluster.components.db`). */
function treePathOf (componentPath: string): string {
  return componentPath.split('.').map(name => `components.${name}`).join('.')
}
