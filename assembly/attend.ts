// The ATTEND job (job-layout.ts): attention of query tiles over one layer, split by kv head and, within
// a head, by token range ("split-K" or flash decoding), so that every core has work even when a
// layer has one kv head. Each range yields a partial result and the partials of a (tile, head) are
// folded in range order, so the output is the same bits whether one task folds every range as it
// goes (WHOLE) or many tasks compute one range each and the last of them folds (SPLIT).
//
// A partial of `rows` query rows (floats; 16-byte aligned, partialBytes):
//   ┌──────────────────────────────┬───────────────┬───────────────┐
//   │ out           [rows][D]      │ max    [rows] │ sum    [rows] │
//   └──────────────────────────────┴───────────────┴───────────────┘
//   max = the row's largest score in the range (−∞ when it sees no token of it), sum = Σ exp(score −
//   max), out = Σ exp(score − max)·v. Folding b into a: M = max(a.max, b.max), a·exp(a.max − M) +
//   b·exp(b.max − M) for sum and out; the result is out / sum.
//
// A task's scratch (thread-private), for at most R rows of a tile and C = S + L columns, each area
// 16-byte aligned (src/jobs.ts sizes it the same way):
//   │ queries R·D f32 │ scores R·C f32 │ partial │ second partial │ kernel scratch │

import { AttendMode, AttendWord as A, ElementType, SegmentKind, SegmentWord as Seg } from './job-layout';
import { f32_f32_accumulate, f32_f32_scores, f32_softmax_partial, qchannel_f32_accumulate, qchannel_f32_scores, qtoken_f32_accumulate, qtoken_f32_scores } from './attention';
import { f32x4ToF16, f16x4ToF32, f16ToF32, f32ToF16 } from './half';
import { VALUE_BLOCK } from './layout';
import { atomicIncrement } from './atomics';

// @ts-ignore: decorator
@inline function word(job: usize, w: i32): i32 {
  return load<i32>(job + (<usize>w << 2));
}

// @ts-ignore: decorator
@inline function pointer(job: usize, w: i32): usize {
  return <usize>load<u32>(job + (<usize>w << 2));
}

// @ts-ignore: decorator
@inline function align16(bytes: usize): usize {
  return (bytes + 15) & ~<usize>15;
}

/** Bytes of one partial of `rows` rows. */
// @ts-ignore: decorator
@inline function partialBytes(rows: i32, D: i32): usize {
  return align16(<usize>(rows * (D + 2)) << 2);
}

/** Runs task `task` of an ATTEND job with the thread's scratch. */
export function attendTask(job: usize, task: i32, scratch: usize): void {
  const D = word(job, A.D);
  const headsPerKv = word(job, A.HEADS_PER_KV);
  const kvHeads = word(job, A.KV_HEADS);
  const ranges = word(job, A.RANGES);
  const tileTokens = word(job, A.TILE_TOKENS);
  const qTokens = word(job, A.Q_TOKENS);
  const split = word(job, A.MODE) == AttendMode.SPLIT;
  const tileHead = split ? task / ranges : task;
  const head = tileHead % kvHeads;
  const tile = tileHead / kvHeads;
  const first = tile * tileTokens;
  const count = min(tileTokens, qTokens - first);
  const rows = count * headsPerKv;

  const maxRows = tileTokens * headsPerKv;
  const columns = word(job, A.SINKS) + word(job, A.RANGE_TOKENS);
  const queries = scratch;
  const scores = queries + align16(<usize>(maxRows * D) << 2);
  const partial = scores + align16(<usize>(maxRows * columns) << 2);
  const second = partial + partialBytes(maxRows, D);
  const kernelScratch = second + partialBytes(maxRows, D);
  gatherQueries(job, first, count, head, queries);

  if (!split) {
    // Every range this tile can see, folded as it goes.
    const visibleRanges = rangesSeenBy(job, first + count - 1);
    rangePartial(job, head, rows, first, 0, queries, scores, columns, partial, kernelScratch);
    for (let r = 1; r < visibleRanges; r++) {
      rangePartial(job, head, rows, first, r, queries, scores, columns, second, kernelScratch);
      foldPartial(rows, D, partial, second);
    }
    writeOutput(job, first, count, head, partial);
    return;
  }
  const range = task % ranges;
  const stride = partialBytes(maxRows, D);
  const slots = pointer(job, A.PARTIALS) + <usize>tileHead * <usize>ranges * stride;
  rangePartial(job, head, rows, first, range, queries, scores, columns, slots + <usize>range * stride, kernelScratch);
  // The task that completes a (tile, head) folds its partials, in range order, into the first.
  if (atomicIncrement(pointer(job, A.COUNTERS) + (<usize>tileHead << 2)) == ranges - 1) {
    for (let r = 1; r < ranges; r++) foldPartial(rows, D, slots, slots + <usize>r * stride);
    writeOutput(job, first, count, head, slots);
  }
}

