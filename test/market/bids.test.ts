import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { bestResponse, bestResponseInCredits, changed, chargedAt, opened, rateAt, settle, sharesOf, totalShare, type Market } from '../../src/market/index.ts'

const T0 = 1_700_000_000_000

/** A bid's charges, second by second, in whole credits. */
describe('a bid', () => {
  it('charges evenly per whole second, and exactly what it was paid by its end', () => {
    const b = opened(100, 20, T0)
    assert.equal(chargedAt(b, T0 + 999), 0)
    assert.equal(chargedAt(b, T0 + 10_000), 50)
    assert.equal(chargedAt(b, T0 + 10_999), 50, 'stopped within its 11th second, half is charged')
    assert.equal(chargedAt(b, T0 + 19_999), 95)
    assert.equal(chargedAt(b, T0 + 20_000), 100)
    assert.equal(chargedAt(b, T0 + 99_000), 100)
  })

  it('settled at any moments, charges the same in all and never more than it was paid', () => {
    const b = opened(7, 3, T0)
    let s = b
    for (const t of [T0 + 400, T0 + 1300, T0 + 1301, T0 + 2999]) {
      s = settle(s, t)
      assert.equal(s.charged, chargedAt(b, t), `settled at +${t - T0} ms`)
      assert.equal((s.chargedTo - T0) % 1000, 0)
    }
    assert.equal(settle(s, T0 + 3000).charged, 7)
  })

  it('changes its rate when its time changes, without a payment (Tycoon\'s Fig. 2), and takes more credits', () => {
    const b = opened(300, 100, T0)
    assert.equal(rateAt(b, T0), 3)
    const longer = changed(b, T0 + 20_000, 0, 240)
    assert.equal(longer.charged, 60)
    assert.equal(longer.paid, 300)
    assert.equal(rateAt(longer, T0 + 20_000), 1)
    const raised = changed(longer, T0 + 20_000, 240)
    assert.equal(rateAt(raised, T0 + 20_000), 2)
    assert.equal(chargedAt(raised, raised.until), 540)
  })

  it('handles amounts far beyond what a double multiplies exactly', () => {
    const big = Number.MAX_SAFE_INTEGER
    const b = opened(big, 3, T0)
    assert.equal(chargedAt(b, T0 + 1000), Math.floor(big / 3))
    assert.equal(chargedAt(b, T0 + 3000), big)
  })
})

describe('shares', () => {
  it('are in proportion to the rates of bids', () => {
    const s = sharesOf(new Map([['a', 3], ['b', 1]]), [], 0.05)
    assert.equal(s.get('a'), 0.75)
    assert.equal(s.get('b'), 0.25)
    // 10 over 10 s, 20 over 10 s, 30 over 30 s.
    const three = sharesOf(new Map([['a', 1], ['b', 2], ['c', 1]]), [], 0.05)
    assert.deepEqual([...three.values()], [0.25, 0.5, 0.25])
  })

  it('give each unbid instance the floor, and never more than half to them all', () => {
    const s = sharesOf(new Map([['a', 1]]), ['u'], 0.1)
    assert.equal(s.get('u'), 0.1)
    assert.ok(Math.abs((s.get('a') ?? 0) - 0.9) < 1e-12)
    const many = sharesOf(new Map([['a', 1]]), ['u', 'v', 'w', 'x'], 0.2)
    assert.equal(many.get('u'), 0.125)
    assert.equal(many.get('a'), 0.5)
    assert.deepEqual([...sharesOf(new Map(), ['u', 'v'], 0.1).values()], [0.5, 0.5])
  })
})

/** A small seeded generator, so that a failing case can be run again. */
function random (seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0
    return s / 2 ** 32
  }
}

describe('the best response', () => {
  const equal = (ys: number[]): Market[] => ys.map(others => ({ others, weight: 1 }))

  it('matches the closed form on worked examples', () => {
    const x = bestResponse(10, equal([1, 4, 9]))
    assert.deepEqual(x.map(v => Math.round(v * 1e9) / 1e9), [3, 4, 3])
    assert.deepEqual(bestResponseInCredits(10, equal([1, 4, 9])), [3, 4, 3])
    // A host far dearer than the rest gets nothing: sqrt(1)*(1+1+1)/(1+1) - 1 > 0, but with y3 = 100 its bid would be negative.
    const skip = bestResponse(1, equal([1, 1, 100]))
    assert.equal(skip[2], 0)
    assert.ok(Math.abs((skip[0] ?? 0) - 0.5) < 1e-12)
    // A host worth twice as much at the same price gets more.
    const weighted = bestResponse(10, [{ others: 4, weight: 2 }, { others: 4, weight: 1 }])
    assert.ok((weighted[0] ?? 0) > (weighted[1] ?? 0))
    assert.ok(Math.abs((weighted[0] ?? 0) + (weighted[1] ?? 0) - 10) < 1e-9)
  })

  it('spends the whole budget in whole credits', () => {
    const next = random(7)
    for (let n = 0; n < 200; n++) {
      const markets = Array.from({ length: 1 + Math.floor(next() * 8) }, () => ({ others: Math.floor(next() * 1000), weight: 1 + Math.floor(next() * 4) }))
      const budget = 1 + Math.floor(next() * 5000)
      const split = bestResponseInCredits(budget, markets)
      assert.equal(split.reduce((a, b) => a + b, 0), budget)
      assert.ok(split.every(x => Number.isInteger(x) && x >= 0))
    }
  })

  it('is never beaten by a random split of the same budget', () => {
    const next = random(42)
    for (let n = 0; n < 500; n++) {
      const markets = Array.from({ length: 1 + Math.floor(next() * 8) }, () => ({ others: 1 + next() * 100, weight: 0.5 + next() * 4 }))
      const budget = 0.1 + next() * 200
      const best = totalShare(bestResponse(budget, markets), markets)
      const cuts = markets.map(() => -Math.log(1 - next()))
      const sum = cuts.reduce((a, b) => a + b, 0)
      const other = cuts.map(c => budget * c / sum)
      assert.ok(totalShare(other, markets) <= best + 1e-9, `case ${n}: a random split ${other.map(v => v.toFixed(2)).join(',')} beats the best response`)
    }
  })
})
