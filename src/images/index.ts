/**
 * @packageDocumentation
 * Templates: immutable, content-addressed service factories. This folder parses and validates
 * manifests, gives templates their ids and keeps the host's library of them.
 *
 * @example
 * ```ts
 * const library = new TemplateLibrary(store)
 * const t = library.add(parseManifest(await readFile('hello.yaml', 'utf8')))
 * library.resolve('hello:1.0')?.id === t.id
 * ```
 */
export { parseManifest, validateManifest, templateId, MAX_MANIFEST_BYTES } from './manifest.ts'
export { blobsOf, TemplateLibrary, MIN_ID_PREFIX } from './library.ts'
export { BlobStore, PartialBlob, blobIdOfFile } from './blobs.ts'
export { HeldBlobs } from './held.ts'
export { NameRegistry } from './names.ts'
export { TemplateFetcher, type Pulled, type TransferView } from './fetcher.ts'
export { deriveDisk, tailoredManifest, type DeriveInput } from './derive.ts'
export { adoptOverlay } from './qcow2.ts'
export { buildBaseTemplate, buildFromSpec, buildGuestTemplate, buildSpecSchema, BASE_MODULES, type BuildOptions, type BuildSpec } from './guest/build.ts'
