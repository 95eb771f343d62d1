// Writing jobs (assembly/job-layout.ts) into the workspace: the facade's side of the job format. A
// call lays out its areas (Areas), writes the job words, and hands the job to the runtime, which runs
// it on the calling thread or on the pool (src/pool/); nothing here knows which.

import {
  AttendMode, AttendWord, CopyRecordWord, CopyWord, ElementType, FlushChunk, FlushOp, FlushRecordWord, FlushWord,
  JobKind, JobState, JobWord, SegmentKind, SegmentWord, ValidateWord,
} from '../assembly/job-layout';
import type { StreamKind } from './layout';

export { AttendMode, ElementType, FlushOp, JobKind, SegmentKind };

/** Byte offsets of the areas of one call's workspace, each 16-byte aligned. */
export class Areas {
  size = 0;
  add(bytes: number): number {
    const at = this.size;
    this.size += Math.ceil(bytes / 16) * 16;
    return at;
  }
}

export const JOB_HEADER_BYTES = JobWord.PAYLOAD * 4;

/** Writes a job's header; NEXT is opened last (the job is complete once it is). */
export function writeHeader(i32: Int32Array, job: number, kind: JobKind, tasks: number, scratch: number, scratchBytes: number): void {
  const w = job >>> 2;
  i32[w + JobWord.NEXT] = JobState.CLOSED;
  i32[w + JobWord.TASKS] = tasks;
  i32[w + JobWord.KIND] = kind;
  i32[w + JobWord.SCRATCH] = scratch;
  i32[w + JobWord.SCRATCH_BYTES] = scratchBytes;
  i32[w + JobWord.FAULT] = -1;
  i32[w + JobWord.PROFILE] = 0;
  i32[w + JobWord.DONE] = 0;
  i32[w + JobWord.NEXT] = 0;
}

export function segmentKind(kind: StreamKind): SegmentKind {
  return kind === 'f32' ? SegmentKind.F32_ROWS : kind === 'channel' ? SegmentKind.CHANNEL_BLOCKS : SegmentKind.TOKEN_BLOCKS;
}

/** One stored run of a stream, as attention reads it. */
export interface Segment {
  kind: SegmentKind;
  /** Layer position of its first token. */
  first: number;
  tokens: number;
  /** Head 0's first row or block. */
  data: number;
  headStride: number;
  unitBytes: number;
}

export const SEGMENT_BYTES = SegmentWord.WORDS * 4;

export function writeSegments(i32: Int32Array, at: number, segments: readonly Segment[]): void {
  segments.forEach((s, i) => {
    const w = (at >>> 2) + i * SegmentWord.WORDS;
    i32[w + SegmentWord.KIND] = s.kind;
    i32[w + SegmentWord.FIRST] = s.first;
    i32[w + SegmentWord.TOKENS] = s.tokens;
    i32[w + SegmentWord.DATA] = s.data;
    i32[w + SegmentWord.HEAD_STRIDE] = s.headStride;
    i32[w + SegmentWord.UNIT_BYTES] = s.unitBytes;
  });
}

// ── ATTEND ─────────────────────────────────────────────────────────────────────────────────────

export interface AttendShape {
  D: number;
  headsPerKv: number;
  kvHeads: number;
  queryHeads: number;
  qTokens: number;
  tokens: number;
  sinks: number;
  tileTokens: number;
  rangeTokens: number;
  groupSize: number;
  bits: number;
  keyGroup: number;
  valueGroup: number;
}

export function attendTiles(s: AttendShape): number {
  return Math.ceil(s.qTokens / s.tileTokens);
}

/** Ranges of L tokens after the sinks covering every cached token (assembly/attend.ts). */
export function attendRanges(s: AttendShape): number {
  const beyond = s.tokens - s.sinks - s.rangeTokens;
  return beyond <= 0 ? 1 : 1 + Math.ceil(beyond / s.rangeTokens);
}

function align16(bytes: number): number {
  return Math.ceil(bytes / 16) * 16;
}

/** Bytes of one partial (assembly/attend.ts partialBytes). */
export function partialBytes(rows: number, D: number): number {
  return align16(rows * (D + 2) * 4);
}

