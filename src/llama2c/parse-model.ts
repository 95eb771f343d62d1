// One entry for both model formats: a GGUF file (tokenizer included) or a llama2.c checkpoint.
import { parseGguf } from '../gguf/model';
import { isGguf } from '../gguf/read';
import { parseCheckpoint, type LlamaModel } from './checkpoint';
import type { Tokenizer } from './tokenizer';

export interface ParsedModel {
  model: LlamaModel;
  /** The GGUF file's tokenizer; null for a llama2.c checkpoint (its tokenizer is a separate file). */
  tokenizer: Tokenizer | null;
}

/** Reads a GGUF file (starts with "GGUF") or else a llama2.c checkpoint; throws their errors. */
export function parseModel(bytes: Uint8Array): ParsedModel {
  if (isGguf(bytes)) return parseGguf(bytes);
  return { model: parseCheckpoint(bytes), tokenizer: null };
}
