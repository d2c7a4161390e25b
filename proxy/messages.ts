// The supervisor ↔ worker protocol (structured-clone messages over the worker port).
import type { MetricObjectWithValues, MetricValue } from 'prom-client'
import type { GatewayConfig } from '../config/schema.ts'
import type { UsageSnapshot } from './tenant-usage.ts'

export interface WorkerData {
  workerId: number
  version: number
  config: GatewayConfig
  shared: Record<string, SharedArrayBuffer>
  host: string | undefined
  port: number
}

export type MetricsJson = MetricObjectWithValues<MetricValue<string>>[]

export type ToWorker =
  | { t: 'config'; version: number; config: GatewayConfig }
  | { t: 'metrics'; id: number }
  | { t: 'usage'; id: number }
  | { t: 'drain'; deadlineMs: number }
  | { t: 'ping' }

export type FromWorker =
  | { t: 'listening'; port: number }
  | { t: 'applied'; version: number }
  | { t: 'apply-failed'; version: number; error: string }
  | { t: 'metrics'; id: number; data: MetricsJson }
  | { t: 'usage'; id: number; data: UsageSnapshot }
  | { t: 'log'; chunk: string }
  | { t: 'drained' }
  | { t: 'pong' }
  | { t: 'fatal'; error: string; /** The error's code (EADDRINUSE…), when it has one. */ code?: string }
