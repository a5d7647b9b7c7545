import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, it } from 'node:test'
import { NODE, ROOT, tempDir } from '../helpers/cluster.ts'

const run = promisify(execFile)
const XENOS = ['--disable-warning=ExperimentalWarning', join(ROOT, 'src/cli/main.ts')]

/** What `xenos __complete WORDS…` offers. */
async function offered (...words: string[]): Promise<string[]> {
  return (await run(NODE, [...XENOS, '__complete', ...words])).stdout.split('\n').filter(w => w !== '')
}

describe('shell completion', () => {
  it('offers the commands, subcommands, options and choices the program has where the word is typed', async () => {
    assert.deepEqual(await offered('inst'), ['instance'])
    assert.deepEqual(await offered('instance', 's'), ['show', 'snapshot', 'start', 'stop', 'suspend'])
    assert.deepEqual(await offered('deploy', '--ho'), ['--host', '--hosts'])
    assert.ok((await offered('instance', 'logs', '-')).includes('--follow'), 'a subcommand\'s options')
    assert.ok((await offered('instance', 'logs', '--')).includes('--api'), 'and the program\'s')
    assert.deepEqual(await offered('node', 'start', '--accel', ''), ['auto', 'kvm', 'tcg'])
    assert.deepEqual(await offered('--api', 'http://h:7380', 'templ'), ['template'], 'an option\'s value is not a command')
    assert.deepEqual(await offered('template', 'import', ''), [], 'a file: left to the shell')
  })

  it('works in bash: the script it prints completes a half-typed command line', async () => {
    const dir = await tempDir('completion')
    // A `xenos` on the PATH, as an installed one is, for the completion function to call.
    await writeFile(join(dir, 'xenos'), `#!/bin/sh\nexec ${NODE} ${XENOS.join(' ')} "$@"\n`, { mode: 0o755 })
    const script = (await run(NODE, [...XENOS, 'completion', 'bash'])).stdout
    const probe = `${script}\nCOMP_WORDS=(xenos instance sn); COMP_CWORD=2; _xenos_complete; printf '%s\\n' "\${COMPREPLY[@]}"`
    const { stdout } = await run('bash', ['-c', probe], { env: { ...process.env, PATH: `${dir}:${process.env.PATH ?? ''}` } })
    assert.deepEqual(stdout.trim().split('\n'), ['snapshot'])
    assert.match((await run(NODE, [...XENOS, 'completion', 'zsh'])).stdout, /^#compdef xenos\n[^]*compdef _xenos_complete xenos\n$/)
    await assert.rejects(run(NODE, [...XENOS, 'completion', 'fish']), /no completion for shell "fish": give bash or zsh/)
  })
})
