// Writes GGUF v3 files (layout: format.ts). The header is built first, so that tensor data can be
// produced one tensor at a time and streamed (a converted model need not fit in memory twice).

import { describe } from '../options';
import {
  alignUp, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, tensorBytes, VALUE_TYPE_NAMES, ValueType,
  type TensorType, type ValueTypeName,
} from './format';

/** A metadata value to write. Arrays take plain arrays or typed arrays; strings may be given as bytes. */
export type MetadataInput =
  | { type: Exclude<ValueTypeName, 'array' | 'string' | 'bool' | 'uint64' | 'int64'>; value: number }
  | { type: 'uint64' | 'int64'; value: bigint | number }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string | Uint8Array }
  | { type: 'array'; itemType: 'string'; value: readonly (string | Uint8Array)[] }
  | { type: 'array'; itemType: Exclude<ValueTypeName, 'array' | 'string'>; value: ArrayLike<number | bigint | boolean> };

export interface TensorToWrite {
  name: string;
  /** ggml's ne: fastest dimension first (a [rows][cols] matrix is [cols, rows]). */
  dims: readonly number[];
  type: TensorType;
  /** Writes the tensor's data into `out`, which has exactly its byte length and is zeroed. */
  fill(out: Uint8Array): void;
}

export interface GgufContents {
  /** In file order. `general.alignment` (uint32), if present, sets the alignment. */
  metadata: readonly (readonly [string, MetadataInput])[];
  tensors: readonly TensorToWrite[];
}

export interface GgufLayout {
  /** Everything before the tensor data, padded to the alignment. */
  header: Uint8Array;
  alignment: number;
  /** Byte offset of each tensor, relative to the data start (= header.length). */
  offsets: number[];
  /** Byte length of each tensor. */
  lengths: number[];
  /** The whole file. */
  totalBytes: number;
}

const WHERE = 'writeGguf';
const utf8 = new TextEncoder();

class ByteWriter {
  private buffer = new Uint8Array(1024);
  private view = new DataView(this.buffer.buffer);
  length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buffer.length) return;
    const bigger = new Uint8Array(Math.max(this.buffer.length * 2, this.length + n));
    bigger.set(this.buffer.subarray(0, this.length));
    this.buffer = bigger;
    this.view = new DataView(bigger.buffer);
  }

  u8(v: number): void { this.reserve(1); this.view.setUint8(this.length, v); this.length += 1; }
  i8(v: number): void { this.reserve(1); this.view.setInt8(this.length, v); this.length += 1; }
  u16(v: number): void { this.reserve(2); this.view.setUint16(this.length, v, true); this.length += 2; }
  i16(v: number): void { this.reserve(2); this.view.setInt16(this.length, v, true); this.length += 2; }
  u32(v: number): void { this.reserve(4); this.view.setUint32(this.length, v, true); this.length += 4; }
  i32(v: number): void { this.reserve(4); this.view.setInt32(this.length, v, true); this.length += 4; }
  f32(v: number): void { this.reserve(4); this.view.setFloat32(this.length, v, true); this.length += 4; }
  f64(v: number): void { this.reserve(8); this.view.setFloat64(this.length, v, true); this.length += 8; }
  u64(v: bigint | number): void { this.reserve(8); this.view.setBigUint64(this.length, BigInt(v), true); this.length += 8; }
  i64(v: bigint | number): void { this.reserve(8); this.view.setBigInt64(this.length, BigInt(v), true); this.length += 8; }

  bytes(b: Uint8Array): void {
    this.reserve(b.length);
    this.buffer.set(b, this.length);
    this.length += b.length;
  }

  string(s: string | Uint8Array): void {
    const b = typeof s === 'string' ? utf8.encode(s) : s;
    this.u64(b.length);
    this.bytes(b);
  }

  pad(alignment: number): void {
    const n = alignUp(this.length, alignment) - this.length;
    this.reserve(n);
    this.buffer.fill(0, this.length, this.length + n);
    this.length += n;
  }

  result(): Uint8Array {
    return this.buffer.slice(0, this.length);
  }
}

function checkInteger(key: string, type: string, v: unknown, min: number | bigint, max: number | bigint): void {
  const ok = typeof v === 'bigint' ? v >= BigInt(min) && v <= BigInt(max) : typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
  if (!ok) throw new RangeError(`${WHERE}: metadata ${key}: a ${type} must be an integer from ${min} to ${max}, got ${describe(v)}`);
}

const INTEGER_RANGES: Partial<Record<ValueTypeName, [number | bigint, number | bigint]>> = {
  uint8: [0, 255], int8: [-128, 127], uint16: [0, 65535], int16: [-32768, 32767], uint32: [0, 2 ** 32 - 1], int32: [-(2 ** 31), 2 ** 31 - 1],
  uint64: [0n, 2n ** 64n - 1n], int64: [-(2n ** 63n), 2n ** 63n - 1n],
};

