// deploy/Dockerfile cannot be built here (no engine, no base image from the internet), so it is
// checked three ways: dockerfile-utils (the validator behind the VS Code Docker extension) for
// syntax and instruction errors; its parser for the properties the image must have; and a run
// of exactly what the runtime stage copies, as the image's uid, through the image's own
// ENTRYPOINT and HEALTHCHECK commands.
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { chmodSync, copyFileSync, cpSync, existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DockerfileParser, type Instruction } from 'dockerfile-ast'
import { validate, ValidationSeverity } from 'dockerfile-utils'
import { afterAll, describe, expect, it } from 'vitest'
import { ROOT } from '../helpers/proxy.ts'
import { startDemoBackend } from '../helpers/backends.ts'

const DOCKERFILE = join(ROOT, 'deploy/Dockerfile')
/** What the runtime stage must copy: the code `igw` runs (policies/ holds the built OPA bundles). */
const RUNTIME_FOLDERS = ['bin', 'proxy', 'filters', 'config', 'control-plane', 'policies']
const text = readFileSync(DOCKERFILE, 'utf8')
const dockerfile = DockerfileParser.parse(text)

interface Stage {
  name: string | undefined
  image: string
  instructions: Instruction[]
}

/** Instructions grouped by the FROM that starts each stage. */
function stages(): Stage[] {
  const out: Stage[] = []
  for (const ins of dockerfile.getInstructions()) {
    if (ins.getKeyword() === 'FROM') {
      const args = ins.getArguments().map((a) => a.getValue())
      const as = args.findIndex((a) => a.toUpperCase() === 'AS')
      out.push({ name: as >= 0 ? args[as + 1] : undefined, image: args.find((a) => !a.startsWith('--'))!, instructions: [] })
    } else {
      out.at(-1)?.instructions.push(ins)
    }
  }
  return out
}

/** Words of an instruction after its keyword, flags (--from=…) included. */
function argsOf(ins: Instruction): string[] {
  return ins.toString().replace(/\\\r?\n/g, ' ').trim().split(/\s+/).slice(1)
}

/** The JSON (exec) form of ENTRYPOINT / CMD / HEALTHCHECK CMD, or undefined for shell form. */
function execForm(ins: Instruction): string[] | undefined {
  const content = (ins.getArgumentsContent() ?? '').replace(/\\\r?\n/g, ' ')
  const json = ins.getKeyword() === 'HEALTHCHECK' ? /\bCMD\s+(\[.*\])\s*$/s.exec(content)?.[1] : content.trim()
  if (json === undefined || !json.startsWith('[')) return undefined
  return JSON.parse(json) as string[]
}

const all = stages()
const runtime = all.at(-1)!
const byKeyword = (stage: Stage, kw: string) => stage.instructions.filter((i) => i.getKeyword() === kw)

describe('deploy/Dockerfile: lint', () => {
  it('has no problem dockerfile-utils reports, with every optional check raised to an error', () => {
    const E = ValidationSeverity.ERROR
    const problems = validate(text, {
      deprecatedMaintainer: E,
      directiveCasing: E,
      emptyContinuationLine: E,
      instructionCasing: E,
      instructionCmdMultiple: E,
      instructionEntrypointMultiple: E,
      instructionHealthcheckMultiple: E,
      instructionJSONInSingleQuotes: E,
      instructionWorkdirRelative: E,
    })
    expect(problems.map((p) => `line ${p.range.start.line + 1}: ${p.message}`)).toEqual([])
  })

  it('the linter is live: it reports a broken Dockerfile', () => {
    const broken = 'FROM node:24-bookworm-slim\nHEALTHCHECK CMD\nEXPOSE 99999\nWORKDIR app\n'
    const problems = validate(broken, { instructionWorkdirRelative: ValidationSeverity.ERROR })
    expect(problems.length).toBeGreaterThanOrEqual(2)
  })
})

