// Reads the structure of a GGUF file (layout: format.ts) from bytes in memory: metadata, tensor
// infos, alignment and the data offset. Nothing here trusts the file: every count, length and
// offset is checked against the bytes that remain before anything is allocated from it, tensor
// types come from a closed table (a type this package does not run is refused by name), and a
// malformed file is a TypeError or RangeError saying what was expected and what was found, at which
// byte offset. The architecture (which tensors and keys a Llama needs) is model.ts's business.
//
// Allocations are bounded by the file: an array of n items is allocated only after n items' worth
// of bytes are known to be there.

import { describe } from '../options';
import {
  alignUp, GGML_TYPE_NAMES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, tensorBytes, tensorTypeById, VALUE_TYPE_BYTES, VALUE_TYPE_NAMES,
  ValueType, type MetadataValue, type NumericArray, type StringArray, type TensorType,
} from './format';

export interface GgufTensorInfo {
  readonly name: string;
  /** ggml's ne: fastest dimension first. */
  readonly dims: readonly number[];
  readonly type: TensorType;
  readonly elements: number;
  /** Absolute byte offset of the data in the file. */
  readonly offset: number;
  readonly byteLength: number;
}

export interface GgufFile {
  readonly version: 2 | 3;
  readonly alignment: number;
  /** Absolute byte offset where the tensor data starts. */
  readonly dataOffset: number;
  /** In file order. */
  readonly metadata: ReadonlyMap<string, MetadataValue>;
  /** In file order. */
  readonly tensors: readonly GgufTensorInfo[];
  /** The bytes it was read from (tensor data are views into them). */
  readonly bytes: Uint8Array;
}

/** GGML_MAX_DIMS */
const MAX_DIMS = 4;
/** GGML_MAX_NAME: llama.cpp refuses longer tensor names. */
const MAX_TENSOR_NAME_BYTES = 63;
/** Smallest metadata entry: an empty key (8), a type (4), a one-byte value. */
const MIN_KV_BYTES = 13;
/** Smallest tensor info: an empty name (8), n_dims (4), one dim (8), type (4), offset (8). */
const MIN_TENSOR_INFO_BYTES = 32;
const WHERE = 'readGguf';

const utf8 = new TextDecoder('utf-8');

class Cursor {
  readonly view: DataView;
  offset = 0;

  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get left(): number {
    return this.bytes.length - this.offset;
  }

  need(n: number, what: string): void {
    if (n > this.left) {
      throw new RangeError(`${WHERE}: truncated file: ${what} needs ${n} bytes at offset ${this.offset}, but the file ends ${this.left} bytes later (${this.bytes.length} bytes)`);
    }
  }

  u8(what: string): number { this.need(1, what); return this.view.getUint8(this.offset++); }
  u32(what: string): number { this.need(4, what); const v = this.view.getUint32(this.offset, true); this.offset += 4; return v; }

  /** A u64 as a number; refuses values past 2^53 (no count, length or offset of a real file is). */
  u64(what: string): number {
    this.need(8, what);
    const v = this.view.getBigUint64(this.offset, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`${WHERE}: ${what} at offset ${this.offset} is ${v}, past any file (more than 2^53)`);
    this.offset += 8;
    return Number(v);
  }

  /** A string's length and bytes (a view), its length checked against what is left. */
  stringBytes(what: string): Uint8Array {
    const at = this.offset;
    const length = this.u64(`the length of ${what}`);
    if (length > this.left) {
      throw new RangeError(`${WHERE}: ${what} at offset ${at} claims ${length} bytes, but only ${this.left} bytes are left in the file`);
    }
    const b = this.bytes.subarray(this.offset, this.offset + length);
    this.offset += length;
    return b;
  }

  string(what: string): string {
    return utf8.decode(this.stringBytes(what));
  }
}

function typeName(code: number): string {
  return VALUE_TYPE_NAMES[code] ?? `unknown (${code})`;
}

function readValueType(c: Cursor, what: string): number {
  const at = c.offset;
  const type = c.u32(`the value type of ${what}`);
  if (type >= VALUE_TYPE_NAMES.length) {
    throw new RangeError(`${WHERE}: ${what} at offset ${at} has value type ${type}; the GGUF value types are 0 to ${VALUE_TYPE_NAMES.length - 1} (${VALUE_TYPE_NAMES.join(', ')})`);
  }
  return type;
}

