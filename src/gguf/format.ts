// GGUF (the model file format of ggml and llama.cpp), versions 2 and 3, little-endian: the pieces
// that the reader and the writer share.
//
//   | u32 magic "GGUF" | u32 version | u64 tensor_count | u64 metadata_kv_count |
//   | metadata_kv_count × ( string key | u32 value_type | value ) |
//   | tensor_count × ( string name | u32 n_dims | n_dims × u64 ne | u32 ggml_type | u64 offset ) |
//   | zero padding to general.alignment (default 32) |
//   | tensor data: each tensor at data_start + offset, offsets multiples of the alignment |
//
//   string = u64 byte length | UTF-8 bytes (no terminator)
//   array  = u32 item value_type | u64 count | count × item      (arrays of arrays are refused)
//
// Shapes are ggml's: ne[0] is the fastest-varying dimension, so a row-major matrix [rows][cols]
// (y = W·x, rows = outputs) has ne = [cols, rows]. Version 3 only added big-endian files (marked by
// nothing but their byte order), which are refused here; version 1 (u32 counts) is refused too.

/** "GGUF" read as a little-endian u32. */
export const GGUF_MAGIC = 0x46554747;
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Metadata value types (gguf_type). */
export const ValueType = {
  UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9,
  UINT64: 10, INT64: 11, FLOAT64: 12,
} as const;
export type ValueTypeName = 'uint8' | 'int8' | 'uint16' | 'int16' | 'uint32' | 'int32' | 'float32' | 'bool' | 'string' | 'array' | 'uint64' | 'int64' | 'float64';
export const VALUE_TYPE_NAMES: readonly ValueTypeName[] = [
  'uint8', 'int8', 'uint16', 'int16', 'uint32', 'int32', 'float32', 'bool', 'string', 'array', 'uint64', 'int64', 'float64',
];
/** Bytes of one value of each fixed-size type (strings and arrays: 0, they carry their length). */
export const VALUE_TYPE_BYTES: readonly number[] = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8];

export type ScalarTypeName = Exclude<ValueTypeName, 'array' | 'string' | 'uint64' | 'int64' | 'bool'>;

/** A string array as stored: each item's bytes, decoded on request (token pieces are bytes). */
export interface StringArray {
  readonly length: number;
  /** The item's bytes (a view into the file). */
  bytes(i: number): Uint8Array;
  /** The item decoded as UTF-8 (invalid sequences become U+FFFD). */
  text(i: number): string;
}

/** One metadata value, with its stored type. */
export type MetadataValue =
  | { readonly type: ScalarTypeName; readonly value: number }
  | { readonly type: 'uint64' | 'int64'; readonly value: bigint }
  | { readonly type: 'bool'; readonly value: boolean }
  | { readonly type: 'string'; readonly value: string }
  | { readonly type: 'array'; readonly itemType: 'string'; readonly value: StringArray }
  | { readonly type: 'array'; readonly itemType: Exclude<ValueTypeName, 'array' | 'string'>; readonly value: NumericArray };

/** Numeric arrays come back in the typed array of their item type (bool: Uint8Array of 0/1). */
export type NumericArray =
  | Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Int32Array | Float32Array | Float64Array | BigUint64Array | BigInt64Array;

/**
 * ggml tensor types: a closed table. Every type llama.cpp has defined is named (so that a file with
 * a type this package does not run is refused by name); `block` and `blockBytes` are given for the
 * four it runs: F32, F16, Q8_0 and Q4_0.
 */
export const GGML_TYPE_NAMES: Readonly<Record<number, string>> = {
  0: 'F32', 1: 'F16', 2: 'Q4_0', 3: 'Q4_1', 6: 'Q5_0', 7: 'Q5_1', 8: 'Q8_0', 9: 'Q8_1', 10: 'Q2_K', 11: 'Q3_K',
  12: 'Q4_K', 13: 'Q5_K', 14: 'Q6_K', 15: 'Q8_K', 16: 'IQ2_XXS', 17: 'IQ2_XS', 18: 'IQ3_XXS', 19: 'IQ1_S',
  20: 'IQ4_NL', 21: 'IQ3_S', 22: 'IQ2_S', 23: 'IQ4_XS', 24: 'I8', 25: 'I16', 26: 'I32', 27: 'I64', 28: 'F64',
  29: 'IQ1_M', 30: 'BF16', 34: 'TQ1_0', 35: 'TQ2_0', 39: 'MXFP4',
};

export type TensorTypeName = 'F32' | 'F16' | 'Q8_0' | 'Q4_0';

export interface TensorType {
  readonly name: TensorTypeName;
  /** The ggml_type number stored in the file. */
  readonly id: number;
  /** Elements per block; ne[0] must be a multiple of it. */
  readonly block: number;
  /** Bytes per block. */
  readonly blockBytes: number;
}

/** The tensor types this package reads, writes and runs, by ggml_type number. */
export const TENSOR_TYPES: Readonly<Record<TensorTypeName, TensorType>> = {
  F32: { name: 'F32', id: 0, block: 1, blockBytes: 4 },
  F16: { name: 'F16', id: 1, block: 1, blockBytes: 2 },
  // block_q4_0 | f16 d | u8 qs[16] |: byte j holds element j (low nibble) and j + 16 (high); x = (q - 8)·d.
  // 18 bytes per 32 weights: 4.5 bits per weight.
  Q4_0: { name: 'Q4_0', id: 2, block: 32, blockBytes: 18 },
  // block_q8_0 | f16 d | i8 qs[32] |: x = q·d. 34 bytes per 32 weights: 8.5 bits per weight.
  Q8_0: { name: 'Q8_0', id: 8, block: 32, blockBytes: 34 },
};

export function tensorTypeById(id: number): TensorType | undefined {
  return Object.values(TENSOR_TYPES).find((t) => t.id === id);
}

/** Bytes of a tensor of `elements` elements whose ne[0] is a multiple of the type's block. */
export function tensorBytes(type: TensorType, elements: number): number {
  return (elements / type.block) * type.blockBytes;
}

/** general.file_type (llama_ftype) of a model whose matrices are all of one type. */
export const FILE_TYPES: Readonly<Record<TensorTypeName, number>> = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 7 };

/** tokenizer.ggml.token_type values (llama_token_type). */
export const TokenType = { UNDEFINED: 0, NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

/** Tensor names of the `llama` architecture, as llama.cpp's loader looks them up. */
export const TENSOR_NAMES = {
  tokenEmbedding: 'token_embd.weight',
  outputNorm: 'output_norm.weight',
  output: 'output.weight',
  attnNorm: (l: number) => `blk.${l}.attn_norm.weight`,
  attnQ: (l: number) => `blk.${l}.attn_q.weight`,
  attnK: (l: number) => `blk.${l}.attn_k.weight`,
  attnV: (l: number) => `blk.${l}.attn_v.weight`,
  attnOutput: (l: number) => `blk.${l}.attn_output.weight`,
  ffnNorm: (l: number) => `blk.${l}.ffn_norm.weight`,
  /** w1 of llama2.c */
  ffnGate: (l: number) => `blk.${l}.ffn_gate.weight`,
  /** w2 of llama2.c */
  ffnDown: (l: number) => `blk.${l}.ffn_down.weight`,
  /** w3 of llama2.c */
  ffnUp: (l: number) => `blk.${l}.ffn_up.weight`,
} as const;

/** Rounds `n` up to a multiple of `alignment`. */
export function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}
