import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { describe, it } from 'node:test'
import { DescriptionError, resolveDescription } from '../../src/deploy/index.ts'

const golden = new URL('./golden/', import.meta.url)

/** The error a description gives: where, and what. */
function errorOf (text: string): { line: number, col: number, path: string, message: string } {
  try {
    resolveDescription(text, 'bad.yaml')
  } catch (err) {
    assert.ok(err instanceof DescriptionError, `a DescriptionError, not ${String(err)}`)
    assert.equal(err.code, 'BAD_DESCRIPTION')
    return { line: err.at.line, col: err.at.col, path: err.path, message: err.message }
  }
  assert.fail('the description was taken')
}

describe('descriptions', () => {
  it('resolves prototypes through a 3-level extends chain, static and run-time references and an overridden TBD to the golden tree', async () => {
    const text = await readFile(new URL('pi.yaml', golden), 'utf8')
    const expected: unknown = JSON.parse(await readFile(new URL('pi.json', golden), 'utf8'))
    assert.deepEqual(JSON.parse(JSON.stringify(resolveDescription(text, 'pi.yaml'))), expected)
  })

  it('names the line, column and path of a TBD left, an extends cycle, a missing reference and an unknown key', () => {
    const tbd = errorOf('name: x\nprototypes:\n  w:\n    template: t\n    env: { MASTER: TBD }\ncomponents:\n  a:\n    extends: w\n')
    assert.deepEqual({ line: tbd.line, col: tbd.col, path: tbd.path }, { line: 5, col: 20, path: 'components.a.env.MASTER' })
    assert.match(tbd.message, /^bad\.yaml:5:20: components\.a\.env\.MASTER: TBD not overridden$/)

    const cycle = errorOf('name: x\nprototypes:\n  a: { extends: b }\n  b: { extends: a }\ncomponents:\n  w:\n    extends: a\n    template: t\n')
    assert.equal(cycle.path, 'prototypes.b.extends')
    assert.match(cycle.message, /extends makes a cycle: a → b → a/)
    assert.equal(cycle.line, 4)

    const missing = errorOf('name: x\ncomponents:\n  a:\n    template: t\n    env: { X: "${nothere.port}" }\n')
    assert.deepEqual({ line: missing.line, col: missing.col, path: missing.path }, { line: 5, col: 15, path: 'components.a.env.X' })
    assert.match(missing.message, /\$\{nothere\.port\} names nothing/)

    const unknown = errorOf('name: x\ncomponents:\n  a:\n    template: t\n    colour: red\n')
    assert.deepEqual({ line: unknown.line, col: unknown.col, path: unknown.path }, { line: 5, col: 5, path: 'components.a.colour' })
  })

  it('refuses references that go round, components that wait for each other, and run-time values where none can go', () => {
    assert.match(errorOf('name: x\nvalues:\n  a: "${b}"\n  b: "${a}"\ncomponents:\n  w: { template: "${a}" }\n').message, /references make a cycle: values\.a → values\.b → values\.a/)
    assert.match(errorOf('name: x\ncomponents:\n  a: { template: t, after: [b] }\n  b: { template: t, env: { A: "${a.host}" } }\n').message, /wait for each other/)
    assert.match(errorOf('name: x\ncomponents:\n  a: { template: t }\n  b: { template: "${a.host}" }\n').message, /only env values can take it/)
    assert.match(errorOf('name: x\ncomponents:\n  a: { template: t, count: 2 }\n  b: { template: t, env: { A: "${a.id}" } }\n').message, /a has 2 instances/)
    assert.match(errorOf('name: x\ncomponents:\n  a: { template: t }\n  b: { template: t, env: { A: "${a}" } }\n').message, /names component a/)
    assert.match(errorOf('name: x\ncomponents:\n  a: { template: t, after: [ghost] }\n').message, /after names "ghost"/)
  })

  it('refuses what is not the language: YAML errors, anchors, a component that is neither kind, bad durations', () => {
    assert.equal(errorOf('name: x\ncomponents:\n  a: [1, 2\n').path, '')
    assert.match(errorOf('name: x\nbase: &b { template: t }\ncomponents:\n  a: *b\n').message, /anchors and aliases are not part of the language/)
    assert.match(errorOf('name: x\ncomponents:\n  a: { count: 2 }\n').message, /a template \(instances of it\) or components/)
    assert.match(errorOf('name: x\ncomponents:\n  a: { template: t, checkpoint: soon }\n').message, /components\.a\.checkpoint: a duration is/)
    assert.match(errorOf('name: x\ncomponents:\n  a: { template: t, components: { b: { template: u } } }\n').message, /not both/)
  })
})
