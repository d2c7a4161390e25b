// Rendered manifests, sweep 24g: components/control-plane-connected kept the ingress's 30 s
// terminationGracePeriodSeconds, sized for the preStop pause plus the drain. A proxy fed by the
// control plane also reports usage on its way out, each report bounded: one before the drain and
// one after it. With a hung control plane the stop took preStop + flush + drain (+ the hard stop of
// a worker that ignores it) + flush, past 30 s: the kubelet's SIGKILL cut the last report and the
// exit. The worst-case stop is summed from the rendered pod, the config in force and the bounds
// the code sets.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { parseConfigText, validateConfig } from '../../config/load.ts'
import { ROOT } from '../helpers/proxy.ts'
import { renderKustomize, type KubeObject } from './kustomize.ts'

type ConfigMap = KubeObject & { data: Record<string, string> }
interface Container {
  name: string
  env?: { name: string }[]
  lifecycle?: { preStop?: { sleep?: { seconds: number } } }
}
type Deployment = KubeObject & { spec: { template: { spec: { terminationGracePeriodSeconds?: number; containers: Container[] } } } }

/** A millisecond bound the code sets, read from its source (`2_000` → 2000). */
function boundMs(file: string, pattern: RegExp): number {
  const m = pattern.exec(readFileSync(join(ROOT, file), 'utf8'))
  if (!m) throw new Error(`${file}: ${pattern} not found`)
  return Number(m[1]!.replace(/_/g, ''))
}

describe('components/control-plane-connected: the pod outlives a stop with a hung control plane', () => {
  const closeFlushMs = boundMs('proxy/control-plane-client.ts', /const CLOSE_FLUSH_MS = ([\d_]+)/)
  const afterDrainFlushMs = boundMs('proxy/cli.ts', /cpClient\.flushUsage\(\)[^\n]*setTimeout\(r, ([\d_]+)\)/)
  const hardStopMs = boundMs('proxy/supervisor.ts', /\}, deadlineMs \+ ([\d_]+)\)/)

  it('overlays/ingress-connected', () => {
    const objs = renderKustomize(join(ROOT, 'deploy/k8s/overlays/ingress-connected'))
    const d = objs.find((o) => o.kind === 'Deployment' && o.metadata.name === 'igw') as Deployment
    const pod = d.spec.template.spec
    const igw = pod.containers.find((c) => c.name === 'igw')!
    expect(igw.env?.some((e) => e.name === 'IGW_CONTROL_PLANE')).toBe(true)
    // The config the control plane seeds from igw-config, with the values the pod gets.
    const values = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('igw-values')) as ConfigMap
    const doc = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('igw-config')) as ConfigMap
    const config = validateConfig(parseConfigText(doc.data['igw.yaml']!, 'igw.yaml', { ...values.data }))
    const preStopMs = (igw.lifecycle?.preStop?.sleep?.seconds ?? 0) * 1000
    expect(preStopMs).toBeGreaterThan(0)
    const worstStopMs = preStopMs + closeFlushMs + config.shutdown.delayMs + config.shutdown.drainTimeoutMs + hardStopMs + afterDrainFlushMs
    expect((pod.terminationGracePeriodSeconds ?? 30) * 1000, `worst-case stop ${worstStopMs} ms`).toBeGreaterThan(worstStopMs)
  })
})
