import { z } from 'zod'
import { blobIdSchema } from './chunks.ts'

/** Names of things users type: letters, digits, `.`, `_`, `-`; start with a letter or digit. */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/
export const nameSchema = z.string().regex(NAME_PATTERN, 'use lower-case letters, digits, ".", "_" or "-" (at most 63, starting with a letter or digit)')

export const versionSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,62}$/, 'versions are letters, digits, ".", "_", "+" or "-"')

const portSchema = z.strictObject({
  name: z.string().regex(/^[a-z][a-z0-9_]{0,30}$/, 'port names are lower-case letters, digits and "_"'),
  protocol: z.enum(['http', 'tcp', 'udp']).default('tcp'),
  /** Port the service listens on inside a VM; the process driver hands the host port instead. */
  guest: z.number().int().min(1).max(65535).optional(),
  /** Health check the host runs: an HTTP path (`/`, `/health`) or `tcp` for a plain connect. */
  health: z.string().regex(/^(\/[\x21-\x7e]{0,255}|tcp)$/, 'health is an HTTP path starting with "/" or "tcp"').optional(),
})

/** The files a VM template boots from, by blob id (see chunks.ts); hosts fetch them from each other. */
const imageSchema = z.strictObject({
  kernel: blobIdSchema,
  initrd: blobIdSchema,
  /** The disk every instance's copy-on-write overlay is backed by: a raw ext4 image, or a qcow2 overlay on `base`. */
  disk: blobIdSchema,
  diskFormat: z.enum(['raw', 'qcow2']).default('raw'),
  /** For a tailored (derived) template: the raw disk its qcow2 disk is an overlay on. */
  base: blobIdSchema.optional(),
  diskBytes: z.number().int().positive(),
  /**
   * For a disk that boots its own system: `kernel` and `initrd` are the ones in its /boot (of
   * kernel `release`), booted with `root=` this; its own init runs its services, with no Xenos agent.
   */
  system: z.strictObject({
    root: z.string().regex(/^[A-Za-z0-9=/_.:-]{1,200}$/),
    release: z.string().max(200),
  }).optional(),
}).refine(i => (i.diskFormat === 'qcow2') === (i.base !== undefined), { message: 'a qcow2 disk is an overlay and names its base; a raw disk has none' })

const resourcesSchema = z.strictObject({
  /** CPU cores (fractions allowed). */
  cpu: z.number().positive().max(1024).default(0.1),
  /** Memory in MiB. */
  memory: z.number().int().positive().max(4 * 1024 * 1024).default(64),
})

/** What a template manifest may say. Unknown keys are refused so typos do not pass silently. */
export const templateManifestSchema = z.strictObject({
  name: nameSchema,
  version: versionSchema,
  description: z.string().max(1000).optional(),
  driver: z.enum(['process', 'qemu']),
  /** For `process`: the command, either a shell line or an argv array. `${XENOS_PORT_<NAME>}` is substituted. */
  command: z.union([z.string().min(1).max(8192), z.array(z.string().max(4096)).min(1).max(256)]).optional(),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string().max(4096)).default({}),
  ports: z.array(portSchema).max(32).default([]),
  tags: z.record(z.string().regex(/^[a-z0-9][a-z0-9._/-]{0,62}$/), z.string().max(256)).default({}),
  resources: resourcesSchema.default({ cpu: 0.1, memory: 64 }),
  image: imageSchema.optional(),
  /**
   * What a VM may reach beyond its own endpoints and the addresses its host sets up for it:
   * nothing (absent), or the network (`outbound`), which only hosts that allow it give.
   */
  network: z.enum(['outbound']).optional(),
  /** For a VM whose disk is a distribution's root file system: which, and the packages it holds (`name=version`). */
  distribution: z.strictObject({
    debian: z.string().max(32),
    variant: z.string().max(16),
    packages: z.array(z.string().max(200)).max(5000),
  }).optional(),
}).superRefine((m, ctx) => {
  if (m.driver === 'process' && m.command === undefined) {
    ctx.addIssue({ code: 'custom', path: ['command'], message: 'a process template needs a command' })
  }
  if (m.driver === 'qemu' && m.image === undefined) {
    ctx.addIssue({ code: 'custom', path: ['image'], message: 'a qemu template needs an image: build it with "xenos template build DIR"' })
  }
  if (m.driver === 'qemu' && m.ports.some(p => p.guest === undefined)) {
    ctx.addIssue({ code: 'custom', path: ['ports'], message: 'every port of a qemu template needs its guest port' })
  }
  const seen = new Set<string>()
  for (const p of m.ports) {
    if (seen.has(p.name)) ctx.addIssue({ code: 'custom', path: ['ports'], message: `port "${p.name}" is declared twice` })
    seen.add(p.name)
  }
})

export type TemplateManifest = z.output<typeof templateManifestSchema>
export type PortSpec = TemplateManifest['ports'][number]
export type Resources = TemplateManifest['resources']
export type TemplateImage = NonNullable<TemplateManifest['image']>

/** A stored template: its immutable id and the manifest it was made from. */
export interface Template {
  id: string
  manifest: TemplateManifest
  importedAt: number
  /** Who imported (or derived) it on this host; null for one fetched from another host. */
  owner: string | null
}
