// What a cache holds, computed: README "Memory" and "When tokens are quantized" as functions of the
// context length N, for one-token-at-a-time decode (how the demo feeds the model) and no sink tokens.
// The page draws these next to the measured cache.stats().bytes of the cache that actually runs;
// for the bits that run, the two agree to the byte (the page shows the check).

/**
 * Quantized key and value tokens per layer after N tokens were appended one at a time.
 * Keys, 'chunked' (KIVI): an append first quantizes the oldest R while R or more wait (with R = 0,
 * every whole G-token chunk). Keys, 'sliding': the oldest G at a time while R or more wait.
 * Values: the oldest token while more than R wait.
 * @param {number} N tokens cached
 * @param {{ residual: number, groupSize: number, keyWindow: 'chunked' | 'sliding' }} o
 * @returns {{ keys: number, values: number }}
 */
export function quantizedTokens(N, { residual: R, groupSize: G, keyWindow }) {
  if (N <= 0) return { keys: 0, values: 0 };
  const values = Math.max(0, N - 1 - R);
  let keys;
  if (keyWindow === 'sliding') keys = N - 1 >= R ? G * Math.ceil((N - R) / G) : 0;
  else if (R === 0) keys = Math.floor((N - 1) / G) * G;
  else keys = Math.floor((N - 1) / R) * R;
  return { keys, values };
}

/**
 * Bytes the stored tokens occupy (what cache.stats().bytes reports), all layers and kv heads:
 * D · [ Nk·(b + 32/G)/8 + Nv·(b + 32/gv)/8 + 4·(N − Nk) + 4·(N − Nv) ] per layer and kv head,
 * gv = min(G, D); bits 32 is the f32 cache, N · layers · 2 · kvHeads · D · 4.
 * @param {number} bits 2, 4, 8 or 32
 * @param {number} N tokens cached
 * @param {{ layers: number, kvHeads: number, headDim: number }} shape
 * @param {{ residual: number, groupSize: number, keyWindow: 'chunked' | 'sliding' }} o
 */
export function cacheBytes(bits, N, shape, o) {
  const D = shape.headDim;
  const perHead = shape.layers * shape.kvHeads * D;
  if (bits === 32) return perHead * 8 * N;
  const { keys: Nk, values: Nv } = quantizedTokens(N, o);
  const gv = Math.min(o.groupSize, D);
  return perHead * ((Nk * (bits + 32 / o.groupSize)) / 8 + (Nv * (bits + 32 / gv)) / 8 + 4 * (N - Nk) + 4 * (N - Nv));
}

/** 1536 → "1.50 KiB". */
export function formatBytes(bytes) {
  if (bytes < 1024) return `${Math.round(bytes)} B`;
  const units = ['KiB', 'MiB', 'GiB'];
  let v = bytes / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[i]}`;
}