describe('deploy/Dockerfile: the image it describes', () => {
  it('is multi-stage on a pinned Node 24 base (never :latest), no ADD', () => {
    expect(all.length).toBeGreaterThanOrEqual(2)
    const base = dockerfile.getInitialARGs().find((a) => a.getProperty()?.getName() === 'NODE_IMAGE')?.getProperty()?.getValue()
    expect(base).toMatch(/^node:24[.-]/)
    for (const s of all) {
      const image = s.image.replace('${NODE_IMAGE}', base ?? '')
      expect(image, `stage ${s.name}`).toMatch(/:[^:]+$|@sha256:/)
      expect(image, `stage ${s.name}`).not.toMatch(/:latest$/)
    }
    expect(dockerfile.getInstructions().filter((i) => i.getKeyword() === 'ADD')).toEqual([])
  })

  it('installs production dependencies only, with the lockfile (npm ci --omit=dev), and nothing else', () => {
    const runs = all.flatMap((s) => byKeyword(s, 'RUN').map((r) => r.getArgumentsContent() ?? ''))
    const installs = runs.filter((r) => /\bnpm\s+(ci|install|i)\b/.test(r))
    expect(installs).toHaveLength(1)
    expect(installs[0]).toMatch(/\bnpm ci\b/)
    expect(installs[0]).toMatch(/--omit=dev\b/)
    // The runtime stage gets node_modules from the deps stage, never by installing.
    const fromDeps = byKeyword(runtime, 'COPY').filter((c) => argsOf(c).some((a) => a.startsWith('--from=')))
    expect(fromDeps.map(argsOf)).toEqual([['--from=deps', '/app/node_modules', './node_modules']])
    expect(runtime.instructions.some((i) => i.getKeyword() === 'RUN' && /npm (ci|install)/.test(i.getArgumentsContent() ?? ''))).toBe(false)
  })

  it('runs as a numeric non-root user, set after every COPY and RUN of the runtime stage', () => {
    const users = byKeyword(runtime, 'USER')
    expect(users).toHaveLength(1)
    const [uid, gid] = argsOf(users[0]!)[0]!.split(':')
    expect(Number(uid)).toBeGreaterThan(0)
    expect(uid).toMatch(/^\d+$/)
    expect(gid).toMatch(/^\d+$/)
    const userAt = runtime.instructions.indexOf(users[0]!)
    const lastWrite = Math.max(...runtime.instructions.map((i, n) => (['COPY', 'RUN'].includes(i.getKeyword()) ? n : -1)))
    expect(userAt).toBeGreaterThan(lastWrite)
  })

  it('has igw as its exec-form entrypoint, defaulting to the proxy with /etc/igw/igw.yaml', () => {
    const [entrypoint] = byKeyword(runtime, 'ENTRYPOINT')
    expect(execForm(entrypoint!)).toEqual(['node', 'bin/igw.js'])
    const [cmd] = byKeyword(runtime, 'CMD')
    expect(execForm(cmd!)).toEqual(['proxy', '--config', '/etc/igw/igw.yaml'])
    expect(byKeyword(runtime, 'EXPOSE').flatMap(argsOf)).toEqual(expect.arrayContaining(['8080', '9901', '7070']))
  })

  it('has a HEALTHCHECK on the admin port, in exec form (no shell needed)', () => {
    const [hc] = byKeyword(runtime, 'HEALTHCHECK')
    expect(hc).toBeDefined()
    const cmd = execForm(hc!)
    expect(cmd?.[0]).toBe('node')
    const env = byKeyword(runtime, 'ENV').map((e) => e.getArgumentsContent() ?? '').join(' ')
    expect(env).toMatch(/IGW_HEALTHCHECK_URL=http:\/\/127\.0\.0\.1:9901\/healthz/)
  })

  it('copies only the runtime folders, each of which exists, and the build context ignores the rest', () => {
    const sources = byKeyword(runtime, 'COPY')
      .filter((c) => !argsOf(c).some((a) => a.startsWith('--from=')))
      .map((c) => argsOf(c).filter((a) => !a.startsWith('--'))[0]!)
    expect(sources.sort()).toEqual(['bin', 'config', 'control-plane', 'filters', 'package.json', 'policies', 'proxy'])
    const ignore = readFileSync(join(ROOT, 'deploy/Dockerfile.dockerignore'), 'utf8')
    for (const s of [...sources, 'package-lock.json']) expect(ignore).toContain(`!${s}${s.includes('.') ? '' : '/'}`)
    for (const s of sources.filter((x) => x !== 'control-plane')) expect(existsSync(join(ROOT, s)), s).toBe(true)
  })

  it('the runtime code imports no devDependency and nothing outside the copied folders', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }
    const prod = new Set(Object.keys(pkg.dependencies))
    const problems: string[] = []
    const walk = (dir: string) => {
      if (!existsSync(join(ROOT, dir))) return
      for (const entry of readdirSync(join(ROOT, dir), { withFileTypes: true, recursive: true })) {
        if (!entry.isFile() || !/\.(ts|js|mjs)$/.test(entry.name) || entry.name.endsWith('.test.ts')) continue
        const rel = join(entry.parentPath, entry.name).slice(ROOT.length)
        const src = readFileSync(join(entry.parentPath, entry.name), 'utf8')
        for (const m of src.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)) {
          const spec = (m[1] ?? m[2])!
          if (spec.startsWith('node:')) continue
          if (spec.startsWith('.')) {
            const target = join(entry.parentPath, spec).slice(ROOT.length)
            if (!/^\/?(bin|proxy|filters|config|control-plane|policies)\//.test(target)) problems.push(`${rel} imports ${spec} (outside the image)`)
            continue
          }
          const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!
          if (!prod.has(name) && !/\bimport\s+type\b/.test(m[0])) problems.push(`${rel} imports ${name}, which is not a production dependency`)
        }
      }
    }
    for (const dir of RUNTIME_FOLDERS) walk(dir)
    // The sample backend is used by `igw demo` (in the image) and by tests; demo-backend's
    // graphql-yoga is a production dependency for that reason.
    expect(problems).toEqual([])
  })
})

