import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { rebid, type HostPrice, type RebidInput } from '../../src/market/index.ts'

const NOW = 1_000_000
const hosts = (...prices: number[]): Map<string, HostPrice> => new Map(prices.map((price, j) => [`h${j}`, { price, cpu: 1 }]))

/** A round with 100 s left and 100 credits: 10 credits for each 10 s ahead. */
function round (over: Partial<RebidInput>): RebidInput {
  return { now: NOW, until: NOW + 100_000, left: 100, horizon: 10, prices: hosts(0.1, 0.4, 0.9), instances: [0, 1, 2].map(j => ({ id: `i${j}`, host: `h${j}`, bid: {} })), ...over }
}

/** A bidder's round: how the best response turns into payments and bid times. */
describe('a round of the automatic bidder', () => {
  it('pays each new bid its host\'s part of the best response for the time ahead (others 1, 4, 9 over it: 3, 4, 3)', () => {
    assert.deepEqual(rebid(round({})), [
      { instance: 'i0', host: 'h0', pay: 3, seconds: 10 },
      { instance: 'i1', host: 'h1', pay: 4, seconds: 10 },
      { instance: 'i2', host: 'h2', pay: 3, seconds: 10 },
    ])
  })

  it('leaves out its own bids from what others bid, stretches a bid that holds more than its part, and leaves one that holds its part alone', () => {
    // Host 0's price is 0.4 of which 0.3 is the budget's own bid (3 held over 10 s): others still bid 1 over the time ahead.
    const instances = [
      { id: 'i0', host: 'h0', bid: { bid: 3, spent: 0, rate: 0.3, bidUntil: NOW + 10_000 } },
      { id: 'i1', host: 'h1', bid: { bid: 10, spent: 2, rate: 0.8, bidUntil: NOW + 10_000 } },
      { id: 'i2', host: 'h2', bid: {} },
    ]
    const steps = rebid(round({ prices: hosts(0.4, 1.2, 0.9), instances, left: 100 - 13 }))
    // What the budget has: 87 left and 3 + 8 held, over 100 s; 9.8 for the next 10 s.
    assert.equal(steps.find(s => s.instance === 'i0'), undefined, 'a bid that holds its part at its rate is left alone')
    const i1 = steps.find(s => s.instance === 'i1')
    assert.equal(i1?.pay, 0)
    assert.ok(i1 !== undefined && i1.seconds > 10, `a bid holding 8, more than its part, lasts longer at a lower rate (${i1?.seconds} s)`)
    assert.ok((steps.find(s => s.instance === 'i2')?.pay ?? 0) > 0)
  })

  it('never pays more than the allowance has left', () => {
    // Three equal hosts each get a fraction of a credit, paid as a whole one: the third has none left.
    const steps = rebid(round({ left: 2, prices: hosts(0.1, 0.1, 0.1) }))
    assert.deepEqual(steps.map(s => s.pay), [1, 1])
  })

  it('spreads what a host the best response leaves out holds until the budget ends, and ends every bid with the budget', () => {
    const instances = [
      { id: 'i0', host: 'h0', bid: {} },
      { id: 'i1', host: 'h1', bid: { bid: 5, spent: 0, rate: 0.5, bidUntil: NOW + 10_000 } },
    ]
    // Host 1 is so dear that the best response bids nothing there.
    const steps = rebid(round({ prices: new Map([['h0', { price: 0.1, cpu: 1 }], ['h1', { price: 1000.5, cpu: 1 }]]), instances, left: 10, until: NOW + 40_000 }))
    assert.deepEqual(steps.find(s => s.instance === 'i1'), { instance: 'i1', host: 'h1', pay: 0, seconds: 40 })
    for (const s of steps) assert.ok(s.seconds <= 40)
    assert.deepEqual(rebid(round({ until: NOW + 500 })), [], 'less than a second left: nothing to bid')
  })
})
