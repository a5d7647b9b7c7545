import type { Component, Description, Workload } from '../../deploy/index.ts'

/**
 * Every workload of a description in an order that starts each after what it waits for, with
 * all it waits for: its `dependsOn` and its compounds', a sequence's earlier children, each
 * compound named standing for all the workloads in it.
 */
export function workloadsOf (d: Description): Array<{ workload: Workload, after: Set<string> }> {
  const byPath = new Map<string, Component>()
  const index = (components: Record<string, Component>): void => {
    for (const c of Object.values(components)) {
      byPath.set(c.path, c)
      if (c.kind !== 'workload') index(c.components)
    }
  }
  index(d.components)
  const expand = (path: string): string[] => {
    const c = byPath.get(path)
    if (c === undefined) return []
    return c.kind === 'workload' ? [c.path] : Object.values(c.components).flatMap(child => expand(child.path))
  }
  const out: Array<{ workload: Workload, after: Set<string> }> = []
  const walk = (components: Record<string, Component>, inherited: string[], sequence: boolean): void => {
    let previous: string | undefined
    for (const c of Object.values(components)) {
      const waits = [...inherited, ...c.dependsOn, ...sequence && previous !== undefined ? [previous] : []]
      if (c.kind === 'workload') out.push({ workload: c, after: new Set(waits.flatMap(expand)) })
      else walk(c.components, waits, c.kind === 'sequence')
      previous = c.path
    }
  }
  walk(d.components, [], false)
  // In an order where each comes after what it waits for (the description has no cycles).
  const ordered: typeof out = []
  const placed = new Set<string>()
  while (ordered.length < out.length) {
    const next = out.find(o => !placed.has(o.workload.path) && [...o.after].every(p => placed.has(p)))
    if (next === undefined) break
    ordered.push(next)
    placed.add(next.workload.path)
  }
  return ordered
}