describe('deploy/Dockerfile: run what the image holds', () => {
  const cleanup: (() => void | Promise<void>)[] = []
  afterAll(async () => {
    for (const c of cleanup.reverse()) await c()
  })

  it('the staged runtime tree starts as uid 10001 through ENTRYPOINT+CMD, passes its HEALTHCHECK, drains on SIGTERM', async () => {
    // Stage the image: the runtime COPYs, and node_modules holding production packages only.
    const stage = mkdtempSync(join(tmpdir(), 'igw-image-'))
    chmodSync(stage, 0o755) // the image user must reach it, as it reaches /app
    cleanup.push(() => rmSync(stage, { recursive: true, force: true }))
    const app = join(stage, 'app')
    mkdirSync(join(app, 'node_modules'), { recursive: true })
    for (const s of ['package.json', ...RUNTIME_FOLDERS]) {
      if (existsSync(join(ROOT, s))) cpSync(join(ROOT, s), join(app, s), { recursive: true })
    }
    const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> }
    for (const [path, meta] of Object.entries(lock.packages)) {
      const m = /^node_modules\/((?:@[^/]+\/)?[^/]+)$/.exec(path)
      if (!m || meta.dev) continue
      const name = m[1]!
      if (name.startsWith('@')) mkdirSync(join(app, 'node_modules', name.split('/')[0]!), { recursive: true })
      symlinkSync(join(ROOT, 'node_modules', name), join(app, 'node_modules', name))
    }
    expect(existsSync(join(app, 'node_modules/vitest'))).toBe(false)

    // The RUN that warms Node's compile cache, as the build runs it (as root there and in CI:
    // the warm-up itself as the image's uid), on the staged tree.
    const envs = byKeyword(runtime, 'ENV').map((e) => e.getArgumentsContent() ?? '').join(' ')
    const cacheDir = /\bNODE_COMPILE_CACHE=(\S+)/.exec(envs)?.[1]
    expect(cacheDir).toBe('/app/.compile-cache')
    const warmRun = byKeyword(runtime, 'RUN').map((r) => argsOf(r).join(' ')).find((r) => r.includes('warm-compile-cache'))!
    const mount = /--mount=type=bind,source=(\S+),target=(\S+)/.exec(warmRun)!
    expect(readFileSync(join(ROOT, 'deploy/Dockerfile.dockerignore'), 'utf8')).toContain(`!${mount[1]}`)
    let script = warmRun.replace(mount[0], '').replaceAll(mount[2]!, join(ROOT, mount[1]!)).replaceAll('/app/', `${app}/`)
    if (process.getuid?.() !== 0) script = script.replace(/setpriv( --\S+)+ /, '').replace(/-o \d+ -g \d+ /, '').replace(/chown -R \S+ \S+ && /, '')
    cleanup.push(() => void spawnSync('chmod', ['-R', 'u+w', stage]))
    // The warm-up starts `node` as the image's uid, which cannot reach this machine's Node under
    // /root: a link to it where that uid can (the image has it in /usr/local/bin).
    const nodeDir = join(stage, 'node-bin')
    mkdirSync(nodeDir)
    try {
      linkSync(process.execPath, join(nodeDir, 'node'))
    } catch {
      copyFileSync(process.execPath, join(nodeDir, 'node'))
      chmodSync(join(nodeDir, 'node'), 0o755)
    }
    const warmed = spawnSync('sh', ['-c', script], { cwd: app, env: { PATH: `${nodeDir}:${process.env.PATH}`, NODE_COMPILE_CACHE: `${app}/.compile-cache` }, timeout: 90_000, encoding: 'utf8' })
    expect(warmed.status, `${warmed.stdout}${warmed.stderr}`).toBe(0)
    const cached = () => readdirSync(join(app, '.compile-cache'), { recursive: true }).length
    const entries = cached()
    expect(entries).toBeGreaterThan(500)

    const backend = await startDemoBackend()
    cleanup.push(() => backend.close())
    const configPath = join(stage, 'igw.yaml')
    writeFileSync(
      configPath,
      `listen: 127.0.0.1:0\nadmin: { listen: "127.0.0.1:0" }\nworkers: 1\nroutes:\n  - name: graphql\n    upstream: ${backend.url}\n`,
    )

    const [entrypoint] = byKeyword(runtime, 'ENTRYPOINT')
    const [cmd] = byKeyword(runtime, 'CMD')
    const argv = [...execForm(entrypoint!)!, ...execForm(cmd!)!].map((a) => (a === '/etc/igw/igw.yaml' ? configPath : a))
    expect(argv[0]).toBe('node')
    // As root (CI), drop to the image's uid: the staged files stay root-owned and unwritable.
    const [uid, gid] = argsOf(byKeyword(runtime, 'USER')[0]!)[0]!.split(':')
    const asImageUser = process.getuid?.() === 0 ? ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups'] : []
    const command = [...asImageUser, process.execPath, ...argv.slice(1)]
    const child = spawn(command[0]!, command.slice(1), {
      cwd: app,
      env: { PATH: process.env.PATH, HOME: '/nonexistent', NODE_ENV: 'production', NODE_COMPILE_CACHE: `${app}/.compile-cache`, NODE_DEBUG_NATIVE: 'COMPILE_CACHE' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const exited = once(child, 'exit')
    cleanup.push(() => {
      if (child.exitCode === null) child.kill('SIGKILL')
    })
    let out = ''
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    const adminPort = await new Promise<number>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString()
        const m = /"msg":"igw proxy listening"/.test(out) && /"admin":"[^"]*:(\d+)"/.exec(out)
        if (m) resolve(Number(m[1]))
      })
      void exited.then(() => reject(new Error(`igw exited before listening:\n${out}`)))
    })

    if (asImageUser.length) {
      const status = readFileSync(`/proc/${child.pid}/status`, 'utf8')
      // setpriv execs node, so the pid is igw itself.
      expect(/^Uid:\s+(\d+)/m.exec(status)?.[1]).toBe(uid)
    }

    const healthcheck = execForm(byKeyword(runtime, 'HEALTHCHECK')[0]!)!
    const probe = (url: string) => spawnSync(process.execPath, healthcheck.slice(1), { env: { IGW_HEALTHCHECK_URL: url }, timeout: 10_000 }).status
    expect(probe(`http://127.0.0.1:${adminPort}/healthz`)).toBe(0)
    expect(probe(`http://127.0.0.1:${adminPort}/no-such-endpoint`)).toBe(1)

    child.kill('SIGTERM')
    const [code] = await exited
    expect(code).toBe(0)
    // It booted from the read-only cache (the supervisor and its worker thread), wrote nothing.
    expect(out.match(/V8 code cache for ESM \S+ was accepted/g)?.length ?? 0).toBeGreaterThan(200)
    expect(out).not.toMatch(/Cannot create cache directory/)
    expect(cached()).toBe(entries)
    expect(probe(`http://127.0.0.1:${adminPort}/healthz`)).toBe(1)
  })
})