function writeScalar(w: ByteWriter, key: string, type: Exclude<ValueTypeName, 'array'>, v: unknown): void {
  const range = INTEGER_RANGES[type];
  if (range) checkInteger(key, type, v, range[0], range[1]);
  switch (type) {
    case 'uint8': return w.u8(v as number);
    case 'int8': return w.i8(v as number);
    case 'uint16': return w.u16(v as number);
    case 'int16': return w.i16(v as number);
    case 'uint32': return w.u32(v as number);
    case 'int32': return w.i32(v as number);
    case 'uint64': return w.u64(v as bigint | number);
    case 'int64': return w.i64(v as bigint | number);
    case 'float32':
    case 'float64':
      if (typeof v !== 'number') throw new TypeError(`${WHERE}: metadata ${key}: a ${type} must be a number, got ${describe(v)}`);
      return type === 'float32' ? w.f32(v) : w.f64(v);
    case 'bool':
      if (typeof v !== 'boolean') throw new TypeError(`${WHERE}: metadata ${key}: a bool must be true or false, got ${describe(v)}`);
      return w.u8(v ? 1 : 0);
    case 'string':
      if (typeof v !== 'string' && !(v instanceof Uint8Array)) throw new TypeError(`${WHERE}: metadata ${key}: a string must be a string or its bytes, got ${describe(v)}`);
      return w.string(v);
  }
}

function typeCode(key: string, name: string): number {
  const code = VALUE_TYPE_NAMES.indexOf(name as ValueTypeName);
  if (code < 0) throw new RangeError(`${WHERE}: metadata ${key}: unknown value type ${describe(name)}; expected one of ${VALUE_TYPE_NAMES.join(', ')}`);
  return code;
}

/** Lays out the file: header bytes, alignment, and where each tensor's data goes. */
export function ggufLayout(contents: GgufContents): GgufLayout {
  const { metadata, tensors } = contents;
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const keys = new Set<string>();
  for (const [key, value] of metadata) {
    if (keys.has(key)) throw new RangeError(`${WHERE}: metadata key ${JSON.stringify(key)} given twice`);
    keys.add(key);
    if (key === 'general.alignment') {
      if (value.type !== 'uint32') throw new TypeError(`${WHERE}: general.alignment must be a uint32, got a ${value.type}`);
      const a = value.value;
      if (!Number.isInteger(a) || a < 1 || (a & (a - 1)) !== 0) throw new RangeError(`${WHERE}: general.alignment must be a power of two, got ${describe(a)}`);
      alignment = a;
    }
  }
  const names = new Set<string>();
  const lengths: number[] = [];
  for (const t of tensors) {
    if (names.has(t.name)) throw new RangeError(`${WHERE}: tensor name ${JSON.stringify(t.name)} given twice`);
    names.add(t.name);
    if (t.dims.length < 1 || t.dims.length > 4 || t.dims.some((d) => !Number.isSafeInteger(d) || d < 1)) {
      throw new RangeError(`${WHERE}: tensor ${t.name}: dims must be 1 to 4 positive integers, got [${t.dims.join(', ')}]`);
    }
    if (t.dims[0]! % t.type.block !== 0) {
      throw new RangeError(`${WHERE}: tensor ${t.name}: ne[0] = ${t.dims[0]} is not a multiple of the ${t.type.name} block of ${t.type.block}`);
    }
    lengths.push(tensorBytes(t.type, t.dims.reduce((a, b) => a * b, 1)));
  }

  const w = new ByteWriter();
  w.u32(GGUF_MAGIC);
  w.u32(GGUF_VERSION);
  w.u64(tensors.length);
  w.u64(metadata.length);
  for (const [key, value] of metadata) {
    w.string(key);
    w.u32(typeCode(key, value.type));
    if (value.type !== 'array') {
      writeScalar(w, key, value.type, value.value);
      continue;
    }
    const item = typeCode(key, value.itemType);
    if (item === ValueType.ARRAY) throw new RangeError(`${WHERE}: metadata ${key}: arrays of arrays are not written`);
    w.u32(item);
    w.u64(value.value.length);
    for (let i = 0; i < value.value.length; i++) writeScalar(w, `${key}[${i}]`, value.itemType, value.value[i]);
  }
  const offsets: number[] = [];
  let offset = 0;
  tensors.forEach((t, i) => {
    w.string(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(t.type.id);
    w.u64(offset);
    offsets.push(offset);
    offset = alignUp(offset + lengths[i]!, alignment);
  });
  w.pad(alignment);
  const header = w.result();
  const last = tensors.length - 1;
  const totalBytes = header.length + (last < 0 ? 0 : offsets[last]! + lengths[last]!);
  return { header, alignment, offsets, lengths, totalBytes };
}

/**
 * The file in pieces, in order: the header, then each tensor's data (filled by its `fill`) with the
 * zero padding that aligns the next one. For streaming to a file; each piece is a fresh buffer.
 */
export function* ggufChunks(contents: GgufContents, layout: GgufLayout = ggufLayout(contents)): Generator<Uint8Array> {
  yield layout.header;
  const { tensors } = contents;
  for (let i = 0; i < tensors.length; i++) {
    const end = i + 1 < tensors.length ? layout.offsets[i + 1]! : layout.offsets[i]! + layout.lengths[i]!;
    const chunk = new Uint8Array(end - layout.offsets[i]!);
    tensors[i]!.fill(chunk.subarray(0, layout.lengths[i]!));
    yield chunk;
  }
}

/** The whole file in memory. */
export function writeGguf(contents: GgufContents): Uint8Array {
  const layout = ggufLayout(contents);
  const out = new Uint8Array(layout.totalBytes);
  out.set(layout.header);
  contents.tensors.forEach((t, i) => {
    const at = layout.header.length + layout.offsets[i]!;
    t.fill(out.subarray(at, at + layout.lengths[i]!));
  });
  return out;
}
