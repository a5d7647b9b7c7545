/**
 * @packageDocumentation
 * The dashboard every host serves at /ui: static files (Preact with htm, and uPlot for charts,
 * as ES modules, no build step) that read the same HTTP API as the CLI and sign actions with a
 * key the browser keeps (IndexedDB), never sent to a host.
 */
export { registerDashboard } from './routes.ts'
