// Defaults that runtime code needs without loading zod (worker threads never import the
// schema: zod alone costs ~20 MB of RSS per V8 isolate). The schema uses these same constants.
export const DEFAULT_TIER = 'silver' as const
