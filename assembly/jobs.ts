// Running a job (job-layout.ts): every thread that runs it calls run_job, which claims task indices
// until none are left. The caller is thread 0; the pool's workers (src/pool/) are threads 1.. and
// run on the same shared memory in the threaded builds. The non-threaded builds have no atomics, and
// run_job there simply runs every task in order.

import { ElementType, FlushOp, FlushChunk, FlushRecordWord as F, FlushWord, CopyRecordWord as C, CopyWord, JobKind, JobWord, ValidateWord as V } from './job-layout';
import { attendTask } from './attend';
import { f32_qchannel_quantize, f32_qtoken_quantize } from './quantize';
import { f32_first_invalid } from './memory';
import { f16x4ToF32, f16ToF32 } from './half';
import { keyBlockBytes } from './layout';
import { atomicIncrement } from './atomics';

// @ts-ignore: decorator
@inline function word(job: usize, w: i32): i32 {
  return load<i32>(job + (<usize>w << 2));
}

// @ts-ignore: decorator
@inline function pointer(job: usize, w: i32): usize {
  return <usize>load<u32>(job + (<usize>w << 2));
}

/** Runs tasks of the job at `job` as thread `thread` until every task is claimed. */
export function run_job(job: usize, thread: i32): void {
  const scratch = pointer(job, JobWord.SCRATCH) + <usize>thread * pointer(job, JobWord.SCRATCH_BYTES);
  const kind = word(job, JobWord.KIND);
  if (word(job, JobWord.FAULT) == thread) unreachable(); // fault injection (tests): a trap in this thread
  for (;;) {
    const task = atomicIncrement(job + (<usize>JobWord.NEXT << 2));
    if (task >= word(job, JobWord.TASKS)) break;
    if (kind == JobKind.ATTEND) attendTask(job, task, scratch);
    else if (kind == JobKind.FLUSH) flushTask(job, task, scratch);
    else if (kind == JobKind.COPY_ROWS) copyTask(job, task);
    else if (kind == JobKind.VALIDATE) validateTask(job, task);
    else unreachable();
    atomicIncrement(job + (<usize>JobWord.DONE << 2));
    const profile = pointer(job, JobWord.PROFILE);
    if (profile != 0) atomicIncrement(profile + (<usize>thread << 2));
  }
}

// ── VALIDATE ───────────────────────────────────────────────────────────────────────────────────

function validateTask(job: usize, task: i32): void {
  const chunk = word(job, V.CHUNK);
  const first = task * chunk;
  const count = min(chunk, word(job, V.COUNT) - first);
  const data = pointer(job, V.DATA);
  let bad = -1;
  if (word(job, V.TYPE) == ElementType.F16) {
    // A half is finite unless its exponent bits are all ones; every finite half is at most 65504.
    for (let i = 0; i < count; i++) {
      if ((load<u16>(data + (<usize>(first + i) << 1)) & 0x7c00) == 0x7c00) {
        bad = first + i;
        break;
      }
    }
  } else {
    const at = f32_first_invalid(count, data + (<usize>first << 2), reinterpret<f32>(word(job, V.MAX_ABS)));
    if (at >= 0) bad = first + at;
  }
  store<i32>(pointer(job, V.RESULTS) + (<usize>task << 2), bad);
}

// ── FLUSH ──────────────────────────────────────────────────────────────────────────────────────

/** Tasks of one flush record: (head, chunk) pairs. */
function recordChunks(record: usize): i32 {
  const units = load<i32>(record, F.UNITS << 2);
  if (load<i32>(record, F.OP << 2) == FlushOp.CHANNEL) return (units + FlushChunk.CHANNEL_BLOCKS - 1) / FlushChunk.CHANNEL_BLOCKS;
  const firstSlot = load<i32>(record, F.FIRST_SLOT << 2);
  return (firstSlot + units + FlushChunk.TOKEN_SLOTS - 1) / FlushChunk.TOKEN_SLOTS - firstSlot / FlushChunk.TOKEN_SLOTS;
}

