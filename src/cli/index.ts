// kivi-wasm command line: run the llama2.c models of this package on a KIVI cache.
//   npx kivi-wasm generate --model M [--tokenizer T] [--prompt P] [--tokens N] [cache options]
//   npx kivi-wasm eval --model M [--tokenizer T] --text X --protocol A|B [cache options] [--json]
//   npx kivi-wasm eval --matrix [--models DIR] [--out docs/EVAL.md] [--llamacpp bench/peers/llamacpp]
//   npx kivi-wasm convert <checkpoint.bin> <tokenizer.bin> <out.gguf> [--type T] | convert --random … <out.gguf>
import { parseArgs } from 'node:util';
import { Kivi } from '../index';
import { evaluate, generate, LlamaRunner, parseModel, Tokenizer } from '../llama2c/index';
import { commandConvert, CONVERT_HELP } from './convert';
import { runMatrix } from './matrix';
import { CACHE_FLAGS, CACHE_HELP, cacheOptions, choiceOption, describeCache, integerOption, numberOption, readBytes, requiredOption, UsageError, variantOption } from './options';
import { ProgressBar } from './progress';

const HELP = `kivi-wasm: llama2.c and GGUF models on a KIVI 2/4/8-bit key/value cache

usage:
  kivi-wasm generate --model M [--tokenizer T] [--prompt P] [--tokens N] [--temperature 0] [--seed S] [cache options]
      streams the generated text, then prints tokens/s and the cache's bytes against an f32 cache
  kivi-wasm eval --model M [--tokenizer T] --text X --protocol A|B [cache options] [--json]
      feeds every paragraph or window one token at a time and prints tokens, mean NLL and perplexity
      (--json: one JSON object on stdout); a progress bar on stderr
  kivi-wasm eval --matrix [--models DIR] [--out FILE] [--llamacpp PEER_DIR]
      the evaluation of docs/EVAL.md: every model of DIR (default ../shared/models) under f32, KIVI-2/4/8,
      the paper's ablations and the variants that might beat KIVI-2; writes a markdown report.
      --llamacpp: the folder of the installed llama.cpp peer (the repository's bench/peers/llamacpp):
      adds llama.cpp's f16/q8_0/q4_0 caches beside ours on the same GGUF file and token ids
${CONVERT_HELP}

${CACHE_HELP}

Models are llama2.c checkpoints (legacy f32, or v2 Q8_0 "ak42") with their tokenizer .bin (--tokenizer), or
GGUF files of the llama architecture with F32, F16, Q8_0 or Q4_0 weights, which carry their tokenizer
(--tokenizer then overrides it). A GGUF model's F16/Q8_0/Q4_0 matrices are multiplied in wasm SIMD.`;

async function load(values: Record<string, string | boolean | undefined>) {
  const parsed = parseModel(readBytes(requiredOption('model', values.model as string | undefined), 'model'));
  const model = parsed.model;
  const tokenizerPath = values.tokenizer as string | undefined;
  if (tokenizerPath === undefined && parsed.tokenizer === null) throw new UsageError('--tokenizer is required for a llama2.c checkpoint (a GGUF file carries its own)');
  const tokenizer = tokenizerPath === undefined ? parsed.tokenizer! : Tokenizer.fromBytes(readBytes(tokenizerPath, 'tokenizer'), model.config.vocabSize);
  const kivi = await Kivi.load({ variant: variantOption(values) });
  return { model, tokenizer, kivi };
}

