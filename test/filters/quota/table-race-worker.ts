// Worker thread for shared-table-threads.test.ts: races quota decisions on one shared table.
import { parentPort, workerData } from 'node:worker_threads'
import { decideLocal, Verdict } from '../../../filters/quota/local-limiter.ts'
import type { KindRule } from '../../../filters/quota/rules.ts'
import { QuotaTable } from '../../../filters/quota/shared-table.ts'

const { buffer, rule, tenants, decisions, now, day } = workerData as { buffer: SharedArrayBuffer; rule: KindRule; tenants: string[]; decisions: number; now: number; day: number }
const table = new QuotaTable(buffer)
const v = new Verdict()
// Wait for the go signal so every thread starts together.
parentPort!.postMessage({ ready: true })
Atomics.wait(new Int32Array(workerData.go as SharedArrayBuffer), 0, 0)
let admitted = 0
const slots: number[] = []
for (const t of tenants) slots.push(table.slotOf(t))
for (let i = 0; i < decisions; i++) {
  if (decideLocal(table, slots[0]!, rule, 1, now, day, false, 1, v).allowed) admitted++
}
parentPort!.postMessage({ admitted, slots })
