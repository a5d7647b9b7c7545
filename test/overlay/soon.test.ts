import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Soon } from '../../src/overlay/soon.ts'

describe('work asked for soon', () => {
  it('runs once for a burst of asks, at the delay after the first, and again for asks after it ran', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] })
    let runs = 0
    const soon = new Soon(200, () => { runs++ })
    soon.ask()
    t.mock.timers.tick(150)
    soon.ask()
    soon.ask()
    t.mock.timers.tick(50)
    assert.equal(runs, 1, 'at 200 ms after the first ask: later asks joined it and did not put it off')
    t.mock.timers.tick(500)
    assert.equal(runs, 1)
    soon.ask()
    t.mock.timers.tick(200)
    assert.equal(runs, 2)
  })

  it('runs nothing once cancelled', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] })
    let runs = 0
    const soon = new Soon(200, () => { runs++ })
    soon.ask()
    soon.cancel()
    t.mock.timers.tick(1000)
    assert.equal(runs, 0)
  })
})
