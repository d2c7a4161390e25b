// Per-tenant request-rate anomaly detection: each interval's count is compared with the
// tenant's own exponentially weighted mean and variance (a z-score). One alert when z crosses
// the threshold; it re-arms only after z stayed under a lower bound for a few intervals
// (hysteresis), so a tenant hovering at the threshold does not page anyone twice. Intervals
// without requests do not move the baseline (an idle night is not a rate of zero to return from).

export interface AnomalySettings {
  alpha: number
  zThreshold: number
  clearZ: number
  clearIntervals: number
  warmupIntervals: number
  minRequests: number
}

/** Plain state, so it can live in shared memory (see shared-table.ts) or a test's object. */
export interface AnomalyState {
  mean: number
  variance: number
  /** Intervals observed. */
  n: number
  alerting: boolean
  /** Consecutive quiet intervals while alerting. */
  quiet: number
}

export interface Observation {
  /** The z-score of this interval against the baseline before it. */
  z: number
  /** 'alert' exactly when this interval started an anomaly; 'clear' when one ended. */
  change: 'alert' | 'clear' | undefined
  baseline: number
  stddev: number
}

export function newAnomalyState(): AnomalyState {
  return { mean: 0, variance: 0, n: 0, alerting: false, quiet: 0 }
}

/**
 * Feed one interval's request count. The standard deviation has a Poisson floor (√mean, at least
 * 1): a tenant with a perfectly steady rate has zero variance, and any jitter would otherwise
 * be an infinite z.
 */
export function observe(s: AnomalyState, count: number, cfg: AnomalySettings): Observation {
  const baseline = s.mean
  const stddev = Math.max(Math.sqrt(s.variance), Math.sqrt(Math.max(baseline, 1)))
  const z = s.n === 0 ? 0 : (count - baseline) / stddev
  let change: Observation['change']
  if (!s.alerting) {
    if (s.n >= cfg.warmupIntervals && count >= cfg.minRequests && z > cfg.zThreshold) {
      s.alerting = true
      s.quiet = 0
      change = 'alert'
    }
  } else if (z < cfg.clearZ) {
    if (++s.quiet >= cfg.clearIntervals) {
      s.alerting = false
      s.quiet = 0
      change = 'clear'
    }
  } else {
    s.quiet = 0
  }
  // An interval without a single request says nothing about the tenant's rate when it uses the
  // gateway — an idle night, a batch job between runs, a proxy not yet in the load balancer's
  // pool — so it leaves the baseline (and the warm-up count) as it was. Folding zeros in decayed
  // the baseline to nothing: the tenant's usual traffic coming back then scored z ≈ requests and
  // alerted every morning, every batch run and on every tenant after each rolling restart.
  if (count === 0) return { z, change, baseline, stddev }
  // EWMA of mean and variance (West's incremental form).
  if (s.n === 0) {
    s.mean = count
    s.variance = 0
  } else {
    const diff = count - s.mean
    const incr = cfg.alpha * diff
    s.mean += incr
    s.variance = (1 - cfg.alpha) * (s.variance + diff * incr)
  }
  s.n++
  return { z, change, baseline, stddev }
}