function readScalar(c: Cursor, type: number, what: string): MetadataValue {
  const v = c.view;
  const name = VALUE_TYPE_NAMES[type]!;
  if (type === ValueType.STRING) return { type: 'string', value: c.string(what) };
  const size = VALUE_TYPE_BYTES[type]!;
  c.need(size, what);
  const at = c.offset;
  c.offset += size;
  switch (type) {
    case ValueType.UINT8: return { type: 'uint8', value: v.getUint8(at) };
    case ValueType.INT8: return { type: 'int8', value: v.getInt8(at) };
    case ValueType.UINT16: return { type: 'uint16', value: v.getUint16(at, true) };
    case ValueType.INT16: return { type: 'int16', value: v.getInt16(at, true) };
    case ValueType.UINT32: return { type: 'uint32', value: v.getUint32(at, true) };
    case ValueType.INT32: return { type: 'int32', value: v.getInt32(at, true) };
    case ValueType.FLOAT32: return { type: 'float32', value: v.getFloat32(at, true) };
    case ValueType.FLOAT64: return { type: 'float64', value: v.getFloat64(at, true) };
    case ValueType.UINT64: return { type: 'uint64', value: v.getBigUint64(at, true) };
    case ValueType.INT64: return { type: 'int64', value: v.getBigInt64(at, true) };
    case ValueType.BOOL: {
      const b = v.getUint8(at);
      if (b > 1) throw new RangeError(`${WHERE}: ${what} at offset ${at} is a bool of value ${b}; expected 0 or 1`);
      return { type: 'bool', value: b === 1 };
    }
  }
  throw new RangeError(`${WHERE}: ${what}: cannot read a ${name} here`);
}

const ARRAY_TYPES: Record<number, new (n: number) => NumericArray> = {
  [ValueType.UINT8]: Uint8Array, [ValueType.INT8]: Int8Array, [ValueType.UINT16]: Uint16Array, [ValueType.INT16]: Int16Array,
  [ValueType.UINT32]: Uint32Array, [ValueType.INT32]: Int32Array, [ValueType.FLOAT32]: Float32Array, [ValueType.FLOAT64]: Float64Array,
  [ValueType.UINT64]: BigUint64Array, [ValueType.INT64]: BigInt64Array, [ValueType.BOOL]: Uint8Array,
};

function readArray(c: Cursor, what: string): MetadataValue {
  const at = c.offset;
  const item = readValueType(c, `the items of ${what}`);
  if (item === ValueType.ARRAY) throw new RangeError(`${WHERE}: ${what} at offset ${at} is an array of arrays, which GGUF readers (llama.cpp's too) do not accept`);
  const count = c.u64(`the length of ${what}`);
  const itemBytes = item === ValueType.STRING ? 8 : VALUE_TYPE_BYTES[item]!;
  if (count > c.left / itemBytes) {
    throw new RangeError(`${WHERE}: ${what} at offset ${at} claims ${count} items of type ${typeName(item)} (at least ${count * itemBytes} bytes), but only ${c.left} bytes are left in the file`);
  }
  if (item === ValueType.STRING) {
    const starts = new Float64Array(count);
    const lengths = new Float64Array(count);
    for (let i = 0; i < count; i++) {
      const b = c.stringBytes(`item ${i} of ${what}`);
      starts[i] = b.byteOffset - c.bytes.byteOffset;
      lengths[i] = b.length;
    }
    const bytes = c.bytes;
    const check = (i: number) => {
      if (!Number.isInteger(i) || i < 0 || i >= count) throw new RangeError(`${what}: item must be an integer from 0 to ${count - 1}, got ${describe(i)}`);
      return i;
    };
    const array: StringArray = {
      length: count,
      bytes: (i) => bytes.subarray(starts[check(i)]!, starts[i]! + lengths[i]!),
      text: (i) => utf8.decode(bytes.subarray(starts[check(i)]!, starts[i]! + lengths[i]!)),
    };
    return { type: 'array', itemType: 'string', value: array };
  }
  const size = VALUE_TYPE_BYTES[item]!;
  const Out = ARRAY_TYPES[item]!;
  const out = new Out(count);
  const v = c.view;
  const base = c.offset;
  for (let i = 0; i < count; i++) {
    const p = base + i * size;
    switch (item) {
      case ValueType.UINT8: case ValueType.BOOL: (out as Uint8Array)[i] = v.getUint8(p); break;
      case ValueType.INT8: (out as Int8Array)[i] = v.getInt8(p); break;
      case ValueType.UINT16: (out as Uint16Array)[i] = v.getUint16(p, true); break;
      case ValueType.INT16: (out as Int16Array)[i] = v.getInt16(p, true); break;
      case ValueType.UINT32: (out as Uint32Array)[i] = v.getUint32(p, true); break;
      case ValueType.INT32: (out as Int32Array)[i] = v.getInt32(p, true); break;
      case ValueType.FLOAT32: (out as Float32Array)[i] = v.getFloat32(p, true); break;
      case ValueType.FLOAT64: (out as Float64Array)[i] = v.getFloat64(p, true); break;
      case ValueType.UINT64: (out as BigUint64Array)[i] = v.getBigUint64(p, true); break;
      case ValueType.INT64: (out as BigInt64Array)[i] = v.getBigInt64(p, true); break;
    }
  }
  if (item === ValueType.BOOL) {
    const bad = (out as Uint8Array).findIndex((b) => b > 1);
    if (bad >= 0) throw new RangeError(`${WHERE}: item ${bad} of ${what} is a bool of value ${out[bad]}; expected 0 or 1`);
  }
  c.offset += count * size;
  return { type: 'array', itemType: VALUE_TYPE_NAMES[item] as Exclude<MetadataValue['type'], 'array' | 'string'>, value: out } as MetadataValue;
}

