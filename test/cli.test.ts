// The command line as a user runs it: the built dist/cli.js in a fresh Node process (npm test
// builds first), on the real models read from ../shared/models.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runMatrix } from '../src/cli/matrix';
import { KIVI2_STORIES260K_B, MODELS, REFERENCE, REFERENCE_TOLERANCE } from './llama2c-helpers';

const root = join(__dirname, '..');
const cli = join(root, 'dist', 'cli.js');
const model = join(MODELS, 'stories260K.bin');
const tokenizer = join(MODELS, 'tok512.bin');
const text = join(MODELS, 'tinystories_val.txt');

function run(args: string[]) {
  const result = spawnSync(process.execPath, [cli, ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('npx kivi-wasm', () => {
  it('eval --json reproduces the reference NLL with an f32 cache, one token at a time', () => {
    const { code, stdout, stderr } = run(['eval', '--model', model, '--tokenizer', tokenizer, '--text', text, '--protocol', 'A', '--bits', '32', '--json']);
    expect(code, stderr).toBe(0);
    const report = JSON.parse(stdout);
    expect(report.tokens).toBe(REFERENCE.stories260K.A.tokens);
    expect(Math.abs(report.meanNll - REFERENCE.stories260K.A.meanNll)).toBeLessThan(REFERENCE_TOLERANCE);
    expect(report.perplexity).toBeCloseTo(Math.exp(report.meanNll), 10);
    expect(stderr).toMatch(/6271\/6271 tokens/); // progress on stderr, not in the JSON
  });

  it('eval with a KIVI-2 cache (default options) prints tokens, mean NLL and perplexity', () => {
    const { code, stdout } = run(['eval', '--model', model, '--tokenizer', tokenizer, '--text', text, '--protocol', 'B']);
    expect(code).toBe(0);
    expect(stdout).toMatch(/protocol B, KIVI-2 \(G=32, R=128\)/);
    const nll = Number(/mean NLL ([\d.]+)/.exec(stdout)![1]);
    expect(Math.abs(nll - KIVI2_STORIES260K_B.meanNll)).toBeLessThan(KIVI2_STORIES260K_B.tolerance);
    expect(stdout).toMatch(/tokens 3676/);
  });

  it('generate streams the greedy story and reports speed and bytes against f32', () => {
    const { code, stdout, stderr } = run(['generate', '--model', model, '--tokenizer', tokenizer, '--tokens', '200', '--residual', '32']);
    expect(code, stderr).toBe(0);
    expect(stdout.startsWith('Once upon a time, there was a little girl named Lily.')).toBe(true);
    expect(stderr).toMatch(/tokens\/s \(wasm build (simd|relaxed-simd|scalar)\)/);
    const smaller = Number(/f32: ([\d.]+)× smaller/.exec(stderr)![1]);
    expect(smaller).toBeGreaterThan(1);
  });

  it('refuses bad command lines with exit code 2 and says what was expected', () => {
    expect(run([]).code).toBe(2);
    const unknown = run(['frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command "frobnicate"; expected generate, eval or convert/);
    const protocol = run(['eval', '--model', model, '--tokenizer', tokenizer, '--text', text, '--protocol', 'C']);
    expect(protocol.code).toBe(2);
    expect(protocol.stderr).toMatch(/--protocol expects one of A, B, got "C"/);
    const bits = run(['eval', '--model', model, '--tokenizer', tokenizer, '--text', text, '--protocol', 'A', '--bits', '3']);
    expect(bits.code).toBe(2);
    expect(bits.stderr).toMatch(/--bits expects 2, 4, 8 or 32, got 3/);
    const flag = run(['generate', '--modle', model]);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toMatch(/--modle/);
    const missing = run(['generate', '--model', join(MODELS, 'nope.bin'), '--tokenizer', tokenizer]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/cannot read the model/);
  });

  it('convert writes a llama2.c model or a random one as GGUF, and refuses bad command lines', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kivi-cli-gguf-'));
    const out = join(dir, 'stories260K.q8_0.gguf');
    const converted = run(['convert', model, tokenizer, out, '--type', 'q8_0']);
    expect(converted.code, converted.stderr).toBe(0);
    expect(converted.stderr).toMatch(/GGUF v3, llama, 47 tensors \(31 Q8_0, 11 F32, 5 F16\)/); // w2 (172 columns) falls back to F16
    const bytes = readFileSync(out);
    expect(bytes.subarray(0, 4).toString('latin1')).toBe('GGUF');
    expect(bytes.readUInt32LE(4)).toBe(3);
    const random = run(['convert', '--random', '--dim', '128', '--heads', '4', '--kv-heads', '2', '--layers', '2', '--context', '2048', '--vocab', '512', '--type', 'q4_0', join(dir, 'random.gguf')]);
    expect(random.code, random.stderr).toBe(0);
    expect(random.stderr).toMatch(/21 tensors \(16 Q4_0, 5 F32\)/);
    expect(run(['convert', model, tokenizer]).stderr).toMatch(/convert expects <checkpoint.bin> <tokenizer.bin> <out.gguf>, got 2 file names/);
    expect(run(['convert', model, tokenizer, out, '--type', 'q5_k']).stderr).toMatch(/--type expects one of f32, f16, q8_0, q4_0, got "q5_k"/);
    expect(run(['convert', '--random', '--dim', '128', '--heads', '4', '--layers', '2', out]).stderr).toMatch(/--context is required/);
    expect(run(['convert', model, tokenizer, out, '--dim', '64']).stderr).toMatch(/--dim is for convert --random only/);
  });

  it('generate and eval run a GGUF file with the tokenizer it carries', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kivi-cli-gguf-run-'));
    const f32 = join(dir, 'stories260K.f32.gguf');
    const q8 = join(dir, 'stories260K.q8_0.gguf');
    expect(run(['convert', model, tokenizer, f32]).code).toBe(0);
    expect(run(['convert', model, tokenizer, q8, '--type', 'q8_0']).code).toBe(0);
    // F32: the llama2.c file's numbers exactly (the same float64 path), no --tokenizer needed.
    const evaluated = run(['eval', '--model', f32, '--text', text, '--protocol', 'A', '--bits', '32', '--json']);
    expect(evaluated.code, evaluated.stderr).toBe(0);
    const report = JSON.parse(evaluated.stdout);
    expect(report.tokens).toBe(REFERENCE.stories260K.A.tokens);
    expect(Math.abs(report.meanNll - REFERENCE.stories260K.A.meanNll)).toBeLessThan(REFERENCE_TOLERANCE);
    const generated = run(['generate', '--model', q8, '--tokens', '100', '--residual', '32']);
    expect(generated.code, generated.stderr).toBe(0);
    expect(generated.stdout.startsWith('Once upon a time, there was a little girl named Lily.')).toBe(true);
    // --tokenizer overrides the file's (and must fit its vocabulary); a llama2.c checkpoint needs one.
    expect(run(['generate', '--model', q8, '--tokenizer', join(MODELS, 'tok4096.bin'), '--tokens', '5']).stderr).toMatch(/Tokenizer.fromBytes: .*bytes left over/);
    const missing = run(['generate', '--model', model, '--tokens', '5']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/--tokenizer is required for a llama2.c checkpoint \(a GGUF file carries its own\)/);
    const broken = join(dir, 'broken.gguf');
    writeFileSync(broken, readFileSync(q8).subarray(0, 5000));
    const refused = run(['eval', '--model', broken, '--text', text, '--protocol', 'A']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/kivi-wasm: readGguf: item 317 of metadata "tokenizer.ggml.tokens" at offset \d+ claims \d+ bytes, but only \d+ bytes are left/);
  });

  it('eval --matrix writes the report tables (one model, the paper configurations)', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'kivi-matrix-')), 'EVAL.md');
    await runMatrix({ modelsDir: MODELS, out, variant: 'auto', models: ['stories260K'], configs: 'paper' });
    const report = readFileSync(out, 'utf8');
    expect(report).toMatch(/### stories260K/);
    expect(report).toMatch(/\| f32 \| 32 \| 1\.2571\d \|/);
    for (const label of ['KIVI-2 (G=32, R=128)', 'KIVI-2 (R=0)', 'KIVI-4', 'KIVI-8', '2-bit, R=0, keys per token', '2-bit, R=0, values per channel']) {
      expect(report).toContain(`| ${label} |`);
    }
    expect(report).toMatch(/\| key cache \| [\d.]+ \| [\d.]+ \|/);
  }, 120_000);
});
