import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { durationMs } from '../../src/core/index.ts'
import { secondsOf } from '../../src/cli/market.ts'

/** One grammar for durations, in descriptions and on the command line. */
describe('durations', () => {
  it('reads units, compounds and bare seconds', () => {
    assert.deepEqual(['500ms', '30s', '5m', '1h30m', '2d', '90', '1m30s'].map(durationMs), [500, 30_000, 300_000, 5_400_000, 172_800_000, 90_000, 90_000])
  })

  it('refuses anything else', () => {
    for (const bad of ['', 'soon', '1x', '1h 30m', '-5s', '1.5h', 's', '30s ']) assert.equal(durationMs(bad), undefined, bad)
  })

  it('gives a bid whole seconds, from one second to a year', () => {
    assert.equal(secondsOf('1h30m'), 5400)
    for (const bad of ['500ms', '0', '400d', 'soon']) assert.throws(() => secondsOf(bad), /is not a duration/, bad)
  })
})
