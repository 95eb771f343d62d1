// The persistent format of a KiviCache (docs/FORMAT.md): writing it from a cache's regions, and
// reading it back with every field checked against the options, the flush schedule of SPEC.md and
// the bytes that remain — before anything is allocated or wasm memory is touched.

import { describe, KEY_GROUPINGS, KEY_WINDOWS, resolveOptions, VALUE_GROUPINGS, type ResolvedOptions } from './options';
import { clearValueSlots, streamLayout, type StreamLayout } from './layout';
import type { Stream } from './storage';

export const FORMAT_MAGIC = 'KIVI';
export const FORMAT_VERSION = 1;
/** magic, version, reserved, 8 × u32 options, 4 × u8 options. */
export const HEADER_BYTES = 44;
/** tokens, sinkCount, key quantized/residual, value quantized/residual: 6 × u32. */
export const LAYER_HEADER_BYTES = 24;
export const CHECKSUM_BYTES = 4;

const WHERE = 'restoreCache';

// ── CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), table-driven: no dependency needed. ──
let crcTable: Uint32Array | null = null;
export function crc32(data: Uint8Array, start = 0, end = data.length): number {
  if (crcTable === null) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = start; i < end; i++) crc = crcTable[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** The state of one layer the writer reads (the cache's own). */
export interface StoredLayer {
  readonly tokens: number;
  readonly sinkCount: number;
  readonly keys: Stream;
  readonly values: Stream;
}

/** A checked stream of the input: counts and the byte offsets of its three parts in `bytes`. */
export interface ParsedStream {
  quantizedTokens: number;
  residualCount: number;
  /** Stored units per head: ceil(quantizedTokens / unitTokens). */
  units: number;
  sinks: number;
  quantized: number;
  residual: number;
}

export interface ParsedLayer {
  tokens: number;
  sinkCount: number;
  streams: [ParsedStream, ParsedStream];
}

export interface ParsedCache {
  options: ResolvedOptions;
  layers: ParsedLayer[];
  bytes: Uint8Array;
}

function units(layout: StreamLayout, tokens: number): number {
  return layout.kind === 'f32' ? 0 : Math.ceil(tokens / layout.unitTokens);
}

/** Writes the format: header, per-layer counts and used bytes (residual rows moved to start 0), CRC-32.
 *  The quantized units of a stream are written head by head, each head's views one after another; the
 *  slots after the last token of a partly filled value block are written cleared. */
export function serializeCache(o: ResolvedOptions, layers: readonly StoredLayer[], memory: () => Uint8Array): Uint8Array {
  const H = o.kvHeads;
  const row = o.headDim * 4;
  let total = HEADER_BYTES + CHECKSUM_BYTES;
  for (const l of layers) {
    total += LAYER_HEADER_BYTES;
    for (const s of [l.keys, l.values]) total += H * (l.sinkCount * row + s.quantizedUnits * s.layout.headUnitBytes + s.residualCount * row);
  }
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  for (let i = 0; i < 4; i++) out[i] = FORMAT_MAGIC.charCodeAt(i);
  view.setUint16(4, FORMAT_VERSION, true);
  view.setUint16(6, 0, true);
  [o.layers, o.kvHeads, o.headDim, o.queryHeads, o.groupSize, o.residual, o.sinkTokens, o.maxTokens ?? 0]
    .forEach((v, i) => view.setUint32(8 + 4 * i, v, true));
  out[40] = o.bits;
  out[41] = KEY_WINDOWS.indexOf(o.keyWindow);
  out[42] = KEY_GROUPINGS.indexOf(o.keyGrouping);
  out[43] = VALUE_GROUPINGS.indexOf(o.valueGrouping);
  let at = HEADER_BYTES;
  const u8 = memory();
  const copy = (from: number, length: number) => {
    out.set(u8.subarray(from, from + length), at);
    at += length;
  };
  for (const l of layers) {
    [l.tokens, l.sinkCount, l.keys.quantizedTokens, l.keys.residualCount, l.values.quantizedTokens, l.values.residualCount]
      .forEach((v, i) => view.setUint32(at + 4 * i, v, true));
    at += LAYER_HEADER_BYTES;
    for (const s of [l.keys, l.values]) {
      const unitBytes = s.layout.headUnitBytes;
      for (let h = 0; h < H; h++) copy(s.sinks.ptr + h * s.sinks.capacity * row, l.sinkCount * row);
      for (let h = 0; h < H; h++) {
        for (const v of s.views) copy(v.chunk.ptr + h * v.chunk.capacity * unitBytes, s.viewUnits(v) * unitBytes);
        const partial = s.quantizedTokens % s.layout.unitTokens;
        if (s.layout.kind === 'token' && partial > 0) clearValueSlots(s.layout, o, out, at - unitBytes, partial);
      }
      for (let h = 0; h < H; h++) copy(s.residual.ptr + (h * s.residual.capacity + s.residualStart) * row, s.residualCount * row);
    }
  }
  view.setUint32(at, crc32(out, 0, at), true);
  return out;
}

/** A structural error found because the input ended early. */
class Truncated extends RangeError {}

function enumCode<T extends string>(name: string, code: number, names: readonly T[]): T {
  const value = names[code];
  if (value === undefined) {
    throw new RangeError(`${WHERE}: ${name} code must be ${names.map((n, i) => `${i} (${n})`).join(' or ')}, got ${code}`);
  }
  return value;
}

function parseStructure(bytes: Uint8Array): ParsedCache {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const length = bytes.length;
  const u32 = (at: number) => view.getUint32(at, true);
  const fields = [u32(8), u32(12), u32(16), u32(20), u32(24), u32(28), u32(32), u32(36)];
  const [layers, kvHeads, headDim, queryHeads, groupSize, residual, sinkTokens, maxTokens] = fields as [number, number, number, number, number, number, number, number];
  const raw = {
    layers, kvHeads, headDim, queryHeads, bits: bytes[40]!, groupSize, residual, sinkTokens,
    keyWindow: enumCode('keyWindow', bytes[41]!, KEY_WINDOWS),
    keyGrouping: enumCode('keyGrouping', bytes[42]!, KEY_GROUPINGS),
    valueGrouping: enumCode('valueGrouping', bytes[43]!, VALUE_GROUPINGS),
    ...(maxTokens === 0 ? {} : { maxTokens }),
  };
  let o: ResolvedOptions;
  try {
    o = resolveOptions(raw);
  } catch (error) {
    const message = error instanceof Error ? error.message.replace(/^createCache: /, '') : String(error);
    throw error instanceof TypeError ? new TypeError(`${WHERE}: stored options: ${message}`) : new RangeError(`${WHERE}: stored options: ${message}`);
  }
  const H = o.kvHeads;
  const row = o.headDim * 4;
  const layouts = [streamLayout(o, o.keyGrouping), streamLayout(o, o.valueGrouping)] as const;
  const end = length - CHECKSUM_BYTES;
  let at = HEADER_BYTES;
  const need = (count: number, what: string) => {
    if (count > end - at) {
      throw new Truncated(`${WHERE}: truncated: ${what} needs ${count} bytes at offset ${at}, but only ${Math.max(0, end - at)} remain before the checksum (input of ${length} bytes)`);
    }
  };
  need(o.layers * LAYER_HEADER_BYTES, `the counts of ${o.layers} layers`);
  const parsed: ParsedLayer[] = [];
  for (let l = 0; l < o.layers; l++) {
    need(LAYER_HEADER_BYTES, `the counts of layer ${l}`);
    const [tokens, sinkCount, kq, kr, vq, vr] = [0, 1, 2, 3, 4, 5].map((i) => u32(at + 4 * i)) as [number, number, number, number, number, number];
    at += LAYER_HEADER_BYTES;
    const bad = (what: string) => new RangeError(`${WHERE}: layer ${l}: ${what}`);
    if (tokens > 2 ** 31 - 1) throw bad(`tokens must be at most 2^31-1, got ${tokens}`);
    const wantSinks = Math.min(tokens, o.sinkTokens);
    if (sinkCount !== wantSinks) throw bad(`sink count must be min(tokens ${tokens}, sinkTokens ${o.sinkTokens}) = ${wantSinks}, got ${sinkCount}`);
    const stored = tokens - sinkCount;
    const streams: ParsedStream[] = [];
    for (const [i, [quantized, residualCount]] of ([[kq, kr], [vq, vr]] as const).entries()) {
      const name = i === 0 ? 'keys' : 'values';
      const layout = layouts[i]!;
      if (quantized + residualCount !== stored) {
        throw bad(`${name}: quantized ${quantized} + residual ${residualCount} tokens must add up to the ${stored} tokens after the sinks`);
      }
      if (layout.kind === 'f32' && quantized !== 0) throw bad(`${name}: a bits-32 cache quantizes nothing, got ${quantized} quantized tokens`);
      // Any count the layout can hold is a reachable state (truncate can leave a stream anywhere).
      if (layout.kind === 'channel' && quantized % layout.unitTokens !== 0) {
        throw bad(`${name}: quantized tokens must be a multiple of the group size ${layout.unitTokens} (whole per-channel groups), got ${quantized}`);
      }
      const n = units(layout, quantized);
      const sinkBytes = H * sinkCount * row;
      const quantizedBytes = H * n * layout.headUnitBytes;
      const residualBytes = H * residualCount * row;
      need(sinkBytes + quantizedBytes + residualBytes, `layer ${l} ${name} (${sinkCount} sink, ${quantized} quantized, ${residualCount} residual tokens)`);
      streams.push({ quantizedTokens: quantized, residualCount, units: n, sinks: at, quantized: at + sinkBytes, residual: at + sinkBytes + quantizedBytes });
      at += sinkBytes + quantizedBytes + residualBytes;
    }
    parsed.push({ tokens, sinkCount, streams: streams as [ParsedStream, ParsedStream] });
  }
  if (at !== end) {
    throw new RangeError(`${WHERE}: the payload ends at offset ${at}, so the input should be ${at + CHECKSUM_BYTES} bytes with its checksum, got ${length} (${length - at - CHECKSUM_BYTES} extra bytes)`);
  }
  return { options: o, layers: parsed, bytes };
}

/** Checks serialized bytes completely (magic, version, options, counts, lengths, CRC-32) without
 *  touching any wasm memory; throws TypeError/RangeError saying what was expected and what was got. */
export function parseCache(input: unknown): ParsedCache {
  let bytes: Uint8Array;
  if (input instanceof Uint8Array) bytes = input;
  else if (input instanceof ArrayBuffer) bytes = new Uint8Array(input);
  else throw new TypeError(`${WHERE}: bytes must be a Uint8Array or an ArrayBuffer, got ${describe(input)}`);
  const length = bytes.length;
  const magic = String.fromCharCode(...bytes.subarray(0, 4));
  if (length < 4 || magic !== FORMAT_MAGIC) {
    if (length < 4 && FORMAT_MAGIC.startsWith(magic)) throw new RangeError(`${WHERE}: truncated: expected at least ${HEADER_BYTES + CHECKSUM_BYTES} bytes, got ${length}`);
    throw new TypeError(`${WHERE}: not a serialized KiviCache: expected the magic "KIVI", got ${JSON.stringify(magic)}`);
  }
  if (length < 6) throw new RangeError(`${WHERE}: truncated: expected at least ${HEADER_BYTES + CHECKSUM_BYTES} bytes, got ${length}`);
  const version = bytes[4]! | (bytes[5]! << 8);
  if (version !== FORMAT_VERSION) throw new RangeError(`${WHERE}: unsupported format version ${version}; this build reads version ${FORMAT_VERSION}`);
  if (length < HEADER_BYTES + CHECKSUM_BYTES) throw new RangeError(`${WHERE}: truncated: expected at least ${HEADER_BYTES + CHECKSUM_BYTES} bytes, got ${length}`);
  const stored = (bytes[length - 4]! | (bytes[length - 3]! << 8) | (bytes[length - 2]! << 16) | (bytes[length - 1]! << 24)) >>> 0;
  const computed = crc32(bytes, 0, length - CHECKSUM_BYTES);
  const checksumError = () => new RangeError(
    `${WHERE}: checksum mismatch: the stored CRC-32 is 0x${stored.toString(16).padStart(8, '0')}, the ${length - CHECKSUM_BYTES} bytes before it give 0x${computed.toString(16).padStart(8, '0')} (the data is corrupted)`,
  );
  const reserved = bytes[6]! | (bytes[7]! << 8);
  let parsed: ParsedCache;
  try {
    if (reserved !== 0) throw new RangeError(`${WHERE}: the reserved header field must be 0, got ${reserved}`);
    parsed = parseStructure(bytes);
  } catch (error) {
    // A truncation says so; any other inconsistency in data that fails its checksum is corruption.
    if (error instanceof Truncated) throw new RangeError(error.message);
    if (stored !== computed) throw checksumError();
    throw error;
  }
  if (stored !== computed) throw checksumError();
  return parsed;
}
