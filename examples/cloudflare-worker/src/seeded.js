// A seeded generator (mulberry32) of values in [-1, 1): the Worker's prompt and restore requests, and
// the test that makes a cache outside it, draw the same kind of numbers from one definition.
/** n numbers in [-1, 1) per call, the same sequence for the same seed. */
export function seeded(seed) {
  let a = seed >>> 0;
  return (n) => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      out[i] = ((t ^ (t >>> 14)) >>> 0) / 2 ** 31 - 1;
    }
    return out;
  };
}