/** Ranges holding tokens that query token `q` (of the call's queries) may see. */
function rangesSeenBy(job: usize, q: i32): i32 {
  const last = word(job, A.TOKENS) - word(job, A.Q_TOKENS) + q; // the newest token it sees
  const S = word(job, A.SINKS);
  const L = word(job, A.RANGE_TOKENS);
  return last < S + L ? 1 : 1 + (last - S) / L;
}

/** The tile's query rows of kv head `head`, [token][head in group][D], times the attention scale. */
function gatherQueries(job: usize, first: i32, count: i32, head: i32, dst: usize): void {
  const D = word(job, A.D);
  const headsPerKv = word(job, A.HEADS_PER_KV);
  const queryHeads = word(job, A.QUERY_HEADS);
  const scale = reinterpret<f32>(word(job, A.SCALE));
  const f16 = word(job, A.QUERY_TYPE) == ElementType.F16;
  const elementBytes: usize = f16 ? 2 : 4;
  const src = pointer(job, A.QUERIES);
  for (let i = 0; i < count; i++) {
    for (let j = 0; j < headsPerKv; j++) {
      const from = src + <usize>(((first + i) * queryHeads + head * headsPerKv + j) * D) * elementBytes;
      const to = dst + (<usize>((i * headsPerKv + j) * D) << 2);
      let c = 0;
      if (ASC_FEATURE_SIMD) {
        const vscale = f32x4.splat(scale);
        if (f16) {
          for (; c + 4 <= D; c += 4) v128.store(to + (<usize>c << 2), f32x4.mul(f16x4ToF32(v128.load16x4_u(from + (<usize>c << 1))), vscale));
        } else {
          for (; c + 4 <= D; c += 4) v128.store(to + (<usize>c << 2), f32x4.mul(v128.load(from + (<usize>c << 2)), vscale));
        }
      }
      for (; c < D; c++) {
        const x = f16 ? f16ToF32(load<u16>(from + (<usize>c << 1))) : load<f32>(from + (<usize>c << 2));
        store<f32>(to + (<usize>c << 2), x * scale);
      }
    }
  }
}

/**
 * The partial of range r for the tile's rows of kv head `head`: scores over every key segment that
 * overlaps the range, their exponentials (the causal mask applied), and the weighted sum over every
 * value segment that overlaps it.
 */
function rangePartial(job: usize, head: i32, rows: i32, first: i32, r: i32, queries: usize,
  scores: usize, columns: i32, partial: usize, kernelScratch: usize): void {
  const D = word(job, A.D);
  const N = word(job, A.TOKENS);
  const S = word(job, A.SINKS);
  const L = word(job, A.RANGE_TOKENS);
  const headsPerKv = word(job, A.HEADS_PER_KV);
  const start = r == 0 ? 0 : S + r * L;
  const end = min(N, S + (r + 1) * L);
  const out = partial;
  const rowMax = out + (<usize>(rows * D) << 2);
  const rowSum = rowMax + (<usize>rows << 2);
  // Row m (query token first + m / headsPerKv) sees the tokens before N - qTokens + first + m/headsPerKv + 1.
  const firstVisible = N - word(job, A.Q_TOKENS) + first + 1 - start;
  memory.fill(out, 0, <usize>(rows * D) << 2);
  if (end <= start || firstVisible + (rows - 1) / headsPerKv <= 0) {
    for (let m = 0; m < rows; m++) {
      store<f32>(rowMax + (<usize>m << 2), -Infinity);
      store<f32>(rowSum + (<usize>m << 2), 0);
    }
    return;
  }
  const length = end - start;
  segmentScores(job, head, rows, start, end, queries, scores, columns, kernelScratch);
  f32_softmax_partial(rows, length, firstVisible, headsPerKv, scores, columns, rowMax, rowSum);
  segmentSums(job, head, rows, start, end, scores, columns, out, kernelScratch);
}

