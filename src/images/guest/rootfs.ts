import { execFile } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { promisify } from 'node:util'
import { z } from 'zod'
import { XenosError } from '../../core/index.ts'

const run = promisify(execFile)

/** mmdebstrap's variants, smallest first (`minbase`: only Essential packages and apt). */
export const DEBIAN_VARIANTS = ['extract', 'custom', 'essential', 'apt', 'minbase', 'buildd', 'required', 'important', 'standard'] as const

/** The root file system a template's VM boots into: a Debian suite, built from its packages. */
export const distributionSchema = z.strictObject({
  debian: z.string().regex(/^[a-z][a-z0-9-]{1,30}$/, 'a Debian suite name: bookworm, trixie, stable…'),
  variant: z.enum(DEBIAN_VARIANTS).default('minbase'),
})
export type Distribution = z.output<typeof distributionSchema>

/** Where the machine's apt sources are kept: the root file system's packages come from the same mirrors. */
const SOURCES = ['/etc/apt/sources.list', '/etc/apt/sources.list.d/debian.sources']

/**
 * The machine's apt mirrors, as one-line sources for `suite`: each source's suites are renamed
 * from the machine's release to `suite` (bookworm-updates → trixie-updates), so that a build
 * uses the mirrors the machine was set up with, whatever release it builds.
 */
export async function mirrorsFor (suite: string, files = SOURCES): Promise<string[]> {
  const lines: string[] = []
  for (const file of files) {
    const text = await readFile(file, 'utf8').catch(() => '')
    for (const entry of text.split(/\n\s*\n/)) {
      const field = (name: string): string => new RegExp(`^${name}:\\s*(.+)$`, 'mi').exec(entry)?.[1]?.trim() ?? ''
      if (field('Types').split(/\s+/).includes('deb')) {
        for (const uri of field('URIs').split(/\s+/).filter(Boolean)) {
          for (const s of field('Suites').split(/\s+/).filter(Boolean)) lines.push(`deb ${uri} ${renamed(s, suite)} ${field('Components') || 'main'}`)
        }
      }
      for (const line of entry.split('\n')) {
        const one = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)$/.exec(line.trim())
        if (one !== null) lines.push(`deb ${one[1] ?? ''} ${renamed(one[2] ?? '', suite)} ${one[3] ?? 'main'}`)
      }
    }
  }
  return [...new Set(lines)]
}

/** `bookworm-updates` as `trixie-updates`, for `suite` trixie. */
function renamed (machineSuite: string, suite: string): string {
  const dash = machineSuite.indexOf('-')
  return dash < 0 ? suite : `${suite}${machineSuite.slice(dash)}`
}

/**
 * Builds a Debian root file system into directory `into` with mmdebstrap, from the machine's apt
 * sources: `distribution`'s suite and variant with `packages` installed. Reproducible
 * (`SOURCE_DATE_EPOCH`: the same package versions give the same files and times), without the
 * build machine's resolv.conf or hostname. Its output goes to `log`. Answers the packages
 * installed, `name=version`, sorted.
 */
export async function buildRootFs (distribution: Distribution, packages: readonly string[], into: string, log: string): Promise<string[]> {
  const mirrors = await mirrorsFor(distribution.debian)
  if (mirrors.length === 0) throw new XenosError('DRIVER_UNAVAILABLE', 'this machine has no Debian apt sources (/etc/apt/sources.list.d/debian.sources): a distribution template is built from them')
  const args = [
    `--variant=${distribution.variant}`,
    ...packages.length === 0 ? [] : [`--include=${packages.join(',')}`],
    '--format=directory',
    // The guest's resolver is its host's user network; the build machine's name is no business of the image.
    '--customize-hook=rm -f "$1/etc/resolv.conf" "$1/etc/hostname"; echo nameserver 10.0.2.3 > "$1/etc/resolv.conf"',
    distribution.debian, into, ...mirrors,
  ]
  try {
    const { stderr } = await run('mmdebstrap', args, { env: { ...process.env, SOURCE_DATE_EPOCH: '0' }, maxBuffer: 64 * 1024 * 1024 })
    await writeFile(log, stderr)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new XenosError('DRIVER_UNAVAILABLE', 'mmdebstrap is not installed (apt-get install mmdebstrap): a distribution template is built with it')
    const stderr = (err as { stderr?: string }).stderr ?? (err as Error).message
    await writeFile(log, stderr).catch(() => {})
    throw rootFsError(distribution, stderr, log)
  }
  return await installedIn(into)
}

/** The packages installed in root file system `root`, `name=version`, sorted. */
export async function installedIn (root: string): Promise<string[]> {
  const { stdout } = await run('dpkg-query', [`--admindir=${root}/var/lib/dpkg`, '-W', '-f', '${Package}=${Version}\\n'])
  return stdout.split('\n').filter(Boolean).sort()
}

/** What went wrong in a failed mmdebstrap run, as its user would put it right. */
function rootFsError (d: Distribution, stderr: string, log: string): XenosError {
  const missing = [...stderr.matchAll(/Unable to locate package (\S+)/g)].map(m => m[1])
  if (missing.length > 0) return new XenosError('BAD_MANIFEST', `template.yaml: packages: ${[...new Set(missing)].join(', ')} ${missing.length === 1 ? 'is' : 'are'} not in Debian ${d.debian} (apt-cache search NAME finds the right name)`)
  if (/does not have a Release file|no such suite|cannot find.*Release|Failed to fetch .*\/dists\//i.test(stderr)) {
    return new XenosError('BAD_MANIFEST', `template.yaml: distribution: debian: "${d.debian}" is not a suite the machine's Debian mirrors have (bookworm, trixie, stable…)`)
  }
  const last = stderr.trim().split('\n').filter(l => /^E:|error/i.test(l)).slice(-3).join('; ')
  return new XenosError('DRIVER_FAILED', `mmdebstrap could not build the root file system${last === '' ? '' : `: ${last}`}; its output is in ${log}`)
}
