// Cache options: the public type, defaults, and the one place they are validated.

export type Bits = 2 | 4 | 8 | 32;
// The allowed values, default first. Their order is also their code in the serialized format
// (docs/FORMAT.md, src/serialize.ts): append new values, never reorder.
export const KEY_WINDOWS = ['chunked', 'sliding'] as const;
export const KEY_GROUPINGS = ['channel', 'token'] as const;
export const VALUE_GROUPINGS = ['token', 'channel'] as const;
export type KeyWindow = (typeof KEY_WINDOWS)[number];
export type KeyGrouping = (typeof KEY_GROUPINGS)[number];
export type ValueGrouping = (typeof VALUE_GROUPINGS)[number];

export interface CacheOptions {
  /** Transformer layers; each has its own cache. */
  layers: number;
  /** Key/value heads (Hkv). */
  kvHeads: number;
  /** Head dimension D: a multiple of 8, and of min(groupSize, D). */
  headDim: number;
  /** Query heads (Hq), a multiple of kvHeads (GQA/MQA). Default kvHeads. */
  queryHeads?: number;
  /** Bits per code: 2, 4 or 8; 32 keeps everything in f32 (the baseline). Default 2. */
  bits?: Bits;
  /** KIVI's G: tokens per key group, channels per value group (min(G, D)). A multiple of 8. Default 32. */
  groupSize?: number;
  /** KIVI's R: newest tokens kept in f32; a multiple of groupSize, may be 0. Default 128. */
  residual?: number;
  /** First S tokens kept in f32 forever (attention sinks). Default 0 = plain KIVI. */
  sinkTokens?: number;
  /** 'chunked' = KIVI (quantize R keys at a time); 'sliding' quantizes G at a time (needs residual >= groupSize). */
  keyWindow?: KeyWindow;
  /** 'channel' = KIVI (default); 'token' reproduces the paper's ablation. */
  keyGrouping?: KeyGrouping;
  /** 'token' = KIVI (default); 'channel' reproduces the paper's ablation. */
  valueGrouping?: ValueGrouping;
  /** Capacity hint in tokens per layer: memory for this many is reserved up front; the cache grows past it. */
  maxTokens?: number;
}

export interface ResolvedOptions {
  readonly layers: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly queryHeads: number;
  readonly bits: Bits;
  readonly groupSize: number;
  readonly residual: number;
  readonly sinkTokens: number;
  readonly keyWindow: KeyWindow;
  readonly keyGrouping: KeyGrouping;
  readonly valueGrouping: ValueGrouping;
  readonly maxTokens: number | undefined;
}

const KNOWN = new Set([
  'layers', 'kvHeads', 'headDim', 'queryHeads', 'bits', 'groupSize', 'residual', 'sinkTokens',
  'keyWindow', 'keyGrouping', 'valueGrouping', 'maxTokens',
]);

export const LIMITS = {
  layers: 4096,
  heads: 4096,
  headDim: 4096,
  groupSize: 4096,
  residual: 1 << 20,
  sinkTokens: 1 << 20,
  maxTokens: 1 << 26,
} as const;

/** A value as error messages show it (what was got). */
export function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint' || value == null) return String(value);
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name} of length ${(value as unknown as ArrayLike<number>).length}`;
  if (value instanceof ArrayBuffer) return `an ArrayBuffer of ${value.byteLength} bytes (wrap it in a Uint8Array)`;
  if (typeof value === 'function') return 'a function';
  return `an object (${Object.prototype.toString.call(value)})`;
}

function integer(where: string, name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number') throw new TypeError(`${where}: ${name} must be a number, got ${describe(value)}`);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${where}: ${name} must be an integer from ${min} to ${max}, got ${describe(value)}`);
  }
  return value;
}

function oneOf<T extends string | number>(where: string, name: string, value: unknown, allowed: readonly T[]): T {
  if (!allowed.includes(value as T)) {
    const list = allowed.map((a) => describe(a)).join(', ');
    const error = typeof value === typeof allowed[0] ? RangeError : TypeError;
    throw new error(`${where}: ${name} must be one of ${list}, got ${describe(value)}`);
  }
  return value as T;
}

