/**
 * One registry of error codes. Every error that leaves a host (HTTP, RPC, CLI) carries one of
 * these codes; `docs/errors.md` lists the same table and a test keeps the two in step.
 */
export const ERROR_CODES = {
  INVALID_ARGUMENT: { status: 400, meaning: 'A request field or option is malformed or out of range.' },
  BAD_MANIFEST: { status: 400, meaning: 'A template manifest failed validation.' },
  BAD_DESCRIPTION: { status: 400, meaning: 'A deployment description failed to parse or resolve; the message names the file, line, column and path.' },
  UNAUTHENTICATED: { status: 401, meaning: 'The request is not signed, or its signature or timestamp is invalid.' },
  FORBIDDEN: { status: 403, meaning: 'The signer is not the owner of the instance or data it acts on, nor granted access by the owner.' },
  TEMPLATE_NOT_FOUND: { status: 404, meaning: 'No template with that id or name is known here or on the overlay.' },
  INSTANCE_NOT_FOUND: { status: 404, meaning: 'No instance with that id is known here or on the overlay.' },
  ROUTE_NOT_FOUND: { status: 404, meaning: 'No API route matches the method and path; see /openapi.json.' },
  DEPLOYMENT_NOT_FOUND: { status: 404, meaning: 'The host asked supervises no deployment of that name of the signer\'s.' },
  SNAPSHOT_NOT_FOUND: { status: 404, meaning: 'No snapshot with that id on the host asked; snapshots stay on the host that took them.' },
  HOST_NOT_FOUND: { status: 404, meaning: 'No host with that peer id is advertised on the overlay.' },
  DATA_NOT_FOUND: { status: 404, meaning: 'No file or upload with that name is in the repository of the host asked.' },
  UNKNOWN_BANK: { status: 404, meaning: 'The bank an order names is not the one asked, or the host deals with no bank (its operator names one with --accept-bank).' },
  BUDGET_NOT_FOUND: { status: 404, meaning: 'The host asked spends no budget with that id: ask the host the budget was given to.' },
  TASK_NOT_FOUND: { status: 404, meaning: 'No host that can be reached ran a task with that id.' },
  INVALID_STATE: { status: 409, meaning: 'The instance is not in a state that allows the action.' },
  TEMPLATE_IN_USE: { status: 409, meaning: 'Instances still use the template.' },
  NAME_CONFLICT: { status: 409, meaning: 'A published template version cannot point elsewhere, nor change between version and alias.' },
  ADMISSION_REFUSED: { status: 409, meaning: 'The host lacks the CPU or memory the template asks for.' },
  BAD_RECEIPT: { status: 402, meaning: 'A bid\'s receipt is not signed by a bank the host accepts, pays another account than the host\'s escrow, or comes from another account than the bidder\'s.' },
  RECEIPT_SPENT: { status: 409, meaning: 'The receipt has paid for a bid already: each pays for one, once.' },
  BID_REQUIRED: { status: 402, meaning: 'The host is market-only: a deploy there carries a bid for each instance (deploy --bid AMOUNT --for DURATION).' },
  ALLOWANCE_EXCEEDED: { status: 402, meaning: 'A payment under an owner\'s allowance would take what it paid past the maximum the owner signed for.' },
  INSUFFICIENT_FUNDS: { status: 402, meaning: 'The paying account holds fewer credits than the transfer or bid asks for.' },
  QUOTA_EXCEEDED: { status: 413, meaning: 'The owner\'s data on the host would exceed the owner\'s quota there, or the host\'s for all owners; or an owner or the host has as many template names as it keeps.' },
  TOO_LARGE: { status: 413, meaning: 'The request body is larger than the route accepts.' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, meaning: 'The request body has a content type the route does not take: JSON, or application/octet-stream for files.' },
  NO_HOST_AVAILABLE: { status: 503, meaning: 'No advertised host can take the deployment.' },
  DRIVER_UNAVAILABLE: { status: 501, meaning: 'The driver the template needs is missing or unhealthy on the host.' },
  DRIVER_FAILED: { status: 500, meaning: 'The driver could not carry out the action.' },
  PEER_UNREACHABLE: { status: 502, meaning: 'The host that owns the resource could not be reached over the overlay.' },
  PEER_PROTOCOL: { status: 502, meaning: 'A peer answered with a malformed or oversized message.' },
  BLOB_CORRUPT: { status: 500, meaning: 'An image file stored on the host no longer matches its chunk index.' },
  TIMEOUT: { status: 504, meaning: 'The operation did not finish in time.' },
  ADDRESS_IN_USE: { status: 500, meaning: 'xenosd could not start: another program listens on the API or overlay address it was given (choose another with --api or --listen).' },
  DATA_DIR_UNUSABLE: { status: 500, meaning: 'xenosd could not start: its data dir cannot be made or written (its owner or mode, a read-only file system, a file in the way; or choose another with --data).' },
  INTERNAL: { status: 500, meaning: 'An unexpected fault inside the host; its log has details.' },
} as const satisfies Record<string, { status: number, meaning: string }>

export type ErrorCode = keyof typeof ERROR_CODES

export function isErrorCode (value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_CODES, value)
}

/** An error with a stable code; `message` says what went wrong and what to do about it. */
export class XenosError extends Error {
  readonly code: ErrorCode
  readonly details: Record<string, unknown> | undefined

  constructor (code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message)
    this.name = 'XenosError'
    this.code = code
    this.details = details
  }

  get status (): number {
    return ERROR_CODES[this.code].status
  }

  toJSON (): { code: ErrorCode, message: string, details?: Record<string, unknown> } {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details }
  }
}

/** Turns anything thrown into a XenosError, keeping codes that already exist. */
export function toXenosError (err: unknown): XenosError {
  if (err instanceof XenosError) return err
  if (err instanceof Error && err.name === 'TimeoutError') return new XenosError('TIMEOUT', err.message)
  const message = err instanceof Error ? err.message : String(err)
  return new XenosError('INTERNAL', message)
}