async function commandGenerate(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args, strict: true,
    options: { model: { type: 'string' }, tokenizer: { type: 'string' }, prompt: { type: 'string' }, tokens: { type: 'string' }, temperature: { type: 'string' }, seed: { type: 'string' }, ...CACHE_FLAGS },
  });
  const cache = cacheOptions(values);
  const { model, tokenizer, kivi } = await load(values);
  const steps = integerOption('tokens', values.tokens, 256, 1, model.config.seqLen);
  const temperature = numberOption('temperature', values.temperature, 0, 0, 100);
  const seed = integerOption('seed', values.seed, 42, 0, 2 ** 31 - 1);
  const runner = new LlamaRunner(model, kivi, cache);
  const started = performance.now();
  let generated = 0;
  try {
    generate(runner, tokenizer, {
      prompt: values.prompt ?? '', steps, temperature, seed,
      onToken: (text: string) => {
        generated++;
        process.stdout.write(text);
      },
    });
    const seconds = (performance.now() - started) / 1000;
    const stats = runner.cache.stats(); // summed over the layers
    const { layers, kvHeads, headDim } = model.config;
    const tokens = stats.tokens / layers;
    const f32Bytes = stats.tokens * 2 * kvHeads * headDim * 4;
    const quantized = stats.quantizedKeys / layers;
    process.stdout.write('\n');
    process.stderr.write(
      `\n${generated} tokens in ${seconds.toFixed(2)} s: ${(generated / seconds).toFixed(1)} tokens/s (wasm build ${kivi.variant})\n` +
      `cache ${describeCache(cache)}: ${stats.bytes} bytes for ${tokens} tokens in ${layers} layers ` +
      `(${stats.bitsPerElement.toFixed(2)} bits per number) vs ${f32Bytes} bytes in f32: ${(f32Bytes / stats.bytes).toFixed(2)}× smaller` +
      (cache.bits === 32 ? '' : `; ${quantized} of the ${tokens} keys quantized, the newest kept in f32 (residual ${cache.residual})`) + '\n',
    );
  } finally {
    runner.dispose();
  }
}

async function commandEval(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args, strict: true,
    options: {
      model: { type: 'string' }, tokenizer: { type: 'string' }, text: { type: 'string' }, protocol: { type: 'string' },
      json: { type: 'boolean' }, matrix: { type: 'boolean' }, models: { type: 'string' }, out: { type: 'string' }, llamacpp: { type: 'string' }, ...CACHE_FLAGS,
    },
  });
  if (values.matrix) {
    await runMatrix({ modelsDir: values.models ?? '../shared/models', out: values.out ?? 'docs/EVAL.md', variant: variantOption(values), llamacpp: values.llamacpp });
    return;
  }
  const protocol = choiceOption('protocol', requiredOption('protocol', values.protocol), 'A', ['A', 'B'] as const);
  const cache = cacheOptions(values);
  const text = new TextDecoder().decode(readBytes(requiredOption('text', values.text), 'text'));
  const { model, tokenizer, kivi } = await load(values);
  const runner = new LlamaRunner(model, kivi, cache);
  const bar = new ProgressBar(`eval ${protocol} ${describeCache(cache)}`);
  const started = performance.now();
  try {
    const result = evaluate(runner, tokenizer, text, protocol, { onProgress: (done: number, total: number) => bar.update(done, total) });
    bar.stop();
    const seconds = (performance.now() - started) / 1000;
    const report = {
      tokens: result.tokens, meanNll: result.meanNll, perplexity: result.perplexity, sequences: result.sequences,
      protocol, cache: { ...cache, description: describeCache(cache) }, variant: kivi.variant, seconds,
    };
    if (values.json) {
      process.stdout.write(`${JSON.stringify(report)}\n`);
    } else {
      process.stdout.write(
        `protocol ${protocol}, ${describeCache(cache)}, wasm build ${kivi.variant}\n` +
        `tokens ${result.tokens}\nmean NLL ${result.meanNll.toFixed(5)}\nperplexity ${result.perplexity.toFixed(4)}\n` +
        `(${result.sequences} sequences, ${seconds.toFixed(1)} s, ${(result.tokens / seconds).toFixed(0)} tokens/s)\n`,
      );
    }
  } finally {
    bar.stop();
    runner.dispose();
  }
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
      process.stdout.write(`${HELP}\n`);
      return command === undefined ? 2 : 0;
    }
    if (rest.includes('--help') || rest.includes('-h')) {
      process.stdout.write(`${HELP}\n`);
      return 0;
    }
    if (command === 'generate') await commandGenerate(rest);
    else if (command === 'eval') await commandEval(rest);
    else if (command === 'convert') commandConvert(rest);
    else throw new UsageError(`unknown command ${JSON.stringify(command)}; expected generate, eval or convert (see --help)`);
    return 0;
  } catch (error) {
    const usage = error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
    process.stderr.write(`kivi-wasm: ${(error as Error).message}\n`);
    return usage ? 2 : 1;
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