/** Index of the first of `count` segments (sorted, contiguous) that ends after `start`. */
function firstSegmentAfter(segments: usize, count: i32, start: i32): i32 {
  let low = 0;
  let high = count;
  while (low < high) {
    const mid = (low + high) >>> 1;
    const seg = segments + (<usize>(mid * Seg.WORDS) << 2);
    if (load<i32>(seg, Seg.FIRST << 2) + load<i32>(seg, Seg.TOKENS << 2) <= start) low = mid + 1;
    else high = mid;
  }
  return low;
}

/** Scores of the rows against the keys of [start, end), into columns 0 .. end − start. */
function segmentScores(job: usize, head: i32, rows: i32, start: i32, end: i32, queries: usize, scores: usize, stride: i32, kernelScratch: usize): void {
  const D = word(job, A.D);
  const G = word(job, A.GROUP_SIZE);
  const bits = word(job, A.BITS);
  const segments = pointer(job, A.KEY_SEGMENTS);
  const count = word(job, A.KEY_SEGMENT_COUNT);
  for (let i = firstSegmentAfter(segments, count, start); i < count; i++) {
    const seg = segments + (<usize>(i * Seg.WORDS) << 2);
    const segFirst = load<i32>(seg, Seg.FIRST << 2);
    if (segFirst >= end) break;
    const from = max(start, segFirst);
    const to = min(end, segFirst + load<i32>(seg, Seg.TOKENS << 2));
    if (from >= to) continue;
    const unitBytes = <usize>load<u32>(seg, Seg.UNIT_BYTES << 2);
    const data = <usize>load<u32>(seg, Seg.DATA << 2) + <usize>head * <usize>load<u32>(seg, Seg.HEAD_STRIDE << 2);
    const at = scores + (<usize>(from - start) << 2);
    const kind = load<i32>(seg, Seg.KIND << 2);
    if (kind == SegmentKind.F32_ROWS) {
      f32_f32_scores(rows, to - from, D, queries, data + <usize>(from - segFirst) * unitBytes, unitBytes, at, stride);
    } else if (kind == SegmentKind.CHANNEL_BLOCKS) {
      qchannel_f32_scores(rows, (to - from) / G, D, G, bits, queries, data + <usize>((from - segFirst) / G) * unitBytes, unitBytes, at, stride, kernelScratch);
    } else {
      qtoken_f32_scores(rows, to - from, D, word(job, A.KEY_GROUP), bits, queries, data + <usize>((from - segFirst) / VALUE_BLOCK) * unitBytes, unitBytes, at, stride, kernelScratch);
    }
  }
}

/** out += the weights of columns 0 .. end − start times the values of [start, end). */
function segmentSums(job: usize, head: i32, rows: i32, start: i32, end: i32, weights: usize, stride: i32, out: usize, kernelScratch: usize): void {
  const D = word(job, A.D);
  const G = word(job, A.GROUP_SIZE);
  const bits = word(job, A.BITS);
  const segments = pointer(job, A.VALUE_SEGMENTS);
  const count = word(job, A.VALUE_SEGMENT_COUNT);
  for (let i = firstSegmentAfter(segments, count, start); i < count; i++) {
    const seg = segments + (<usize>(i * Seg.WORDS) << 2);
    const segFirst = load<i32>(seg, Seg.FIRST << 2);
    if (segFirst >= end) break;
    const from = max(start, segFirst);
    const to = min(end, segFirst + load<i32>(seg, Seg.TOKENS << 2));
    if (from >= to) continue;
    const unitBytes = <usize>load<u32>(seg, Seg.UNIT_BYTES << 2);
    const data = <usize>load<u32>(seg, Seg.DATA << 2) + <usize>head * <usize>load<u32>(seg, Seg.HEAD_STRIDE << 2);
    const at = weights + (<usize>(from - start) << 2);
    const kind = load<i32>(seg, Seg.KIND << 2);
    if (kind == SegmentKind.F32_ROWS) {
      f32_f32_accumulate(rows, to - from, D, at, stride, data + <usize>(from - segFirst) * unitBytes, unitBytes, out);
    } else if (kind == SegmentKind.TOKEN_BLOCKS) {
      qtoken_f32_accumulate(rows, to - from, D, word(job, A.VALUE_GROUP), bits, at, stride, data + <usize>((from - segFirst) / VALUE_BLOCK) * unitBytes, unitBytes, out, kernelScratch);
    } else {
      qchannel_f32_accumulate(rows, (to - from) / G, D, G, bits, at, stride, data + <usize>((from - segFirst) / G) * unitBytes, unitBytes, out, kernelScratch);
    }
  }
}

