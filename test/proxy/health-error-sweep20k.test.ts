// /readyz names why an upstream is unhealthy. A connect to a name with several addresses
// (localhost on a dual-stack pod resolves to ::1 and 127.0.0.1) fails with an AggregateError whose
// message is empty, and the upstream was listed with `"error": ""`. The error here is a real one:
// a connect, with Node's happy-eyeballs, to two loopback addresses where nothing listens.
import { connect } from 'node:net'
import { describe, expect, it } from 'vitest'
import { probeError } from '../../proxy/health.ts'

function connectToTwoAddresses(port: number): Promise<Error> {
  return new Promise((resolve) => {
    const socket = connect({
      host: 'dual-stack.test',
      port,
      autoSelectFamily: true,
      lookup: (_host, _opts, cb) => (cb as unknown as (e: null, a: { address: string; family: number }[]) => void)(null, [{ address: '127.0.0.2', family: 4 }, { address: '127.0.0.1', family: 4 }]),
    })
    socket.once('error', (err) => {
      socket.destroy()
      resolve(err)
    })
  })
}

describe('health probe errors (sweep 20k)', () => {
  it('an AggregateError from a multi-address connect is described by its attempts', async () => {
    const err = await connectToTwoAddresses(1)
    expect(err.message).toBe('') // what the checker used to show
    const why = probeError(err)
    expect(why).toContain('ECONNREFUSED 127.0.0.2:1')
    expect(why).toContain('ECONNREFUSED 127.0.0.1:1')
  })

  it('an ordinary error keeps its message; one without any says its code or what it is', () => {
    expect(probeError(new Error('health check answered 503'))).toBe('health check answered 503')
    expect(probeError(Object.assign(new Error(''), { code: 'ETIMEDOUT' }))).toBe('ETIMEDOUT')
    expect(probeError(new AggregateError([]))).toBe('AggregateError')
  })
})
