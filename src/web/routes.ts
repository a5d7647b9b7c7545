import fastifyStatic from '@fastify/static'
import type { FastifyInstance } from 'fastify'
import { createReadStream } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { XenosError } from '../core/index.ts'

/** The dashboard's own files: kept beside this module in src/ and copied beside it into dist/ by the build. */
const UI_DIR = join(import.meta.dirname, 'ui')

const uplotDir = join(dirname(createRequire(import.meta.url).resolve('uplot/package.json')), 'dist')

/** The libraries the dashboard imports, served from the installed packages. */
const VENDOR: Record<string, { file: string, type: string }> = {
  // Preact with its hooks and htm's tagged templates, as one ES module (htm/preact/standalone).
  'preact-htm.js': { file: fileURLToPath(import.meta.resolve('htm/preact/standalone')), type: 'text/javascript' },
  'uplot.js': { file: join(uplotDir, 'uPlot.esm.js'), type: 'text/javascript' },
  'uplot.css': { file: join(uplotDir, 'uPlot.min.css'), type: 'text/css' },
}

/** Serves the dashboard at /ui/ (and sends / there). */
export async function registerDashboard (app: FastifyInstance): Promise<void> {
  // The page may load only its own files and talk only to this host.
  const csp = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
  await app.register(fastifyStatic, {
    root: UI_DIR,
    prefix: '/ui/',
    decorateReply: false,
    setHeaders: res => { void res.header('content-security-policy', csp) },
  })
  app.get('/ui', { schema: { hide: true } }, async (_req, reply) => await reply.redirect('/ui/'))
  app.get('/', { schema: { hide: true } }, async (_req, reply) => await reply.redirect('/ui/'))
  app.get('/ui/vendor/:file', { schema: { hide: true } }, async (req, reply) => {
    const v = VENDOR[(req.params as { file: string }).file]
    if (v === undefined) throw new XenosError('ROUTE_NOT_FOUND', `the dashboard has no file ${req.url}`)
    void reply.type(v.type).header('cache-control', 'public, max-age=86400')
    return createReadStream(v.file)
  })
}