function flushTask(job: usize, task: i32, scratch: usize): void {
  const records = pointer(job, FlushWord.RECORDS);
  let record = records + (<usize>((word(job, FlushWord.RECORD_COUNT) - 1) * F.WORDS) << 2);
  while (load<i32>(record, F.FIRST_TASK << 2) > task) record -= <usize>F.WORDS << 2;
  const local = task - load<i32>(record, F.FIRST_TASK << 2);
  const chunks = recordChunks(record);
  const head = local / chunks;
  const chunk = local % chunks;
  const D = load<i32>(record, F.D << 2);
  const group = load<i32>(record, F.GROUP << 2);
  const bits = load<i32>(record, F.BITS << 2);
  const units = load<i32>(record, F.UNITS << 2);
  const src = <usize>load<u32>(record, F.SRC << 2) + <usize>head * <usize>load<u32>(record, F.SRC_HEAD_STRIDE << 2);
  const dst = <usize>load<u32>(record, F.DST << 2) + <usize>head * <usize>load<u32>(record, F.DST_HEAD_STRIDE << 2);
  const rowBytes = <usize>D << 2;
  if (load<i32>(record, F.OP << 2) == FlushOp.CHANNEL) {
    const first = chunk * FlushChunk.CHANNEL_BLOCKS;
    const blocks = min(FlushChunk.CHANNEL_BLOCKS, units - first);
    f32_qchannel_quantize(1, blocks, D, group, bits, src + <usize>(first * group) * rowBytes, 0,
      dst + <usize>first * <usize>keyBlockBytes(D, group, bits), 0, scratch);
    return;
  }
  const firstSlot = load<i32>(record, F.FIRST_SLOT << 2);
  const base = (firstSlot / FlushChunk.TOKEN_SLOTS + chunk) * FlushChunk.TOKEN_SLOTS;
  const from = max(firstSlot, base);
  const to = min(firstSlot + units, base + FlushChunk.TOKEN_SLOTS);
  f32_qtoken_quantize(1, to - from, from, D, group, bits, src + <usize>(from - firstSlot) * rowBytes, 0, dst, 0, scratch);
}

// ── COPY_ROWS ──────────────────────────────────────────────────────────────────────────────────

function copyTask(job: usize, task: i32): void {
  const heads = word(job, CopyWord.HEADS);
  const D = word(job, CopyWord.D);
  const chunkTokens = word(job, CopyWord.CHUNK_TOKENS);
  const records = pointer(job, CopyWord.RECORDS);
  let record = records + (<usize>((word(job, CopyWord.RECORD_COUNT) - 1) * C.WORDS) << 2);
  while (load<i32>(record, C.FIRST_TASK << 2) > task) record -= <usize>C.WORDS << 2;
  const tokens = load<i32>(record, C.TOKENS << 2);
  const chunks = (tokens + chunkTokens - 1) / chunkTokens;
  const local = task - load<i32>(record, C.FIRST_TASK << 2);
  const head = local / chunks;
  const first = (local % chunks) * chunkTokens;
  const count = min(chunkTokens, tokens - first);
  const firstToken = load<i32>(record, C.FIRST_TOKEN << 2);
  const f16 = word(job, CopyWord.SRC_TYPE) == ElementType.F16;
  const elementBytes: usize = f16 ? 2 : 4;
  const rowBytes = <usize>D << 2;
  const src = <usize>load<u32>(record, C.SRC << 2);
  const dst = <usize>load<u32>(record, C.DST << 2) + <usize>head * <usize>load<u32>(record, C.DST_HEAD_STRIDE << 2);
  for (let t = first; t < first + count; t++) {
    const from = src + <usize>(((firstToken + t) * heads + head) * D) * elementBytes;
    const to = dst + <usize>t * rowBytes;
    if (!f16) {
      memory.copy(to, from, rowBytes);
      continue;
    }
    let c = 0;
    if (ASC_FEATURE_SIMD) {
      for (; c + 4 <= D; c += 4) v128.store(to + (<usize>c << 2), f16x4ToF32(v128.load16x4_u(from + (<usize>c << 1))));
    }
    for (; c < D; c++) store<f32>(to + (<usize>c << 2), f16ToF32(load<u16>(from + (<usize>c << 1))));
  }
}
