/**
 * The best response of a bidder with budget X to what others bid (Feldman, Lai and Zhang, "A
 * price-anticipating resource allocation mechanism for distributed shared clusters", 2005): the
 * split of X over hosts that maximises the bidder's total share Σ w_j·x_j/(x_j + y_j), where y_j
 * is what the others bid on host j and w_j what host j offers.
 */
export interface Market {
  /** What the others bid on the host (over the same time as the budget); 0 counts as 1, the smallest unit. */
  others: number
  /** What the host is worth to the bidder (default: the CPU it offers). */
  weight: number
}

/**
 * The split, in real numbers: hosts sorted by w/y (the cheapest first); the largest k for which
 * the k-th host still gets a positive bid; then x_j = sqrt(w_j·y_j)·(X + Σ_{i≤k} y_i) /
 * Σ_{i≤k} sqrt(w_i·y_i) − y_j on those k, nothing on the rest.
 */
export function bestResponse (budget: number, markets: readonly Market[]): number[] {
  const hosts = markets.map((m, j) => {
    const y = Math.max(1, m.others)
    return { j, y, root: Math.sqrt(m.weight * y), value: m.weight / y }
  }).sort((a, b) => b.value - a.value)
  let k = 0
  let sumY = 0
  let sumRoot = 0
  for (const h of hosts) {
    if (h.root * (budget + sumY + h.y) / (sumRoot + h.root) - h.y <= 0) break
    k++
    sumY += h.y
    sumRoot += h.root
  }
  const split = markets.map(() => 0)
  for (const h of hosts.slice(0, k)) split[h.j] = h.root * (budget + sumY) / sumRoot - h.y
  return split
}

/**
 * The split in whole credits: each host's part rounded down, and what that leaves given one by
 * one to the hosts whose parts lost most in rounding, so that the parts add up to the budget.
 */
export function bestResponseInCredits (budget: number, markets: readonly Market[]): number[] {
  const parts = bestResponse(budget, markets).map(x => ({ whole: Math.floor(x), lost: x - Math.floor(x), bid: x > 0 }))
  let left = budget - parts.reduce((n, p) => n + p.whole, 0)
  const byLoss = parts.filter(p => p.bid).sort((a, b) => b.lost - a.lost)
  for (let i = 0; left > 0 && byLoss.length > 0; i = (i + 1) % byLoss.length, left--) {
    const p = byLoss[i]
    if (p !== undefined) p.whole++
  }
  return parts.map(p => p.whole)
}

/** The bidder's total share with split `x`: Σ w_j·x_j/(x_j + y_j). */
export function totalShare (x: readonly number[], markets: readonly Market[]): number {
  return markets.reduce((n, m, j) => {
    const xj = x[j] ?? 0
    return xj <= 0 ? n : n + m.weight * xj / (xj + Math.max(1, m.others))
  }, 0)
}