/** Per-thread scratch of an attend task (assembly/attend.ts: queries, scores, two partials, kernels). */
export function attendScratchBytes(s: AttendShape, valueBlock: number): number {
  const rows = s.tileTokens * s.headsPerKv;
  const { D, groupSize: G } = s;
  const groups = D / Math.min(G, D);
  // The largest scratch any kernel may use (assembly/attention.ts, per kernel).
  const kernelFloats = Math.max(
    G * D + 3 * D + rows * D, // qchannel_f32_scores, qchannel_f32_accumulate
    valueBlock * D + rows * groups + 2 * valueBlock * groups, // qtoken_f32_scores
    2 * valueBlock * groups + 2 * rows * groups + valueBlock + rows * groups * (valueBlock / 4) * 8, // qtoken_f32_accumulate
  );
  return align16(rows * D * 4) + align16(rows * (s.sinks + s.rangeTokens) * 4) + 2 * partialBytes(rows, D) + align16(kernelFloats * 4 + 64);
}

export interface AttendBuffers {
  queries: number;
  queryType: ElementType;
  out: number;
  outType: ElementType;
  partials: number;
  counters: number;
  keySegments: number;
  keySegmentCount: number;
  valueSegments: number;
  valueSegmentCount: number;
}

export function writeAttend(i32: Int32Array, f32: Float32Array, job: number, s: AttendShape, mode: AttendMode, scale: number, b: AttendBuffers): void {
  const w = job >>> 2;
  i32[w + AttendWord.D] = s.D;
  i32[w + AttendWord.HEADS_PER_KV] = s.headsPerKv;
  i32[w + AttendWord.KV_HEADS] = s.kvHeads;
  i32[w + AttendWord.QUERY_HEADS] = s.queryHeads;
  i32[w + AttendWord.Q_TOKENS] = s.qTokens;
  i32[w + AttendWord.TOKENS] = s.tokens;
  i32[w + AttendWord.SINKS] = s.sinks;
  i32[w + AttendWord.TILE_TOKENS] = s.tileTokens;
  i32[w + AttendWord.TILES] = attendTiles(s);
  i32[w + AttendWord.RANGE_TOKENS] = s.rangeTokens;
  i32[w + AttendWord.RANGES] = attendRanges(s);
  i32[w + AttendWord.MODE] = mode;
  f32[w + AttendWord.SCALE] = scale;
  i32[w + AttendWord.QUERIES] = b.queries;
  i32[w + AttendWord.QUERY_TYPE] = b.queryType;
  i32[w + AttendWord.OUT] = b.out;
  i32[w + AttendWord.OUT_TYPE] = b.outType;
  i32[w + AttendWord.PARTIALS] = b.partials;
  i32[w + AttendWord.COUNTERS] = b.counters;
  i32[w + AttendWord.GROUP_SIZE] = s.groupSize;
  i32[w + AttendWord.BITS] = s.bits;
  i32[w + AttendWord.KEY_GROUP] = s.keyGroup;
  i32[w + AttendWord.VALUE_GROUP] = s.valueGroup;
  i32[w + AttendWord.KEY_SEGMENTS] = b.keySegments;
  i32[w + AttendWord.KEY_SEGMENT_COUNT] = b.keySegmentCount;
  i32[w + AttendWord.VALUE_SEGMENTS] = b.valueSegments;
  i32[w + AttendWord.VALUE_SEGMENT_COUNT] = b.valueSegmentCount;
}

export const ATTEND_JOB_BYTES = AttendWord.WORDS * 4;

// ── VALIDATE ───────────────────────────────────────────────────────────────────────────────────

export const VALIDATE_JOB_BYTES = ValidateWord.WORDS * 4;
/** Elements per VALIDATE task. */
export const VALIDATE_CHUNK = 1 << 16;

export function validateTasks(count: number): number {
  return Math.ceil(count / VALIDATE_CHUNK);
}

export function writeValidate(i32: Int32Array, f32: Float32Array, job: number, count: number, data: number, type: ElementType, maxAbs: number, results: number): void {
  const w = job >>> 2;
  i32[w + ValidateWord.COUNT] = count;
  i32[w + ValidateWord.DATA] = data;
  i32[w + ValidateWord.TYPE] = type;
  f32[w + ValidateWord.MAX_ABS] = maxAbs;
  i32[w + ValidateWord.CHUNK] = VALIDATE_CHUNK;
  i32[w + ValidateWord.RESULTS] = results;
}

// ── FLUSH ──────────────────────────────────────────────────────────────────────────────────────

