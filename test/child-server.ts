import { type ChildProcess, spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { until } from './poll.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

/** A port that was free a moment ago (the OS picks it; the child binds it right after). */
export async function freePort(): Promise<number> {
  const srv = createServer()
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const { port } = srv.address() as { port: number }
  await new Promise<void>((resolve) => srv.close(() => resolve()))
  return port
}

export type Child = {
  proc: ChildProcess
  url: string
  /** Everything written so far. */
  stdout(): string
  stderr(): string
  /** Resolves with the exit code (or the signal name) once the process has ended. */
  exited: Promise<number | string>
  /** Resolves when stdout has a line matching `test` (checked on every chunk). */
  waitForOutput(test: (out: string) => boolean, timeoutMs?: number): Promise<void>
}

/**
 * Run `node --import tsx src/node.ts` as a real separate process (the same entry as `npm start`),
 * with exactly the given environment plus PATH.
 */
export function spawnServer(env: Record<string, string>): Child {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'src/node.ts'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  const watchers = new Set<() => void>()
  proc.stdout?.setEncoding('utf8').on('data', (d: string) => {
    out += d
    for (const w of watchers) w()
  })
  proc.stderr?.setEncoding('utf8').on('data', (d: string) => {
    err += d
  })
  const exited = new Promise<number | string>((resolve) => proc.once('exit', (code, signal) => resolve(code ?? signal ?? -1)))
  return {
    proc,
    url: `http://127.0.0.1:${env.PORT}`,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitForOutput(test, timeoutMs = 30_000) {
      return new Promise<void>((resolve, reject) => {
        const check = () => {
          if (!test(out)) return
          watchers.delete(check)
          clearTimeout(timer)
          resolve()
        }
        const timer = setTimeout(() => {
          watchers.delete(check)
          reject(new Error(`no matching output within ${timeoutMs} ms; stdout:\n${out.slice(-2000)}\nstderr:\n${err.slice(-2000)}`))
        }, timeoutMs)
        watchers.add(check)
        check()
      })
    },
  }
}

/** Poll GET /health until it answers 200; fail early if the process ends first. */
export async function waitReady(child: Child, timeoutMs = 60_000): Promise<void> {
  let ended = false
  const exited = child.exited.then((code) => {
    ended = true
    throw new Error(`the server exited (${code}) before it was ready:\n${child.stderr().slice(-3000)}`)
  })
  const ready = until(
    async () => {
      if (ended) return true
      // Not listening yet is a failed fetch: polled again.
      const res = await fetch(`${child.url}/health`)
      await res.body?.cancel()
      return res.status === 200
    },
    { timeoutMs, everyMs: 50, what: 'GET /health to answer 200' },
  ).catch((err: Error) => {
    throw new Error(`not ready within ${timeoutMs} ms (${err.message}):\n${child.stderr().slice(-3000)}`)
  })
  await Promise.race([ready, exited])
}
