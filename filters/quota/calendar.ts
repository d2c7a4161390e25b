// Tenant calendars: which local day an instant belongs to and when that day starts and ends,
// in any IANA zone, DST included (23 h and 25 h days, zones whose midnight does not exist).
// The day boundaries are found once per day per zone; the hot path compares two numbers.
import { localDayNumber } from '../../config/quota-usage.ts'

const DAY_MS = 86_400_000
// No zone is more than 14 h from UTC; search a little wider.
const SPAN_MS = 16 * 3_600_000

/**
 * The first instant (ms) whose local date in `timeZone` is `day` or later: the day's start,
 * which is local midnight unless a DST jump skips midnight (then the jump's instant).
 */
export function dayStart(timeZone: string, day: number): number {
  let lo = day * DAY_MS - SPAN_MS // local date < day here
  let hi = day * DAY_MS + SPAN_MS // local date >= day here
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2)
    if (localDayNumber(timeZone, mid) >= day) hi = mid
    else lo = mid
  }
  return hi
}

export interface DayWindow {
  day: number
  /** ms, inclusive */
  start: number
  /** ms, exclusive: the next day's start */
  end: number
}

export function dayWindow(timeZone: string, now: number): DayWindow {
  const day = localDayNumber(timeZone, now)
  return { day, start: dayStart(timeZone, day), end: dayStart(timeZone, day + 1) }
}

/** A zone's current day, recomputed only when an instant falls outside the cached one. */
export class TenantCalendar {
  readonly timeZone: string
  day = 0
  start = 0
  end = 0

  constructor(timeZone: string) {
    this.timeZone = timeZone
  }

  /** The local day number of `now`. */
  dayOf(now: number): number {
    if (now < this.start || now >= this.end) {
      const w = dayWindow(this.timeZone, now)
      this.day = w.day
      this.start = w.start
      this.end = w.end
    }
    return this.day
  }

  /** Milliseconds from `now` to the end of its local day (the next local midnight). */
  msToEndOfDay(now: number): number {
    this.dayOf(now)
    return this.end - now
  }
}

const calendars = new Map<string, TenantCalendar>()

/** One calendar per zone per thread. */
export function calendarFor(timeZone: string): TenantCalendar {
  let c = calendars.get(timeZone)
  if (c === undefined) {
    c = new TenantCalendar(timeZone)
    calendars.set(timeZone, c)
  }
  return c
}
