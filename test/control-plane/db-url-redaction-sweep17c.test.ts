// openDb refused a --db with an unknown scheme by quoting it whole: a mistyped scheme
// (`postgress://igw:secret@…`, `postgres+ssl://…`) printed the password into the error, and so
// into the logs of whatever started the control plane. The quoted value is redacted now.
import { expect, it } from 'vitest'
import { openDb } from '../../control-plane/db.ts'

it.each(['postgress://igw:s3cr3t-pw@db.example:5432/igw', 'postgres+ssl://igw:s3cr3t-pw@db.example/igw?sslmode=verify-full', 'mysql://root:s3cr3t-pw@db.example/igw'])(
  'an unknown --db scheme is refused without its password: %s',
  (spec) => {
    let message = ''
    try {
      openDb(spec)
    } catch (err) {
      message = (err as Error).message
    }
    expect(message).toMatch(/^--db: expected sqlite:<path> or postgres:\/\/…, got "/)
    expect(message).not.toContain('s3cr3t-pw')
    expect(message).toContain('db.example')
  },
)
