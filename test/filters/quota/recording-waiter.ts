// A DecisionWaiter that keeps what the Redis store answered: the decision as numbers, or the
// kind of failure (tests of the batched Lua decisions read it back).
import type { DecisionResult, DecisionWaiter, RedisFailure } from '../../../filters/quota/redis-store.ts'

export class RecordingWaiter implements DecisionWaiter {
  reply: number[] | RedisFailure | undefined
  result(d: DecisionResult): void {
    this.reply = d.toArray()
  }
  failed(kind: RedisFailure): void {
    this.reply = kind
  }
  late(): void {}
}
