import { readdir, readFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import { XenosError } from '../../core/index.ts'

/**
 * Kernel modules a guest must load, with everything they depend on, in an order `insmod` accepts
 * (each module after its dependencies). Dependencies come from each module's own `depends=`
 * field, so no `depmod` is needed on the build machine. Modules built into the kernel are left out.
 */
export async function moduleLoadOrder (moduleDir: string, wanted: string[]): Promise<string[]> {
  const files = new Map<string, string>()
  for (const e of await readdir(join(moduleDir, 'kernel'), { recursive: true, withFileTypes: true })) {
    if (e.isFile() && /\.ko(\.(xz|zst|gz))?$/.test(e.name)) files.set(moduleName(e.name), relative(moduleDir, join(e.parentPath, e.name)))
  }
  const builtin = new Set((await readFile(join(moduleDir, 'modules.builtin'), 'utf8').catch(() => '')).split('\n').filter(Boolean).map(moduleName))
  const order: string[] = []
  const seen = new Set<string>()
  const visit = async (name: string, wantedBy: string): Promise<void> => {
    if (seen.has(name) || builtin.has(name)) return
    seen.add(name)
    const path = files.get(name)
    if (path === undefined) throw new XenosError('BAD_MANIFEST', `the guest kernel has no module "${name}"${wantedBy === '' ? '' : ` (needed by ${wantedBy})`}`)
    for (const dep of dependsOf(await readFile(join(moduleDir, path)))) await visit(dep, name)
    order.push(path)
  }
  for (const name of wanted) await visit(moduleName(name), '')
  return order
}

/** The `depends=` entry of a module's .modinfo section (uncompressed modules). */
function dependsOf (ko: Buffer): string[] {
  const at = ko.indexOf('\0depends=')
  if (at < 0) return []
  const start = at + '\0depends='.length
  const end = ko.indexOf(0, start)
  return ko.subarray(start, end).toString('utf8').split(',').filter(Boolean).map(moduleName)
}

/** `kernel/drivers/net/virtio_net.ko.xz` → `virtio_net`. */
export function moduleName (path: string): string {
  const base = path.split('/').pop() ?? ''
  return base.replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_')
}