/** Validates and fills in defaults; throws TypeError/RangeError saying what was expected and what was got. */
export function resolveOptions(options: unknown): ResolvedOptions {
  const where = 'createCache';
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new TypeError(`${where}: options must be an object, got ${describe(options)}`);
  }
  const o = options as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!KNOWN.has(key)) throw new TypeError(`${where}: unknown option ${JSON.stringify(key)}; expected one of ${[...KNOWN].join(', ')}`);
  }
  const layers = integer(where, 'layers', o.layers, 1, LIMITS.layers);
  const kvHeads = integer(where, 'kvHeads', o.kvHeads, 1, LIMITS.heads);
  const headDim = integer(where, 'headDim', o.headDim, 8, LIMITS.headDim);
  if (headDim % 8 !== 0) throw new RangeError(`${where}: headDim must be a multiple of 8, got ${headDim}`);
  const queryHeads = o.queryHeads === undefined ? kvHeads : integer(where, 'queryHeads', o.queryHeads, 1, LIMITS.heads);
  if (queryHeads % kvHeads !== 0) {
    throw new RangeError(`${where}: queryHeads must be a multiple of kvHeads (${kvHeads}), got ${queryHeads}`);
  }
  const bits = o.bits === undefined ? 2 : oneOf<Bits>(where, 'bits', o.bits, [2, 4, 8, 32]);
  const groupSize = o.groupSize === undefined ? 32 : integer(where, 'groupSize', o.groupSize, 8, LIMITS.groupSize);
  if (groupSize % 8 !== 0) throw new RangeError(`${where}: groupSize must be a multiple of 8, got ${groupSize}`);
  const residual = o.residual === undefined ? 128 : integer(where, 'residual', o.residual, 0, LIMITS.residual);
  if (residual % groupSize !== 0) {
    throw new RangeError(`${where}: residual must be a multiple of groupSize (${groupSize}), got ${residual}`);
  }
  const sinkTokens = o.sinkTokens === undefined ? 0 : integer(where, 'sinkTokens', o.sinkTokens, 0, LIMITS.sinkTokens);
  const keyWindow = o.keyWindow === undefined ? KEY_WINDOWS[0] : oneOf<KeyWindow>(where, 'keyWindow', o.keyWindow, KEY_WINDOWS);
  const keyGrouping = o.keyGrouping === undefined ? KEY_GROUPINGS[0] : oneOf<KeyGrouping>(where, 'keyGrouping', o.keyGrouping, KEY_GROUPINGS);
  const valueGrouping = o.valueGrouping === undefined ? VALUE_GROUPINGS[0] : oneOf<ValueGrouping>(where, 'valueGrouping', o.valueGrouping, VALUE_GROUPINGS);
  const valueGroup = Math.min(groupSize, headDim);
  if (bits !== 32 && (keyGrouping === 'token' || valueGrouping === 'token') && headDim % valueGroup !== 0) {
    throw new RangeError(`${where}: headDim must be a multiple of the per-token group min(groupSize, headDim) = ${valueGroup}, got ${headDim}`);
  }
  if (keyWindow === 'sliding') {
    if (residual < groupSize) {
      throw new RangeError(`${where}: keyWindow 'sliding' needs residual >= groupSize (${groupSize}), got residual ${residual}`);
    }
    if (keyGrouping !== 'channel') {
      throw new RangeError(`${where}: keyWindow 'sliding' applies to keys grouped per channel, got keyGrouping ${describe(keyGrouping)}`);
    }
  }
  const maxTokens = o.maxTokens === undefined ? undefined : integer(where, 'maxTokens', o.maxTokens, 1, LIMITS.maxTokens);
  return { layers, kvHeads, headDim, queryHeads, bits, groupSize, residual, sinkTokens, keyWindow, keyGrouping, valueGrouping, maxTokens };
}
