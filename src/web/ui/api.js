// Requests to the host that serves the dashboard: open reads, and signed actions.
import { authHeader } from './sign.js'

async function answer (res) {
  const text = await res.text()
  const body = text === '' ? null : JSON.parse(text)
  if (!res.ok) throw new Error(body?.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${res.status}`)
  return body
}

/** An unsigned request (a read, or an order signed in its body). */
export async function get (path, init) {
  return await answer(await fetch(path, init))
}

/**
 * A request signed by `key`: `action` on `target` with `params`, for `host` (the one that
 * carries it out; the host asked relays it there).
 */
export async function signed (key, method, path, { action, target, params = {}, host, body, accept }) {
  const headers = { 'x-xenos-auth': await authHeader(key, { action, target, params, host }) }
  if (body !== undefined) headers['content-type'] = 'application/json'
  if (accept !== undefined) headers.accept = accept
  const res = await fetch(path, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
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
