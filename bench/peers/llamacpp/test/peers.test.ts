// The peers, for real: the package's GGUF files in llama.cpp native (node-llama-cpp) and in wllama
// (headless Chromium), with llama.cpp's numbers checked against ours.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Kivi } from '../../../../src/index';
import { convertToGguf, randomGguf } from '../../../../src/gguf/convert';
import { evaluate, generate, LlamaRunner, parseCheckpoint, protocolSequences, Tokenizer, type LlamaModel } from '../../../../src/llama2c/index';

const here = dirname(fileURLToPath(import.meta.url));
const PEERS = join(here, '..');
const MODELS = join(here, '../../../../../shared/models');
const AGREEMENT = 1e-4; // llama.cpp f16 cache against our f32 cache, mean NLL (f16 rounding of K and V)

/** Runs a peer script on a JSON request; returns its parsed stdout. */
function peer(script: string, request: object, scratch: string): any {
  const path = join(scratch, `${script}.request.json`);
  writeFileSync(path, JSON.stringify(request));
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true' };
  delete env.NODE_OPTIONS;
  const r = spawnSync(process.execPath, [join(PEERS, script), path], { cwd: PEERS, env, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${script} exited with ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

let scratch: string;
let model: LlamaModel;
let tokenizer: Tokenizer;
let gguf: string;
let text: string;

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'kivi-peers-'));
  model = parseCheckpoint(new Uint8Array(readFileSync(join(MODELS, 'stories3M.f32.bin'))));
  tokenizer = Tokenizer.fromBytes(new Uint8Array(readFileSync(join(MODELS, 'tok4096.bin'))), model.config.vocabSize);
  text = readFileSync(join(MODELS, 'tinystories_val.txt'), 'utf8');
  gguf = join(scratch, 'stories3M.f32.gguf');
  writeFileSync(gguf, convertToGguf(model, tokenizer, { type: 'f32', name: 'stories3M' }));
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('llama.cpp native (node-llama-cpp)', () => {
  it('scores the converted stories3M like our f32 cache (f16 cache, 1e-4), and worse with q4_0', async () => {
    const sequences = protocolSequences(tokenizer, text, 'B', model.config.seqLen).map((s) => s.tokens);
    const r = peer('nll.mjs', { model: gguf, sequences, caches: [{ key: 'F16', value: 'F16' }, { key: 'Q4_0', value: 'Q4_0' }] }, scratch);
    expect(r.versions.nodeLlamaCpp).toBe('3.21.1');
    expect(r.versions.buildType).toBe('prebuilt');
    expect(r.versions.llamaCppCommit).toMatch(/^[0-9a-f]{40}$/);
    const [f16, q4] = r.caches;
    const runner = new LlamaRunner(model, await Kivi.load(), { bits: 32 });
    try {
      const ours = evaluate(runner, tokenizer, text, 'B');
      expect(f16.tokens).toBe(ours.tokens);
      expect(f16.tokens).toBe(3806);
      expect(Math.abs(f16.meanNll - ours.meanNll)).toBeLessThan(AGREEMENT);
      f16.perSequence.forEach((s: { tokens: number; nll: number }, i: number) => {
        expect(s.tokens).toBe(ours.perSequence[i]!.tokens);
        expect(Math.abs(s.nll - ours.perSequence[i]!.nll) / s.tokens).toBeLessThan(5 * AGREEMENT);
      });
    } finally {
      runner.dispose();
    }
    expect(q4.meanNll).toBeGreaterThan(f16.meanNll + 0.01); // a 4-bit cache costs llama.cpp something
  });

  it('times decode steps at depths from a synthesized cache state (f16 with and without flash attention, q4_0)', () => {
    const path = join(scratch, 'random.gguf');
    writeFileSync(path, randomGguf({ dim: 256, heads: 4, kvHeads: 2, layers: 1, context: 2048, hiddenDim: 256, vocabSize: 512, type: 'q8_0' }));
    const r = peer('decode.mjs', { model: path, caches: ['F16', 'F16-noFA', 'Q4_0'], depths: [1024, 1536], threads: [1], steps: 3, baseDepth: 256 }, scratch);
    expect(r.rows.map((x: { cache: string; depth: number }) => `${x.cache}@${x.depth}`)).toEqual(
      ['F16@256', 'F16@1024', 'F16@1536', 'F16-noFA@256', 'F16-noFA@1024', 'F16-noFA@1536', 'Q4_0@256', 'Q4_0@1024', 'Q4_0@1536']);
    for (const row of r.rows) {
      expect(row.ms).toHaveLength(3);
      expect(row.medianMs).toBeGreaterThan(0);
    }
  });
});

describe('wllama (llama.cpp in WebAssembly) in headless Chromium', () => {
  it('runs the converted stories3M, one thread and two, and continues a prompt as our runner does (greedy)', async () => {
    const { openWllama, wllamaVersion } = await import(join(PEERS, 'wllama.mjs'));
    expect(wllamaVersion()).toBe('3.8.1');
    const prompt = 'Once upon a time';
    const runner = new LlamaRunner(model, await Kivi.load(), { bits: 32 });
    let ours: string;
    try {
      ours = generate(runner, tokenizer, { prompt, steps: 64, temperature: 0 }).text.trim();
    } finally {
      runner.dispose();
    }
    const w = await openWllama({ 'stories3M.gguf': gguf });
    try {
      for (const threads of [1, 2]) {
        const r = await w.run({ kind: 'generate', model: '/models/stories3M.gguf', nCtx: 512, threads, prompt, maxTokens: 24 });
        expect(r.threads).toBe(threads);
        expect(r.multithread).toBe(threads > 1);
        expect(r.usage.prompt_tokens).toBe(5);
        expect(r.usage.completion_tokens).toBe(24);
        expect(ours.startsWith(`${prompt}${r.text}`.trim())).toBe(true); // the same greedy continuation
      }
    } finally {
      await w.close();
    }
  });
});
