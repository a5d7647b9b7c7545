// Requests to the host that serves the dashboard: open reads, and signed actions.
import { authHeader } from './sign.js'

async function answer (res) {
  const text = await res.text()
  const body = text === '' ? null : JSON.parse(text)
  if (!res.ok) throw new Error(body?.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${res.status}`)
  return body
}

/** An open read. */
export async function get (path) {
  return await answer(await fetch(path))
}

/**
 * A request signed by `key`: `action` on `target` with `params`, for `host` (the one that
 * carries it out; the host asked relays it there).
 */
export async function signed (key, method, path, { action, target, params = {}, host, body, accept }) {
  return await send(method, path, { body, accept, headers: { 'x-xenos-auth': await authHeader(key, { action, target, params, host }) } })
}

/**
 * A request with a JSON body (for one signed in its body: no header), answered with JSON, or with
 * the response itself to read its events from when `accept` is `text/event-stream` and it succeeds.
 */
export async function send (method, path, { body, accept, headers = {} }) {
  const all = { ...headers }
  if (body !== undefined) all['content-type'] = 'application/json'
  if (accept !== undefined) all.accept = accept
  const res = await fetch(path, { method, headers: all, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
  return accept === 'text/event-stream' && res.ok ? res : await answer(res)
}

/** The server-sent events of a response, as { event, data } objects, until it ends. */
export async function * events (res) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return
    buffer += value
    let end
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      const event = /^event: (.*)$/m.exec(block)?.[1] ?? 'message'
      const data = /^data: (.*)$/m.exec(block)?.[1]
      yield { event, data: data === undefined ? null : JSON.parse(data) }
    }
  }
}
