import type { Command } from 'commander'
import { readFile } from 'node:fs/promises'
import { formatTemplateUri, isTemplateUri, parseTemplateUri, XenosError, type NameRecord, type TemplateSummary } from '../core/index.ts'
import { buildAndImport, deriveAndImport, DEFAULT_CACHE_DIR } from './build.ts'
import { client, out } from './command.ts'
import { withTransferProgress } from './progress.ts'
import { ago, bytes, table } from './table.ts'

/** `NAME/TAG` or `template://me/NAME/TAG` (or the user's own owner id): a name the user may sign. */
function ownName (target: string, self: string): { name: string, tag: string } {
  const n = parseTemplateUri(isTemplateUri(target) ? target : `template://me/${target}`, self)
  if (n.owner !== self) throw new XenosError('FORBIDDEN', `${target} belongs to owner ${n.owner}: you can only publish names under your own key (template://me/…)`)
  return n
}

/** `xenos template …` (import, build, derive, pull, list, show, rm, tag, alias) and `xenos names`. */
export function registerTemplateCommands (program: Command): void {
  const template = program.command('template').description('Templates: import, list, show, remove')
  template.command('import <file>').description('Import a template manifest (YAML or JSON)').action(async (file: string, _o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    const body = { text: await readFile(file, 'utf8') }
    const t = await api.signed<TemplateSummary>('POST', '/v1/templates', 'template.import', 'templates', body, body)
    out(flags, t, () => `imported ${t.name}:${t.version} as ${t.id}`)
  })
  template.command('build <dir>').description('Build a VM template from DIR/template.yaml (kernel, initramfs, disk) and import it')
    .option('--cache <dir>', 'where Debian packages, builds and blobs are cached', DEFAULT_CACHE_DIR)
    .action(async (dir: string, o: { cache: string }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const t = await buildAndImport(api, dir, o.cache)
      out(flags, t, () => `built ${t.name}:${t.version} as ${t.id}`)
    })
  template.command('derive <base>').description('Make a tailored template, stored as a small overlay on BASE\'s disk: BASE\'s image with the files of DIR added (under /srv), or on a distribution base, a service built on it')
    .option('--add <dir>', 'files to add: laid out as under /srv in a busybox guest, as the root file system on a distribution base')
    .option('--packages <names...>', 'on a distribution base: Debian packages to install (space- or comma-separated)')
    .option('--command <command>', 'on a distribution base: the service\'s command (default: BASE\'s)')
    .option('--port <port...>', 'on a distribution base: a port of the service, NAME:GUEST[:PROTOCOL[:HEALTH]] (e.g. http:80:http:/)')
    .option('--name <name>', 'name of the new template (default: BASE\'s)')
    .option('--version <version>', 'its version (default: BASE\'s, suffixed with the new disk\'s id)')
    .option('--cache <dir>', 'where base disks and built files are cached', DEFAULT_CACHE_DIR)
    .action(async (base: string, o: { add?: string, packages?: string[], command?: string, port?: string[], name?: string, version?: string, cache: string }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const packages = o.packages?.flatMap(p => p.split(',')).filter(p => p !== '')
      const t = await deriveAndImport(api, base, o.cache, { add: o.add, packages, command: o.command, ports: o.port, name: o.name, version: o.version })
      out(flags, t, () => `derived ${t.name}:${t.version} as ${t.id}`)
    })
  template.command('pull <template>').description('Fetch a template onto this host from every host that holds it, with progress (signed by the host\'s operator)')
    .action(async (ref: string, _o, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const t = await api.template<TemplateSummary>(ref)
      const t2 = await withTransferProgress(api, t.id, async () => await api.signed<TemplateSummary>('POST', `/v1/templates/${encodeURIComponent(t.id)}/pull`, 'template.pull', t.id, {}))
      out(flags, t2, () => `${t2.name}:${t2.version} (${t2.id}) is on this host`)
    })
  template.command('list').description('Templates held by this host').action(async (_o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    const { templates } = await api.get<{ templates: TemplateSummary[] }>('/v1/templates')
    out(flags, templates, () => templates.length === 0
      ? 'no templates here: import one with "xenos template import FILE"'
      : table(['ID', 'NAME', 'VERSION', 'DRIVER', 'CPU', 'MEMORY', 'TAGS'],
        templates.map(t => [t.id.slice(0, 19), t.name, t.version, t.driver, String(t.resources.cpu), `${t.resources.memory} MiB`, Object.entries(t.tags).map(([k, v]) => `${k}=${v}`).join(',')])))
  })
  template.command('show <ref>').description('Show a template by id, name or name:version').action(async (ref: string, _o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    const t = await api.template<TemplateSummary & { manifest?: unknown }>(ref)
    out(flags, t, () => [`id:        ${t.id}`, `name:      ${t.name}:${t.version}`, `driver:    ${t.driver}`,
      `resources: ${t.resources.cpu} CPU, ${t.resources.memory} MiB`, `tags:      ${Object.entries(t.tags).map(([k, v]) => `${k}=${v}`).join(', ') || '-'}`,
      `held by:   ${t.hosts.join(', ')}`].join('\n'))
  })
  template.command('rm <ref>').description('Remove a template you imported (any, for the host\'s operator) from this host').action(async (ref: string, _o, cmd: Command) => {
    const { api, flags } = await client(cmd)
    const { id } = await api.template<TemplateSummary>(ref)
    const r = await api.signed<{ id: string, blobsRemoved: number, bytesFreed: number }>('DELETE', `/v1/templates/${encodeURIComponent(id)}`, 'template.remove', id, {})
    out(flags, r, () => `removed ${r.id}${r.blobsRemoved > 0 ? `, and ${r.blobsRemoved} image file(s) no other template uses (${bytes(r.bytesFreed)} freed)` : ''}`)
  })

  for (const kind of ['version', 'alias'] as const) {
    template.command(`${kind === 'version' ? 'tag' : 'alias'} <template> <name/${kind}>`)
      .description(kind === 'version'
        ? 'Publish template://you/NAME/VERSION for a template, to every host; a version never moves once published'
        : 'Point template://you/NAME/ALIAS (such as current) at a template, to every host; moves it if it exists')
      .action(async (ref: string, target: string, _o, cmd: Command) => {
        const { api, flags } = await client(cmd)
        const { name, tag } = ownName(target, api.owner)
        const t = await api.template<TemplateSummary>(ref)
        const r = await api.publishName(name, tag, kind, t.id)
        out(flags, r, () => `${formatTemplateUri(r.record)} → ${t.id}${r.changed ? '' : ' (already so)'}`)
      })
  }

  program.command('names').description('Template names (template://owner/name/tag) known on the overlay')
    .option('--owner <id>', 'only this owner\'s ("me" for yours)')
    .action(async (o: { owner?: string }, cmd: Command) => {
      const { api, flags } = await client(cmd)
      const owner = o.owner === 'me' ? api.owner : o.owner
      const { names } = await api.get<{ names: NameRecord[] }>(`/v1/names${owner === undefined ? '' : `?owner=${encodeURIComponent(owner)}`}`)
      out(flags, names, () => names.length === 0
        ? 'no template names yet: publish one with "xenos template tag TEMPLATE NAME/VERSION"'
        : table(['NAME', 'KIND', 'TEMPLATE', 'SET'], names.map(n => [formatTemplateUri({ ...n, owner: n.owner === api.owner ? 'me' : n.owner }), n.kind, n.template.slice(0, 19), ago(n.seq)])))
    })
}
