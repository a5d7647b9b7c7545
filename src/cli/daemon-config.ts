import type { Command, Option } from 'commander'
import { readFile } from 'node:fs/promises'
import { isMap, isScalar, LineCounter, parseDocument } from 'yaml'
import { XenosError } from '../core/index.ts'
import { collect } from './command.ts'

/**
 * Sets a command's options from a YAML file (`--config FILE`) whose keys are the options' long
 * names (`listen`, `advert-ttl`; `direct-migration: false` for `--no-direct-migration`), the
 * repeatable ones as lists. An option given on the command line or by its environment variable
 * wins over the file; an unknown key, or a value of the wrong kind, is refused with its line.
 */
export async function applyConfigFile (cmd: Command, file: string): Promise<void> {
  const text = await readFile(file, 'utf8')
  const lines = new LineCounter()
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true })
  const [problem] = doc.errors
  if (problem !== undefined) throw new XenosError('INVALID_ARGUMENT', `${file}:${problem.linePos?.[0].line ?? '?'}: ${problem.message.split('\n')[0] ?? ''}`)
  if (doc.contents === null) return
  if (!isMap(doc.contents)) throw new XenosError('INVALID_ARGUMENT', `${file}: give the options as KEY: VALUE lines (a YAML map), as "${cmd.name()} --help" names them`)
  const values = doc.toJS() as Record<string, unknown>
  const options = new Map(cmd.options.filter(o => o.long !== undefined && o.long !== '--config' && o.long !== '--version' && o.long !== '--help').map(o => [configKeyOf(o), o]))
  for (const pair of doc.contents.items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : ''
    const line = lines.linePos(isScalar(pair.key) ? pair.key.range?.[0] ?? 0 : 0).line
    const option = options.get(key)
    if (option === undefined) throw new XenosError('INVALID_ARGUMENT', `${file}:${line}: "${key}" is not an option of ${cmd.name()}; the keys are ${[...options.keys()].join(', ')}`)
    const name = option.attributeName()
    const source = cmd.getOptionValueSource(name)
    if (source === 'cli' || source === 'env') continue
    const value = valueFor(option, values[key] ?? null, `${file}:${line}: ${key}`)
    cmd.setOptionValueWithSource(name, value, 'config')
  }
}

/** The key an option has in a config file: its long name, without `--` (and `no-` for a negation). */
function configKeyOf (o: Option): string {
  return (o.long ?? '').replace(/^--(no-)?/, '')
}

/** `raw` from the file as the option takes it, or a refusal naming `where`. */
function valueFor (o: Option, raw: unknown, where: string): unknown {
  const wrong = (want: string): XenosError => new XenosError('INVALID_ARGUMENT', `${where}: give ${want}, not ${JSON.stringify(raw)}`)
  // A switch: true or false (a negatable one's key is its positive name, as its value is).
  if (!o.required && !o.optional) {
    if (typeof raw !== 'boolean') throw wrong('true or false')
    return raw
  }
  // Repeatable options parse with collect: a list in the file.
  const repeatable = o.parseArg === collect
  const one = (v: unknown): string | number => {
    if (typeof v !== 'string' && typeof v !== 'number') throw wrong(repeatable ? 'a value or a list of values' : 'a value')
    const text = String(v)
    if (o.argChoices !== undefined && !o.argChoices.includes(text)) throw wrong(`one of ${o.argChoices.join(', ')}`)
    if (o.parseArg === Number) {
      const n = Number(text)
      if (!Number.isFinite(n)) throw wrong('a number')
      return n
    }
    return text
  }
  if (repeatable) return (Array.isArray(raw) ? raw : [raw]).map(v => String(one(v)))
  if (Array.isArray(raw)) throw wrong('one value')
  return one(raw)
}