export interface FlushRecord {
  op: FlushOp;
  heads: number;
  D: number;
  group: number;
  bits: number;
  /** Key blocks (CHANNEL) or tokens (TOKEN). */
  units: number;
  /** TOKEN: the value slot of the first token in the destination blocks. */
  firstSlot: number;
  src: number;
  srcHeadStride: number;
  dst: number;
  dstHeadStride: number;
}

export const FLUSH_JOB_BYTES = FlushWord.WORDS * 4;
export const FLUSH_RECORD_BYTES = FlushRecordWord.WORDS * 4;

/** Tasks of a record: (head, chunk) pairs (assembly/jobs.ts recordChunks). */
export function flushRecordTasks(r: FlushRecord): number {
  const chunks = r.op === FlushOp.CHANNEL
    ? Math.ceil(r.units / FlushChunk.CHANNEL_BLOCKS)
    : Math.ceil((r.firstSlot + r.units) / FlushChunk.TOKEN_SLOTS) - Math.floor(r.firstSlot / FlushChunk.TOKEN_SLOTS);
  return r.heads * chunks;
}

/** Writes the records and returns the job's task count. */
export function writeFlush(i32: Int32Array, job: number, recordsAt: number, records: readonly FlushRecord[]): number {
  const w = job >>> 2;
  i32[w + FlushWord.RECORDS] = recordsAt;
  i32[w + FlushWord.RECORD_COUNT] = records.length;
  let tasks = 0;
  records.forEach((r, i) => {
    const at = (recordsAt >>> 2) + i * FlushRecordWord.WORDS;
    i32[at + FlushRecordWord.OP] = r.op;
    i32[at + FlushRecordWord.FIRST_TASK] = tasks;
    i32[at + FlushRecordWord.HEADS] = r.heads;
    i32[at + FlushRecordWord.D] = r.D;
    i32[at + FlushRecordWord.GROUP] = r.group;
    i32[at + FlushRecordWord.BITS] = r.bits;
    i32[at + FlushRecordWord.UNITS] = r.units;
    i32[at + FlushRecordWord.FIRST_SLOT] = r.firstSlot;
    i32[at + FlushRecordWord.SRC] = r.src;
    i32[at + FlushRecordWord.SRC_HEAD_STRIDE] = r.srcHeadStride;
    i32[at + FlushRecordWord.DST] = r.dst;
    i32[at + FlushRecordWord.DST_HEAD_STRIDE] = r.dstHeadStride;
    tasks += flushRecordTasks(r);
  });
  return tasks;
}

// ── COPY_ROWS ──────────────────────────────────────────────────────────────────────────────────

export interface CopyRecord {
  firstToken: number;
  tokens: number;
  src: number;
  dst: number;
  dstHeadStride: number;
}

export const COPY_JOB_BYTES = CopyWord.WORDS * 4;
export const COPY_RECORD_BYTES = CopyRecordWord.WORDS * 4;
/** Tokens per COPY_ROWS task. */
export const COPY_CHUNK_TOKENS = 256;

/** Writes the records and returns the job's task count. */
export function writeCopy(i32: Int32Array, job: number, heads: number, D: number, srcType: ElementType, recordsAt: number, records: readonly CopyRecord[]): number {
  const w = job >>> 2;
  i32[w + CopyWord.HEADS] = heads;
  i32[w + CopyWord.D] = D;
  i32[w + CopyWord.SRC_TYPE] = srcType;
  i32[w + CopyWord.RECORDS] = recordsAt;
  i32[w + CopyWord.RECORD_COUNT] = records.length;
  i32[w + CopyWord.CHUNK_TOKENS] = COPY_CHUNK_TOKENS;
  let tasks = 0;
  records.forEach((r, i) => {
    const at = (recordsAt >>> 2) + i * CopyRecordWord.WORDS;
    i32[at + CopyRecordWord.FIRST_TASK] = tasks;
    i32[at + CopyRecordWord.FIRST_TOKEN] = r.firstToken;
    i32[at + CopyRecordWord.TOKENS] = r.tokens;
    i32[at + CopyRecordWord.SRC] = r.src;
    i32[at + CopyRecordWord.DST] = r.dst;
    i32[at + CopyRecordWord.DST_HEAD_STRIDE] = r.dstHeadStride;
    tasks += heads * Math.ceil(r.tokens / COPY_CHUNK_TOKENS);
  });
  return tasks;
}
