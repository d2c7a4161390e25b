// Config errors as a test reads them: the problem lines of the ConfigError `fn` throws.
import { ConfigError } from '../../config/load.ts'

/** The problems of the ConfigError `fn` throws; fails when it throws nothing or something else. */
export function problems(fn: () => unknown): string[] {
  try {
    fn()
  } catch (err) {
    if (err instanceof ConfigError) return err.problems
    throw err
  }
  throw new Error('expected a ConfigError')
}
