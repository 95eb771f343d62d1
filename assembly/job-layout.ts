// The job: how the facade hands work to the kernels (assembly/jobs.ts), on one thread or many.
// This file holds only const enums, so that it is valid AssemblyScript and TypeScript alike: the
// kernels and the facade (src/jobs.ts) read the same numbers from it.
//
// A job is a block of i32 words in linear memory, written by the facade before any thread runs it.
// Every thread that runs it (the caller, and the pool's workers) claims task indices from NEXT until
// they run out; the results of a task depend only on its index, never on which thread ran it, so the
// output is the same for any number of threads.
//
//   word 0          4          8          12         16         20             24           28
//   ┌──────────┬──────────┬──────────┬──────────┬──────────┬──────────────┬────────────┬──────────┐
//   │ NEXT     │ DONE     │ TASKS    │ KIND     │ SCRATCH  │ SCRATCH_BYTES│ FAULT      │ PROFILE  │
//   └──────────┴──────────┴──────────┴──────────┴──────────┴──────────────┴────────────┴──────────┘
//   NEXT     the next task index to claim (atomic add); CLOSED while the facade writes the job
//   DONE     tasks finished (atomic add); whoever finishes the last one notifies on this word
//   SCRATCH  thread t's scratch is SCRATCH + t·SCRATCH_BYTES (threads never share scratch)
//   FAULT    for tests: the thread index that traps as it starts the job, else -1
//   PROFILE  for benchmarks: 0, or i32 counters, one per thread, of the tasks each ran
//   payload from word 8 (byte 32), per KIND below.

export const enum JobWord {
  NEXT = 0, DONE, TASKS, KIND, SCRATCH, SCRATCH_BYTES, FAULT, PROFILE,
  PAYLOAD = 8,
}

/** NEXT while the job is being written: any claim fails. */
export const enum JobState {
  CLOSED = 0x40000000,
}

export const enum JobKind {
  ATTEND = 1,
  VALIDATE = 2,
  FLUSH = 3,
  COPY_ROWS = 4,
}

/** Element types of inputs and outputs. */
export const enum ElementType {
  F32 = 0,
  /** IEEE binary16 bits (Float16Array, or Uint16Array holding half bits). */
  F16 = 1,
}

// ── ATTEND: scores, softmax and weighted sums of query tiles over one layer ────────────────────
// Tokens are split into ranges of L tokens after the S sinks (range 0 = [0, S + L), range r ≥ 1 =
// [S + rL, S + (r+1)L)); L is a multiple of every block size, so ranges start at block boundaries.
// Each range of each (query tile, kv head) yields a partial result (row max, row sum of exp(score −
// max), unnormalized output) and the partials are folded in range order: the same arithmetic whether
// a task computes one range (SPLIT: the last task of a (tile, head) folds the stored partials) or
// all of them (WHOLE: one task folds as it goes).
export const enum AttendWord {
  D = 8, HEADS_PER_KV, KV_HEADS, QUERY_HEADS, Q_TOKENS, TOKENS, SINKS, TILE_TOKENS, TILES,
  RANGE_TOKENS, RANGES, MODE, SCALE, QUERIES, QUERY_TYPE, OUT, OUT_TYPE, PARTIALS, COUNTERS,
  GROUP_SIZE, BITS, KEY_GROUP, VALUE_GROUP, KEY_SEGMENTS, KEY_SEGMENT_COUNT, VALUE_SEGMENTS,
  VALUE_SEGMENT_COUNT,
  WORDS,
}

export const enum AttendMode {
  /** One task per (tile, head): it folds every range as it goes. */
  WHOLE = 0,
  /** One task per (tile, head, range); the last of a (tile, head) folds the stored partials. */
  SPLIT = 1,
}

// A segment: one stored run of a stream (sinks, a chunk of quantized blocks, the residual rows),
// 6 words: | kind | first token (absolute position) | tokens | head 0 data | head stride | unit bytes |
export const enum SegmentWord {
  KIND = 0, FIRST, TOKENS, DATA, HEAD_STRIDE, UNIT_BYTES,
  WORDS,
}

export const enum SegmentKind {
  /** f32 rows of D, UNIT_BYTES apart. */
  F32_ROWS = 0,
  /** Key blocks quantized per channel (G tokens each; layout.ts). */
  CHANNEL_BLOCKS = 1,
  /** Value blocks quantized per token (32 tokens each; layout.ts). */
  TOKEN_BLOCKS = 2,
}

// ── VALIDATE: the first element of an input that is not finite or exceeds MAX_ABS ──────────────
// Task t checks elements [t·CHUNK, (t+1)·CHUNK) and writes the index of its first bad element, or
// -1, to RESULTS[t].
export const enum ValidateWord {
  COUNT = 8, DATA, TYPE, MAX_ABS, CHUNK, RESULTS,
  WORDS,
}

// ── FLUSH: quantizes runs of f32 rows into blocks ──────────────────────────────────────────────
// RECORDS points at RECORD_COUNT records of 12 words; record i's tasks are FIRST_TASK ..
// FIRST_TASK + heads·chunks − 1, one (head, chunk) each.
export const enum FlushWord {
  RECORDS = 8, RECORD_COUNT,
  WORDS,
}

//   | op | first task | heads | D | group | bits | units | first slot | src | src head stride | dst | dst head stride |
//   CHANNEL: `units` key blocks of G tokens from rows at src (per head), into blocks at dst.
//   TOKEN:   `units` tokens from rows at src into value-block slots FIRST_SLOT.. of the blocks at dst.
export const enum FlushRecordWord {
  OP = 0, FIRST_TASK, HEADS, D, GROUP, BITS, UNITS, FIRST_SLOT, SRC, SRC_HEAD_STRIDE, DST, DST_HEAD_STRIDE,
  WORDS,
}

export const enum FlushOp {
  CHANNEL = 0,
  TOKEN = 1,
}

/** Key blocks per FLUSH task. */
export const enum FlushChunk {
  CHANNEL_BLOCKS = 16,
  /** Value slots per task, aligned to this many from slot 0 (a whole number of value blocks, so two
   *  tasks never write the same block). */
  TOKEN_SLOTS = 256,
}

// ── COPY_ROWS: tokens [n][heads][D] (f32 or f16) into per-head f32 rows ───────────────────────
// Records of 6 words: | first task | first token | tokens | src (token 0) | dst (head 0, row 0) | dst head stride |
// record i's tasks: heads · ceil(tokens / CHUNK_TOKENS), one (head, chunk of tokens) each.
export const enum CopyWord {
  HEADS = 8, D, SRC_TYPE, RECORDS, RECORD_COUNT, CHUNK_TOKENS,
  WORDS,
}

export const enum CopyRecordWord {
  FIRST_TASK = 0, FIRST_TOKEN, TOKENS, SRC, DST, DST_HEAD_STRIDE,
  WORDS,
}
