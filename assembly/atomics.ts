// Atomic counters shared by the job runner and its tasks. The threaded builds run jobs on several
// threads over one shared memory; the others have no atomics and run every task on one thread.

/** Adds 1 to the i32 at ptr and returns its previous value (atomically where threads exist). */
// @ts-ignore: decorator
@inline export function atomicIncrement(ptr: usize): i32 {
  if (ASC_FEATURE_THREADS) return atomic.add<i32>(ptr, 1);
  const previous = load<i32>(ptr);
  store<i32>(ptr, previous + 1);
  return previous;
}
