// Shared by the llama2c test files: where the models are (never copied into the project), and loaders.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseCheckpoint, Tokenizer, type LlamaModel, type ParseOptions } from '../src/llama2c/index';

export const MODELS = join(__dirname, '..', '..', 'shared', 'models');

export function modelBytes(name: string): Uint8Array {
  return new Uint8Array(readFileSync(join(MODELS, name)));
}

export function loadModel(checkpoint: string, tokenizer: string, options?: ParseOptions): { model: LlamaModel; tokenizer: Tokenizer } {
  const model = parseCheckpoint(modelBytes(checkpoint), options);
  return { model, tokenizer: Tokenizer.fromBytes(modelBytes(tokenizer), model.config.vocabSize) };
}

export function validationText(): string {
  return readFileSync(join(MODELS, 'tinystories_val.txt'), 'utf8');
}

/** Reference numbers of shared/models/README.md (f32 cache, independent float64 implementation). */
export const REFERENCE = {
  stories260K: { A: { tokens: 6271, meanNll: 1.42254 }, B: { tokens: 3676, meanNll: 1.25713 } },
  stories3M: { A: { tokens: 3357, meanNll: 1.78005 }, B: { tokens: 3806, meanNll: 1.34985 } },
} as const;

/** The reference numbers have 5 decimals: a correct f32 forward pass lands within this of them. */
export const REFERENCE_TOLERANCE = 2e-5;

/** stories260K protocol B through a KIVI-2 cache (G = 32, R = 128), as measured here (the three
 *  builds agree to 1.4e-6); an attention error of a few percent moves it by more than 1e-3. */
export const KIVI2_STORIES260K_B = { meanNll: 1.34969, tolerance: 1e-3 } as const;