/** a ← fold(a, b) for each row (module comment); rows that see nothing of b's range are skipped. */
function foldPartial(rows: i32, D: i32, a: usize, b: usize): void {
  const aOut = a;
  const bOut = b;
  const aMaxes = a + (<usize>(rows * D) << 2);
  const bMaxes = b + (<usize>(rows * D) << 2);
  const aSum = aMaxes + (<usize>rows << 2);
  const bSum = bMaxes + (<usize>rows << 2);
  for (let m = 0; m < rows; m++) {
    const bMax = load<f32>(bMaxes + (<usize>m << 2));
    if (bMax == -Infinity) continue;
    const aMax = load<f32>(aMaxes + (<usize>m << 2));
    const M = max(aMax, bMax);
    const ea = Mathf.exp(aMax - M);
    const eb = Mathf.exp(bMax - M);
    store<f32>(aMaxes + (<usize>m << 2), M);
    store<f32>(aSum + (<usize>m << 2), load<f32>(aSum + (<usize>m << 2)) * ea + load<f32>(bSum + (<usize>m << 2)) * eb);
    const x = aOut + (<usize>(m * D) << 2);
    const y = bOut + (<usize>(m * D) << 2);
    let c = 0;
    if (ASC_FEATURE_SIMD) {
      const vea = f32x4.splat(ea);
      const veb = f32x4.splat(eb);
      for (; c + 4 <= D; c += 4) {
        const offset = <usize>c << 2;
        v128.store(x + offset, f32x4.add(f32x4.mul(v128.load(x + offset), vea), f32x4.mul(v128.load(y + offset), veb)));
      }
    }
    for (; c < D; c++) {
      const offset = <usize>c << 2;
      store<f32>(x + offset, load<f32>(x + offset) * ea + load<f32>(y + offset) * eb);
    }
  }
}

/** out / sum of a folded partial into the call's output [qTokens][queryHeads][D] (f32 or f16). */
function writeOutput(job: usize, first: i32, count: i32, head: i32, partial: usize): void {
  const D = word(job, A.D);
  const headsPerKv = word(job, A.HEADS_PER_KV);
  const queryHeads = word(job, A.QUERY_HEADS);
  const rows = count * headsPerKv;
  const f16 = word(job, A.OUT_TYPE) == ElementType.F16;
  const elementBytes: usize = f16 ? 2 : 4;
  const dst = pointer(job, A.OUT);
  const outs = partial;
  const sums = outs + (<usize>(rows * D) << 2) + (<usize>rows << 2);
  for (let m = 0; m < rows; m++) {
    const i = m / headsPerKv;
    const j = m % headsPerKv;
    const inverse: f32 = 1 / load<f32>(sums + (<usize>m << 2));
    const from = outs + (<usize>(m * D) << 2);
    const to = dst + <usize>(((first + i) * queryHeads + head * headsPerKv + j) * D) * elementBytes;
    let c = 0;
    if (ASC_FEATURE_SIMD) {
      const vinverse = f32x4.splat(inverse);
      if (f16) {
        for (; c + 4 <= D; c += 4) {
          const vhalf = f32x4ToF16(f32x4.mul(v128.load(from + (<usize>c << 2)), vinverse));
          v128.store64_lane(to + (<usize>c << 1), i16x8.narrow_i32x4_u(vhalf, vhalf), 0);
        }
      } else {
        for (; c + 4 <= D; c += 4) v128.store(to + (<usize>c << 2), f32x4.mul(v128.load(from + (<usize>c << 2)), vinverse));
      }
    }
    for (; c < D; c++) {
      const y = load<f32>(from + (<usize>c << 2)) * inverse;
      if (f16) store<u16>(to + (<usize>c << 1), f32ToF16(y));
      else store<f32>(to + (<usize>c << 2), y);
    }
  }
}