function readTensorType(c: Cursor, name: string): TensorType {
  const at = c.offset;
  const id = c.u32(`the type of tensor ${name}`);
  const type = tensorTypeById(id);
  if (type) return type;
  const known = GGML_TYPE_NAMES[id];
  const runs = 'F32, F16, Q8_0 and Q4_0';
  if (known) throw new RangeError(`${WHERE}: tensor ${name} has type ${known} (ggml type ${id}), which this runner does not support; it runs ${runs} (requantize the model, e.g. with llama.cpp's llama-quantize)`);
  throw new RangeError(`${WHERE}: tensor ${name} at offset ${at} has ggml type ${id}, which is not a ggml type; this runner runs ${runs}`);
}

/** Reads a GGUF file's structure; throws TypeError/RangeError on anything malformed. */
export function readGguf(bytes: Uint8Array): GgufFile {
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`${WHERE}: expected the file as a Uint8Array, got ${describe(bytes)}`);
  const c = new Cursor(bytes);
  if (bytes.length < 8) throw new RangeError(`${WHERE}: truncated file: ${bytes.length} bytes is too short for the 8-byte magic and version`);
  const magic = c.u32('the magic');
  if (magic !== GGUF_MAGIC) {
    const head = Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join(' ');
    throw new RangeError(`${WHERE}: not a GGUF file: it starts with the bytes ${head}, expected 47 47 55 46 ("GGUF")`);
  }
  const version = c.u32('the version');
  if (version !== 2 && version !== 3) {
    const swapped = ((version & 0xff) << 24 | (version & 0xff00) << 8 | (version >>> 8) & 0xff00 | version >>> 24) >>> 0;
    if (swapped === 2 || swapped === 3) throw new RangeError(`${WHERE}: a big-endian GGUF file (version ${swapped} in big-endian byte order); only little-endian files are read`);
    if (version === 1) throw new RangeError(`${WHERE}: GGUF version 1 (32-bit counts, from 2023) is not read; expected version 2 or 3 (convert it again with a current llama.cpp)`);
    throw new RangeError(`${WHERE}: unknown GGUF version ${version}; expected 2 or 3`);
  }
  const tensorCount = c.u64('the tensor count');
  const kvCount = c.u64('the metadata count');
  if (kvCount > c.left / MIN_KV_BYTES) {
    throw new RangeError(`${WHERE}: the header claims ${kvCount} metadata entries (at least ${MIN_KV_BYTES} bytes each), but the file has ${c.left} bytes after the header`);
  }
  if (tensorCount > c.left / MIN_TENSOR_INFO_BYTES) {
    throw new RangeError(`${WHERE}: the header claims ${tensorCount} tensors (at least ${MIN_TENSOR_INFO_BYTES} bytes of tensor info each), but the file has ${c.left} bytes after the header`);
  }

  const metadata = new Map<string, MetadataValue>();
  for (let i = 0; i < kvCount; i++) {
    const at = c.offset;
    const key = c.string(`the key of metadata entry ${i}`);
    if (metadata.has(key)) throw new RangeError(`${WHERE}: metadata key ${JSON.stringify(key)} appears twice (again at offset ${at})`);
    const what = `metadata ${JSON.stringify(key)}`;
    const type = readValueType(c, what);
    metadata.set(key, type === ValueType.ARRAY ? readArray(c, what) : readScalar(c, type, what));
  }

  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const align = metadata.get('general.alignment');
  if (align !== undefined) {
    if (align.type !== 'uint32') throw new TypeError(`${WHERE}: general.alignment must be a uint32, got a ${align.type}`);
    if (align.value === 0 || (align.value & (align.value - 1)) !== 0) throw new RangeError(`${WHERE}: general.alignment must be a power of two, got ${align.value}`);
    alignment = align.value;
  }

  interface RawInfo { name: string; dims: number[]; type: TensorType; elements: number; relative: number; byteLength: number }
  const raw: RawInfo[] = [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const at = c.offset;
    const nameBytes = c.stringBytes(`the name of tensor ${i}`);
    const name = utf8.decode(nameBytes);
    if (nameBytes.length > MAX_TENSOR_NAME_BYTES) throw new RangeError(`${WHERE}: tensor ${i} at offset ${at} has a ${nameBytes.length}-byte name; ggml's limit is ${MAX_TENSOR_NAME_BYTES}`);
    if (names.has(name)) throw new RangeError(`${WHERE}: tensor name ${JSON.stringify(name)} appears twice (again at offset ${at})`);
    names.add(name);
    const nDims = c.u32(`the dimension count of tensor ${name}`);
    if (nDims < 1 || nDims > MAX_DIMS) throw new RangeError(`${WHERE}: tensor ${name} has ${nDims} dimensions; expected 1 to ${MAX_DIMS}`);
    const dims: number[] = [];
    let elements = 1;
    for (let d = 0; d < nDims; d++) {
      const n = c.u64(`dimension ${d} of tensor ${name}`);
      if (n < 1) throw new RangeError(`${WHERE}: tensor ${name} has dimension ${d} of size 0`);
      dims.push(n);
      elements *= n;
      if (elements > bytes.length * 8) {
        throw new RangeError(`${WHERE}: tensor ${name} of shape [${dims.join(', ')}${d + 1 < nDims ? ', …' : ''}] has more elements than a ${bytes.length}-byte file can hold`);
      }
    }
    const type = readTensorType(c, name);
    if (dims[0]! % type.block !== 0) throw new RangeError(`${WHERE}: tensor ${name} is ${type.name} with ne[0] = ${dims[0]}, not a multiple of its block of ${type.block}`);
    const relative = c.u64(`the data offset of tensor ${name}`);
    if (relative % alignment !== 0) throw new RangeError(`${WHERE}: tensor ${name} has data offset ${relative}, not a multiple of the alignment ${alignment}`);
    raw.push({ name, dims, type, elements, relative, byteLength: tensorBytes(type, elements) });
  }

  const dataOffset = alignUp(c.offset, alignment);
  if (raw.length > 0 && dataOffset > bytes.length) {
    throw new RangeError(`${WHERE}: truncated file: the tensor data would start at offset ${dataOffset}, past the end of the ${bytes.length}-byte file`);
  }
  const dataBytes = bytes.length - dataOffset;
  for (const t of raw) {
    if (t.relative + t.byteLength > dataBytes) {
      throw new RangeError(`${WHERE}: truncated file: tensor ${t.name} (${t.type.name} [${t.dims.join(', ')}], ${t.byteLength} bytes) at data offset ${t.relative} ends at byte ${dataOffset + t.relative + t.byteLength}, past the end of the ${bytes.length}-byte file`);
    }
  }
  const byStart = [...raw].sort((a, b) => a.relative - b.relative);
  for (let i = 1; i < byStart.length; i++) {
    const prev = byStart[i - 1]!;
    const t = byStart[i]!;
    if (t.relative < prev.relative + prev.byteLength) {
      throw new RangeError(`${WHERE}: tensors ${prev.name} (data offset ${prev.relative}, ${prev.byteLength} bytes) and ${t.name} (data offset ${t.relative}) overlap`);
    }
  }
  const tensors: GgufTensorInfo[] = raw.map((t) => ({ name: t.name, dims: t.dims, type: t.type, elements: t.elements, offset: dataOffset + t.relative, byteLength: t.byteLength }));
  return { version, alignment, dataOffset, metadata, tensors, bytes };
}

/** Whether `bytes` start with the GGUF magic. */
export function isGguf(bytes: Uint8Array): boolean {
  return bytes instanceof Uint8Array && bytes.length >= 4 && bytes[0] === 0x47 && bytes[1] === 0x47 && bytes[2] === 0x55 && bytes[3] === 0x46;
}
