// Plain-JavaScript f32 attention peer: what one writes without WebAssembly. One decode step (one query
// token) over token-major keys/values [N][kvHeads][headDim]; query head h reads kv head floor(h / (Hq/Hkv)).
// Straightforward, not deliberately slow: typed arrays, hoisted offsets, one scores buffer per call.
import type { AttentionShape } from './onnx';

export function plainAttention(shape: AttentionShape, context: number, keys: Float32Array, values: Float32Array, query: Float32Array, out: Float32Array): void {
  const { queryHeads, kvHeads, headDim: d } = shape;
  const group = queryHeads / kvHeads;
  const stride = kvHeads * d; // floats per token
  const scale = 1 / Math.sqrt(d);
  const scores = new Float32Array(context);
  for (let h = 0; h < queryHeads; h++) {
    const kvh = Math.floor(h / group);
    const q = h * d;
    let max = -Infinity;
    for (let t = 0, k = kvh * d; t < context; t++, k += stride) {
      let dot = 0;
      for (let c = 0; c < d; c++) dot += query[q + c]! * keys[k + c]!;
      const s = dot * scale;
      scores[t] = s;
      if (s > max) max = s;
    }
    let sum = 0;
    for (let t = 0; t < context; t++) {
      const p = Math.exp(scores[t]! - max);
      scores[t] = p;
      sum += p;
    }
    const inv = 1 / sum;
    out.fill(0, q, q + d);
    for (let t = 0, v = kvh * d; t < context; t++, v += stride) {
      const p = scores[t]! * inv;
      for (let c = 0; c < d; c++) out[q + c] = out[q + c]! + p * values[v + c]!;
    }
  }
}
