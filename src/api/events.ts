import type { FastifyReply, FastifyRequest } from 'fastify'
import { toXenosError } from '../core/index.ts'

/**
 * Runs `work` for a request that may want to watch it: with `Accept: text/event-stream` the answer
 * is a stream of `progress` events, then `result` (what the JSON answer would be) or `error`;
 * otherwise the JSON answer with `status`.
 */
export async function withProgress<T> (req: FastifyRequest, reply: FastifyReply, status: number, work: (progress?: (p: unknown) => void) => Promise<T>): Promise<T | undefined> {
  if (req.headers.accept?.includes('text/event-stream') !== true) {
    const result = await work()
    void reply.status(status)
    return result
  }
  const send = eventStream(reply)
  try {
    send('result', await work(p => { send('progress', p) }))
  } catch (err) {
    const e = toXenosError(err)
    if (e.code === 'INTERNAL') req.log.error({ err }, 'request failed')
    send('error', { error: e.toJSON() })
  }
  reply.raw.end()
  return undefined
}

/** Answers with server-sent events from here on; returns the function that sends one. */
export function eventStream (reply: FastifyReply): (event: string, data: unknown) => void {
  reply.hijack()
  reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' })
  return (event, data) => { reply.raw.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`) }
}
