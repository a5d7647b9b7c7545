import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { describe, it } from 'node:test'
import { parseManifest, templateId } from '../../src/images/index.ts'
import { HELLO_MANIFEST } from '../helpers/cluster.ts'

describe('template manifests', () => {
  it('parse YAML and JSON to the same template id', async () => {
    const yaml = parseManifest(await readFile(HELLO_MANIFEST, 'utf8'))
    assert.equal(yaml.name, 'hello')
    assert.equal(yaml.ports[0]?.protocol, 'http')
    const json = parseManifest(JSON.stringify(yaml))
    assert.equal(templateId(json), templateId(yaml))
    assert.match(templateId(yaml), /^sha256:[0-9a-f]{64}$/)
  })

  it('apply defaults', () => {
    const m = parseManifest('name: x\nversion: "1"\ndriver: process\ncommand: "true"\n')
    assert.deepEqual(m.resources, { cpu: 0.1, memory: 64 })
    assert.deepEqual(m.ports, [])
    assert.deepEqual(m.tags, {})
  })

  const bad: Array<[string, string, RegExp]> = [
    ['not YAML', 'name: [unclosed', /not valid YAML/],
    ['unknown key', 'name: x\nversion: "1"\ndriver: process\ncommand: "true"\nimage: foo\n', /image/],
    ['bad name', 'name: "Bad Name"\nversion: "1"\ndriver: process\ncommand: "true"\n', /name: use lower-case/],
    ['process without command', 'name: x\nversion: "1"\ndriver: process\n', /command: a process template needs a command/],
    ['unknown driver', 'name: x\nversion: "1"\ndriver: docker\ncommand: "true"\n', /driver/],
    ['duplicate port', 'name: x\nversion: "1"\ndriver: process\ncommand: "true"\nports: [{name: a}, {name: a}]\n', /declared twice/],
    ['negative memory', 'name: x\nversion: "1"\ndriver: process\ncommand: "true"\nresources: {cpu: 1, memory: -5}\n', /resources.memory/],
    // A peer's manifest of an image that boots its own system: its root goes on the kernel's command line, and must not add to it.
    ['a root that adds kernel arguments', `name: x\nversion: "1"\ndriver: qemu\nimage: { kernel: "sha256:${'a'.repeat(64)}", initrd: "sha256:${'b'.repeat(64)}", disk: "sha256:${'c'.repeat(64)}", diskBytes: 1, system: { root: "/dev/vda1 init=/bin/sh", release: "6.1" } }\n`, /image\.system\.root/],
    ['oversized', `name: x\nversion: "1"\ndriver: process\ncommand: "${'a'.repeat(70_000)}"\n`, /larger than/],
  ]
  for (const [what, text, message] of bad) {
    it(`refuse a manifest with ${what}, naming the problem`, () => {
      assert.throws(() => parseManifest(text), (err: Error & { code?: string }) => err.code === 'BAD_MANIFEST' && message.test(err.message))
    })
  }
})
