// npx kivi-wasm convert: a llama2.c model (or a seeded random-weight model) as a GGUF file.
import { closeSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { llamaGgufContents, MIN_RANDOM_VOCAB, randomGgufContents, WEIGHT_TYPES, type WeightType } from '../gguf/convert';
import { ggufChunks, ggufLayout, type GgufContents } from '../gguf/write';
import { parseCheckpoint, Tokenizer } from '../llama2c/index';
import { choiceOption, integerOption, readBytes, requiredOption, UsageError } from './options';

export const CONVERT_HELP = `  kivi-wasm convert <checkpoint.bin> <tokenizer.bin> <out.gguf> [--type f32|f16|q8_0|q4_0] [--name N]
      writes a llama2.c model (legacy f32, or v2 Q8_0 "ak42") with its tokenizer as a GGUF v3 file of the
      llama architecture (default --type f32: the exact weights; norms always F32; a matrix whose rows are
      not whole 32-weight blocks falls back to F16)
  kivi-wasm convert --random --dim D --heads H [--kv-heads K] --layers L --context C [--hidden F]
                    [--vocab V] [--seed S] [--type ...] <out.gguf>
      writes a seeded random-weight model of that shape, for timing (default: --kv-heads H,
      --hidden 8·D/3 rounded up to 256, --vocab 32000, --seed 42)`;

/** Streams the file to `path`; a failure removes the partial file. Returns the bytes written. */
function writeFile(path: string, contents: GgufContents): number {
  const layout = ggufLayout(contents);
  let fd: number;
  try {
    fd = openSync(path, 'w');
  } catch (error) {
    throw new UsageError(`cannot write ${JSON.stringify(path)}: ${(error as Error).message}`);
  }
  try {
    for (const chunk of ggufChunks(contents, layout)) {
      for (let done = 0; done < chunk.length; ) done += writeSync(fd, chunk, done, chunk.length - done);
    }
  } catch (error) {
    closeSync(fd);
    unlinkSync(path);
    throw error;
  }
  closeSync(fd);
  return layout.totalBytes;
}

function summary(contents: GgufContents): string {
  const counts = new Map<string, number>();
  for (const t of contents.tensors) counts.set(t.type.name, (counts.get(t.type.name) ?? 0) + 1);
  return [...counts].map(([type, n]) => `${n} ${type}`).join(', ');
}

export function commandConvert(args: string[]): void {
  const { values, positionals } = parseArgs({
    args, strict: true, allowPositionals: true,
    options: {
      type: { type: 'string' }, name: { type: 'string' }, random: { type: 'boolean' },
      dim: { type: 'string' }, heads: { type: 'string' }, 'kv-heads': { type: 'string' }, layers: { type: 'string' },
      context: { type: 'string' }, hidden: { type: 'string' }, vocab: { type: 'string' }, seed: { type: 'string' },
    },
  });
  const type = choiceOption('type', values.type, 'f32', WEIGHT_TYPES) as WeightType;
  let contents: GgufContents;
  let out: string;
  if (values.random) {
    if (positionals.length !== 1) throw new UsageError(`convert --random expects one file name (the GGUF to write), got ${positionals.length}`);
    out = positionals[0]!;
    const big = 1 << 20;
    const dim = integerOption('dim', requiredOption('dim', values.dim), 0, 2, big);
    const heads = integerOption('heads', requiredOption('heads', values.heads), 0, 1, 4096);
    contents = randomGgufContents({
      dim, heads,
      kvHeads: integerOption('kv-heads', values['kv-heads'], heads, 1, 4096),
      layers: integerOption('layers', requiredOption('layers', values.layers), 0, 1, 4096),
      context: integerOption('context', requiredOption('context', values.context), 0, 1, 1 << 24),
      hiddenDim: values.hidden === undefined ? undefined : integerOption('hidden', values.hidden, 0, 1, big),
      vocabSize: integerOption('vocab', values.vocab, 32000, MIN_RANDOM_VOCAB, 1 << 24),
      seed: integerOption('seed', values.seed, 42, 0, 2 ** 32 - 1),
      type, name: values.name,
    });
  } else {
    for (const flag of ['dim', 'heads', 'kv-heads', 'layers', 'context', 'hidden', 'vocab', 'seed'] as const) {
      if (values[flag] !== undefined) throw new UsageError(`--${flag} is for convert --random only`);
    }
    if (positionals.length !== 3) throw new UsageError(`convert expects <checkpoint.bin> <tokenizer.bin> <out.gguf>, got ${positionals.length} file name${positionals.length === 1 ? '' : 's'}`);
    const [checkpointPath, tokenizerPath, outPath] = positionals as [string, string, string];
    out = outPath;
    const model = parseCheckpoint(readBytes(checkpointPath, 'model'));
    const tokenizer = Tokenizer.fromBytes(readBytes(tokenizerPath, 'tokenizer'), model.config.vocabSize);
    const name = values.name ?? (checkpointPath.split(/[\\/]/).pop() ?? 'llama2c').replace(/\.bin$/, '');
    contents = llamaGgufContents(model, tokenizer, { type, name });
  }
  const started = performance.now();
  const bytes = writeFile(out, contents);
  process.stderr.write(`wrote ${out}: ${bytes} bytes, GGUF v3, llama, ${contents.tensors.length} tensors (${summary(contents)}) in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
}
