// Run one container of a rendered pod spec on this machine, as Kubernetes would run it in the
// igw image: its args and environment (envFrom ConfigMaps, env), its ConfigMap volumes as files,
// its writable volumes as directories the pod's user owns, everything else root-owned, as the
// pod's uid when we are root. Paths under a mountPath are moved into a temp directory.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { IGW_BIN } from '../helpers/proxy.ts'
import type { KubeObject } from './kustomize.ts'

export interface RunContainer {
  name: string
  args?: string[]
  env?: { name: string; value?: string; valueFrom?: { configMapKeyRef?: { name: string; key: string }; secretKeyRef?: { name: string; key: string }; fieldRef?: { fieldPath: string } } }[]
  envFrom?: { configMapRef?: { name: string } }[]
  volumeMounts?: { name: string; mountPath: string }[]
  securityContext?: { runAsUser?: number; runAsGroup?: number }
}
export interface RunPod {
  securityContext?: { runAsUser?: number; runAsGroup?: number }
  volumes?: { name: string; configMap?: { name: string }; secret?: object; emptyDir?: object; persistentVolumeClaim?: object }[]
}

export interface Running {
  child: ChildProcess
  output: () => string
  /** Resolves with the first match of re in the output (stdout and stderr). */
  waitFor(re: RegExp, ms?: number): Promise<RegExpExecArray>
  stop(): Promise<number | null>
  /** A path as the container sees it → where it is on this machine. */
  local(path: string): string
}

/**
 * The compile cache the containers run here share: writable by any uid (Node keeps a subdirectory
 * per uid); not under /tmp, which pods mount (a path there would move into the pod's volume).
 */
function podCompileCache(): string {
  const dir = '/var/tmp/igw-test-compile-cache-pods'
  mkdirSync(dir, { recursive: true })
  try {
    chmodSync(dir, 0o1777)
  } catch {
    // made by another user, who opened it already
  }
  return dir
}

export function configMapData(objs: KubeObject[], name: string): Record<string, string> {
  const cm = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name === name) as (KubeObject & { data?: Record<string, string> }) | undefined
  if (!cm) throw new Error(`no ConfigMap ${name} in the rendered output`)
  return cm.data ?? {}
}

/** A directory for a pod's volumes, made ahead when a test must name its paths before the start. */
export function podRoot(): string {
  return mkdtempSync(POD_ROOT_PREFIX)
}
const POD_ROOT_PREFIX = join(tmpdir(), 'igw-pod-')

/** Where a volume's files are on this machine, under a podRoot(). */
export function volumeDir(root: string, volume: string): string {
  return join(root, 'volumes', volume)
}

export async function runContainer(objs: KubeObject[], pod: RunPod, c: RunContainer, overrides: Record<string, string> = {}, root = podRoot()): Promise<Running> {
  chmodSync(root, 0o755)
  const uid = c.securityContext?.runAsUser ?? pod.securityContext?.runAsUser ?? 10001
  const gid = c.securityContext?.runAsGroup ?? pod.securityContext?.runAsGroup ?? uid
  const asRoot = process.getuid?.() === 0
  const mounts = [...(c.volumeMounts ?? [])].sort((a, b) => b.mountPath.length - a.mountPath.length)
  const local = (p: string) => {
    if (p.startsWith(POD_ROOT_PREFIX)) return p // already a pod's path on this machine
    for (const m of mounts) if (p === m.mountPath || p.startsWith(`${m.mountPath}/`)) return volumeDir(root, m.name) + p.slice(m.mountPath.length)
    return p
  }
  // Only paths under a mountPath change; in args, env and the mounted files (a config document
  // naming another mounted file, e.g. a JWKS).
  const rewrite = (s: string) => s.replace(/(?<=^|[:=\s])\/[\w./-]+/gm, (p) => local(p))
  for (const m of mounts) {
    const dir = volumeDir(root, m.name)
    mkdirSync(dir, { recursive: true })
    const v = pod.volumes?.find((x) => x.name === m.name)
    if (v?.configMap) for (const [k, text] of Object.entries(configMapData(objs, v.configMap.name))) writeFileSync(join(dir, k), rewrite(text))
    else if (v && !v.secret && asRoot) chownSync(dir, uid, gid) // emptyDir / PVC: writable by the pod (fsGroup)
  }

  // The image sets NODE_COMPILE_CACHE (deploy/Dockerfile, warmed at build); without one each start
  // here compiled igw and its worker threads from scratch, seconds of CPU under a loaded suite.
  const env: Record<string, string> = { NODE_COMPILE_CACHE: podCompileCache() }
  for (const f of c.envFrom ?? []) if (f.configMapRef) Object.assign(env, configMapData(objs, f.configMapRef.name))
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value
    else if (e.valueFrom?.configMapKeyRef) env[e.name] = configMapData(objs, e.valueFrom.configMapKeyRef.name)[e.valueFrom.configMapKeyRef.key]!
    else if (e.valueFrom?.fieldRef?.fieldPath === 'metadata.name') env[e.name] = `${c.name}-test-pod`
    else if (e.valueFrom?.secretKeyRef && overrides[e.name] === undefined) {
      // Secrets are created by the operator and never rendered: the test must supply the value.
      throw new Error(`${e.name} comes from Secret ${e.valueFrom.secretKeyRef.name}/${e.valueFrom.secretKeyRef.key}: pass it in the overrides`)
    }
  }
  Object.assign(env, overrides)
  // Kubernetes expands $(VAR) in args from the container's environment.
  const args = (c.args ?? []).map((a) => rewrite(a.replace(/\$\((\w+)\)/g, (_, n: string) => env[n] ?? '')))
  const argv = [IGW_BIN, ...args]
  const command = asRoot ? ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', process.execPath, ...argv] : [process.execPath, ...argv]
  const child = spawn(command[0]!, command.slice(1), {
    cwd: root,
    env: { PATH: process.env.PATH, HOME: '/nonexistent', NODE_ENV: 'production', ...Object.fromEntries(Object.entries(env).map(([k, v]) => [k, rewrite(v)])) },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  const waiters: (() => void)[] = []
  const onData = (d: Buffer) => {
    out += d.toString()
    for (const w of waiters.splice(0)) w()
  }
  child.stdout!.on('data', onData)
  child.stderr!.on('data', onData)
  const exited = once(child, 'exit').then(([code]) => code as number | null)
  return {
    child,
    output: () => out,
    local,
    waitFor(re, ms = 15_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${re}:\n${out}`)), ms)
        const check = () => {
          const m = re.exec(out)
          if (m) {
            clearTimeout(timer)
            resolve(m)
          } else if (child.exitCode !== null || child.signalCode !== null) {
            clearTimeout(timer)
            reject(new Error(`exited (${child.exitCode ?? child.signalCode}) before ${re}:\n${out}`))
          } else waiters.push(check)
        }
        void exited.then(() => waiters.push(() => undefined)).then(check)
        check()
      })
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      const code = await exited
      rmSync(root, { recursive: true, force: true })
      return code
    },
  }
}
