// The llama2.c runner: checkpoint loaders and their errors, the tokenizer against run.c's encode(),
// the reference numbers of shared/models/README.md on stories260K (f32 cache), greedy generation,
// a KIVI-2 cache on real models, and the runner's lifecycle. stories3M: llama2c-stories3m.test.ts
// and llama2c-q80.test.ts (separate files so that vitest runs them in parallel).
import { beforeAll, describe, expect, it } from 'vitest';
import { Kivi } from '../src/index';
import {
  BOS,
  CHECKPOINT_MAGIC,
  evaluate,
  generate,
  LlamaRunner,
  parseCheckpoint,
  protocolSequences,
  splitParagraphs,
  Tokenizer,
  type LlamaModel,
  type Matrix,
} from '../src/llama2c/index';
import { KIVI2_STORIES260K_B, loadModel, modelBytes, REFERENCE, REFERENCE_TOLERANCE, validationText } from './llama2c-helpers';

let kivi: Kivi;
let stories: { model: LlamaModel; tokenizer: Tokenizer };
let text: string;
beforeAll(async () => {
  kivi = await Kivi.load();
  stories = loadModel('stories260K.bin', 'tok512.bin');
  text = validationText();
});

// ---------------------------------------------------------------------------------------------
// Tokenizer

/** run.c's encode() transcribed literally (rescan of every pair per merge), to check the heap version. */
function runcEncode(tok: Tokenizer, text: string, bos: boolean): number[] {
  const bytes = new TextEncoder().encode(text);
  const piece = (id: number) => String.fromCharCode(...tok.piece(id));
  const vocab = Array.from({ length: tok.vocabSize }, (_, i) => piece(i));
  const sorted = new Map<string, number>();
  vocab.forEach((p, i) => sorted.has(p) || sorted.set(p, i)); // run.c's bsearch over the sorted vocabulary
  const lookup = (s: string) => sorted.get(s) ?? -1;
  const out: number[] = [];
  if (bos) out.push(1);
  if (bytes.length > 0) out.push(lookup(' '));
  let buf: number[] = [];
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i]!;
    if ((c & 0xc0) !== 0x80) buf = [];
    buf.push(c);
    const next = bytes[i + 1] ?? 0;
    if ((next & 0xc0) === 0x80 && buf.length < 4) continue;
    const id = lookup(String.fromCharCode(...buf));
    if (id !== -1) out.push(id);
    else out.push(...buf.map((b) => b + 3));
    buf = [];
  }
  for (;;) {
    let best = -1e10;
    let bestId = -1;
    let bestIdx = -1;
    for (let i = 0; i + 1 < out.length; i++) {
      const id = lookup(vocab[out[i]!]! + vocab[out[i + 1]!]!);
      if (id !== -1 && tok.score(id) > best) {
        best = tok.score(id);
        bestId = id;
        bestIdx = i;
      }
    }
    if (bestIdx === -1) break;
    out.splice(bestIdx, 2, bestId);
  }
  return out;
}

const TRICKY = ['', ' ', '  two  spaces ', 'aaaaaaaaaaaaa', 'héllo wörld 😀 日本語', 'tab\there\r\nCRLF', 'Ünïcödé «quotes» — dash…', 'a\u0000b', 'e\u0301 (combining)'];

describe('Tokenizer', () => {
  it('encodes as run.c (ids computed independently, by a Python transcription of run.c)', () => {
    const t512 = stories.tokenizer;
    const t4096 = Tokenizer.fromBytes(modelBytes('tok4096.bin'), 4096);
    expect(t512.encode('Once upon a time')).toEqual([403, 407, 261, 378]);
    expect(t512.encode('Once upon a time', { bos: true, eos: true })).toEqual([1, 403, 407, 261, 378, 2]);
    expect(t512.encode('Hello world!')).toEqual([346, 306, 414, 263, 304, 341, 443]);
    expect(t4096.encode('Hello world!')).toEqual([346, 2226, 1471, 4027]);
    expect(t512.encode('Lily said, "Wow!"\nThe end.')).toEqual([317, 336, 432, 313, 448, 327, 443, 436, 13, 434, 260, 344, 264, 426]);
    expect(t4096.encode('Lily said, "Wow!"\nThe end.')).toEqual([317, 336, 4016, 313, 1158, 431, 13, 2047, 790, 4010]);
    // é is a piece; ö, the emoji and the CJK characters fall back to their UTF-8 bytes (+3).
    expect(t4096.encode('héllo wörld 😀 日本語')).toEqual([270, 4069, 2226, 263, 198, 185, 4004, 341, 3994, 243, 162, 155, 131, 3994, 233, 154, 168, 233, 159, 175, 235, 173, 161]);
    expect(t512.encode('')).toEqual([]);
    expect(t512.encode('', { bos: true })).toEqual([BOS]);
    expect(t512.encode(' ')).toEqual([410, 410]); // the dummy prefix, then the space
  });

  it('merges exactly as run.c\'s rescanning loop on 300 paragraphs and awkward strings, for both vocabularies', () => {
    const paragraphs = splitParagraphs(text).slice(0, 300);
    for (const tok of [stories.tokenizer, Tokenizer.fromBytes(modelBytes('tok4096.bin'), 4096)]) {
      for (const [i, p] of [...paragraphs, ...TRICKY].entries()) {
        expect(tok.encode(p, { bos: i % 2 === 0 }), `${tok.vocabSize}: ${JSON.stringify(p.slice(0, 40))}`).toEqual(runcEncode(tok, p, i % 2 === 0));
      }
    }
  });

  it('decodes as run.c: leading space stripped after BOS, byte tokens as raw bytes', () => {
    const tok = stories.tokenizer;
    expect(tok.decode(BOS, 403)).toBe('Once');
    expect(tok.decode(5, 403)).toBe(' Once');
    expect(tok.decode(403, 13)).toBe('\n'); // <0x0A>
    expect(Array.from(tok.decodeBytes(0, 0xc3 + 3))).toEqual([0xc3]);
    expect(tok.idOf(' Once')).toBe(403);
    expect(tok.idOf('no such piece')).toBe(-1);
    expect(() => tok.decode(BOS, 512)).toThrow(RangeError);
  });

  it('round-trips text through encode and decodeAll, joining UTF-8 characters spread over byte tokens', () => {
    for (const tok of [stories.tokenizer, Tokenizer.fromBytes(modelBytes('aidreams_tok512.bin'), 512)]) {
      for (const p of [...splitParagraphs(text).slice(0, 100), ...TRICKY.filter((s) => s !== '')]) {
        expect(tok.decodeAll(tok.encode(p, { bos: true, eos: true }))).toBe(p);
        expect(tok.decodeAll(tok.encode(p))).toBe(p); // prev defaults to BOS
      }
    }
    // Each byte of 😀 alone is not text; together they are.
    const tok = stories.tokenizer;
    const emoji = tok.encode('😀').slice(1);
    expect(emoji).toEqual([0xf0 + 3, 0x9f + 3, 0x98 + 3, 0x80 + 3]);
    expect(tok.decode(0, emoji[0]!)).toBe('\ufffd');
    expect(tok.decodeAll(emoji, 0)).toBe('😀');
  });

  it('refuses malformed files with a clear error', () => {
    const good = modelBytes('tok512.bin');
    expect(() => Tokenizer.fromBytes(good.subarray(0, 2), 512)).toThrow(/truncated file: 2 bytes/);
    expect(() => Tokenizer.fromBytes(good.subarray(0, 1000), 512)).toThrow(/truncated file/);
    expect(() => Tokenizer.fromBytes(good, 4096)).toThrow(/truncated file: it holds 512 of the 4096 tokens/);
    expect(() => Tokenizer.fromBytes(modelBytes('tok4096.bin'), 512)).toThrow(/left over after the 512 tokens.*3584 more tokens/);
    const negative = good.slice();
    new DataView(negative.buffer).setInt32(4 + 4, -3, true); // length of token 0
    expect(() => Tokenizer.fromBytes(negative, 512)).toThrow(/token 0 has length -3/);
    const tooLong = good.slice();
    new DataView(tooLong.buffer).setInt32(4 + 4, 8, true);
    expect(() => Tokenizer.fromBytes(tooLong, 512)).toThrow(/token 0 has length 8, expected 0 to max_token_length \(7\)/);
    const badMax = good.slice();
    new DataView(badMax.buffer).setInt32(0, 0, true);
    expect(() => Tokenizer.fromBytes(badMax, 512)).toThrow(/max_token_length must be positive, got 0/);
    expect(() => Tokenizer.fromBytes(good, 0)).toThrow(RangeError);
    expect(() => Tokenizer.fromBytes([1, 2, 3] as unknown as Uint8Array, 512)).toThrow(TypeError);
    expect(() => stories.tokenizer.encode(5 as unknown as string)).toThrow(TypeError);
  });
});

// ---------------------------------------------------------------------------------------------
// Checkpoints

function f32Data(m: Matrix): Float32Array {
  if (m.kind !== 'f32') throw new Error('expected f32');
  return m.data;
}

/** A v1 file (ak42 header, f32) with the weights of a v0 model, optionally with an unshared classifier. */
function toV1(model: LlamaModel, wcls?: Float32Array): Uint8Array {
  const c = model.config;
  const arrays: Float32Array[] = [
    ...model.layers.map((l) => l.rmsAtt), ...model.layers.map((l) => l.rmsFfn), model.rmsFinal, f32Data(model.tokenEmbedding),
    ...(['wq', 'wk', 'wv', 'wo', 'w1', 'w2', 'w3'] as const).flatMap((k) => model.layers.map((l) => f32Data(l[k]))),
    ...(wcls ? [wcls] : []),
  ];
  const floats = arrays.reduce((s, a) => s + a.length, 0);
  const out = new Uint8Array(256 + 4 * floats);
  const view = new DataView(out.buffer);
  view.setUint32(0, CHECKPOINT_MAGIC, true);
  view.setInt32(4, 1, true);
  [c.dim, c.hiddenDim, c.layers, c.heads, c.kvHeads, c.vocabSize, c.seqLen].forEach((v, i) => view.setInt32(8 + 4 * i, v, true));
  view.setUint8(36, wcls ? 0 : 1);
  let o = 256;
  for (const a of arrays) {
    out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), o);
    o += a.byteLength;
  }
  return out;
}

/** The v0 file with another header field i (0 dim .. 6 seq_len). */
function withField(bytes: Uint8Array, field: number, value: number): Uint8Array {
  const copy = bytes.slice();
  new DataView(copy.buffer).setInt32(4 * field, value, true);
  return copy;
}

function logitsOf(model: LlamaModel, tokens: number[]): Float64Array {
  const runner = new LlamaRunner(model, kivi);
  const logits = new Float64Array(model.config.vocabSize);
  for (const t of tokens) runner.forward(t, logits);
  runner.dispose();
  return logits;
}

describe('parseCheckpoint', () => {
  it('reads the legacy v0 format: config, shared classifier, weights in place', () => {
    const { model } = stories;
    expect(model.config).toEqual({ dim: 64, hiddenDim: 172, layers: 5, heads: 8, kvHeads: 4, vocabSize: 512, seqLen: 512, headDim: 8, sharedClassifier: true });
    expect(model.format).toEqual({ version: 0, weights: 'f32' });
    expect(model.classifier).toBe(model.tokenEmbedding);
    const ai = parseCheckpoint(modelBytes('aidreams260K.bin')).config;
    expect(ai).toEqual({ dim: 64, hiddenDim: 172, layers: 4, heads: 4, kvHeads: 4, vocabSize: 512, seqLen: 128, headDim: 16, sharedClassifier: true });
  });

  it('reads the v2 Q8_0 header (magic, version, config, shared byte, unaligned group size) and keeps the weights int8', () => {
    const model = parseCheckpoint(modelBytes('stories3M-q80.bin'));
    expect(model.config).toEqual({ dim: 192, hiddenDim: 512, layers: 6, heads: 6, kvHeads: 2, vocabSize: 4096, seqLen: 512, headDim: 32, sharedClassifier: true });
    expect(model.format).toEqual({ version: 2, weights: 'q8_0', groupSize: 64 });
    const wq = model.layers[0]!.wq;
    expect(wq.kind).toBe('q8_0');
    if (wq.kind === 'q8_0') expect([wq.q.length, wq.scales.length]).toEqual([192 * 192, (192 * 192) / 64]);
  });

  it('reads v1 (f32 with the ak42 header) and an unshared classifier, in v0 and v1', () => {
    const base = stories.model;
    const v1 = parseCheckpoint(toV1(base));
    expect(v1.format).toEqual({ version: 1, weights: 'f32' });
    expect(v1.config).toEqual(base.config);
    expect(f32Data(v1.layers[4]!.w2)).toEqual(f32Data(base.layers[4]!.w2));
    expect(v1.rmsFinal).toEqual(base.rmsFinal);
    const tokens = [BOS, 403, 407, 261, 378];
    const want = logitsOf(base, tokens);
    expect(logitsOf(v1, tokens)).toEqual(want);

    // Unshared: wcls = 2 × embedding doubles the logits (the classifier is linear).
    const doubled = f32Data(base.tokenEmbedding).map((x) => 2 * x);
    const v1Unshared = parseCheckpoint(toV1(base, doubled));
    expect(v1Unshared.config.sharedClassifier).toBe(false);
    expect(v1Unshared.classifier).not.toBe(v1Unshared.tokenEmbedding);
    const v0Bytes = modelBytes('stories260K.bin');
    const v0Unshared = new Uint8Array(v0Bytes.length + doubled.byteLength);
    v0Unshared.set(withField(v0Bytes, 5, -512));
    v0Unshared.set(new Uint8Array(doubled.buffer), v0Bytes.length);
    for (const m of [v1Unshared, parseCheckpoint(v0Unshared)]) {
      expect(m.config.sharedClassifier).toBe(false);
      const got = logitsOf(m, tokens);
      for (let i = 0; i < got.length; i++) expect(got[i]).toBeCloseTo(2 * want[i]!, 4);
    }
  });

  it('refuses wrong magic, unknown versions, truncated files, sizes that do not match, nonsensical configs', () => {
    const v0 = modelBytes('stories260K.bin');
    const v2 = modelBytes('stories3M-q80.bin');
    const v2With = (offset: number, set: (view: DataView) => void) => {
      const copy = v2.slice(0, 4096);
      set(new DataView(copy.buffer));
      return copy;
    };
    // Wrong magic: without "ak42" the file is read as v0, and the error says so.
    const badMagic = v2With(0, (d) => d.setUint8(0, 0x33));
    expect(() => parseCheckpoint(badMagic)).toThrow(RangeError);
    expect(() => parseCheckpoint(badMagic)).toThrow(/does not start with the v1\/v2 magic 0x616b3432 \("ak42"\).*first bytes: 33 34 6b 61/);
    expect(() => parseCheckpoint(v2With(0, (d) => d.setUint32(0, CHECKPOINT_MAGIC, false)))).toThrow(/wrong magic.*big-endian/);
    expect(() => parseCheckpoint(v2With(0, (d) => d.setInt32(4, 3, true)))).toThrow(/unknown checkpoint version 3 after the magic "ak42"; expected 1 \(f32\) or 2 \(Q8_0\)/);
    // Truncated.
    expect(() => parseCheckpoint(v0.subarray(0, 3))).toThrow(/truncated file: 3 bytes is too short/);
    expect(() => parseCheckpoint(v0.subarray(0, 20))).toThrow(/truncated file: 20 bytes, shorter than the 28-byte v0 header/);
    expect(() => parseCheckpoint(v2.subarray(0, 100))).toThrow(/truncated file: 100 bytes, shorter than the 256-byte v2 header/);
    expect(() => parseCheckpoint(v0.subarray(0, v0.length - 4))).toThrow(/truncated file: the v0 config \(dim=64.*\) implies 1056540 bytes, got 1056536 \(4 missing\)/);
    expect(() => parseCheckpoint(v2.subarray(0, 1000))).toThrow(/truncated file: the v2 config .*group_size=64\) implies 3352576 bytes, got 1000/);
    // Longer than the header implies.
    const longer = new Uint8Array(v0.length + 8);
    longer.set(v0);
    expect(() => parseCheckpoint(longer)).toThrow(/size does not match the header: .* implies 1056540 bytes, got 1056548 \(8 extra\)/);
    // A header that disagrees with the file: 6 layers instead of 5.
    expect(() => parseCheckpoint(withField(v0, 2, 6))).toThrow(/truncated file: the v0 config \(dim=64, hidden_dim=172, n_layers=6/);
    // Nonsensical configs.
    expect(() => parseCheckpoint(withField(v0, 0, 0))).toThrow(/nonsensical v0 config .*dim must be a positive integer, got 0/);
    expect(() => parseCheckpoint(withField(v0, 3, 7))).toThrow(/n_heads \(7\) must divide dim \(64\)/);
    expect(() => parseCheckpoint(withField(v0, 4, 3))).toThrow(/n_kv_heads \(3\) must divide n_heads \(8\)/);
    expect(() => parseCheckpoint(withField(v0, 6, -1))).toThrow(/seq_len must be a positive integer, got -1/);
    expect(() => parseCheckpoint(withField(v0, 3, 64))).toThrow(/head dimension dim \/ n_heads = 1 must be even/);
    expect(() => parseCheckpoint(v2With(0, (d) => d.setInt32(8 + 4 * 3, 5, true)))).toThrow(/nonsensical v2 config.*n_heads \(5\) must divide dim \(192\)/);
    expect(() => parseCheckpoint(v2With(0, (d) => d.setInt32(37, 48, true)))).toThrow(/group_size must be a positive integer dividing dim \(192\) and hidden_dim \(512\), got 48/);
    expect(() => parseCheckpoint(v2With(0, (d) => d.setUint8(36, 2)))).toThrow(/shared_classifier byte must be 0 or 1, got 2/);
    expect(() => parseCheckpoint(v2With(0, (d) => d.setInt32(8 + 4 * 5, -4096, true)))).toThrow(/vocab_size must be positive/);
    // Not bytes at all.
    expect(() => parseCheckpoint(new ArrayBuffer(8) as unknown as Uint8Array)).toThrow(TypeError);
    expect(() => parseCheckpoint('model.bin' as unknown as Uint8Array)).toThrow(/expected the checkpoint as a Uint8Array, got "model\.bin"/);
  });

  it('reads from an unaligned offset (copies instead of viewing)', () => {
    const v0 = modelBytes('stories260K.bin');
    const shifted = new Uint8Array(v0.length + 1);
    shifted.set(v0, 1);
    const model = parseCheckpoint(shifted.subarray(1));
    expect(f32Data(model.layers[2]!.wv)).toEqual(f32Data(stories.model.layers[2]!.wv));
  });
});

// ---------------------------------------------------------------------------------------------
// The model: reference numbers, generation, KIVI-2

describe('LlamaRunner on stories260K (f32 cache)', () => {
  it(`protocol A: ${REFERENCE.stories260K.A.tokens} tokens, mean NLL ${REFERENCE.stories260K.A.meanNll}`, () => {
    const runner = new LlamaRunner(stories.model, kivi);
    const t0 = performance.now();
    const r = evaluate(runner, stories.tokenizer, text, 'A');
    const ms = performance.now() - t0;
    console.log(`stories260K A (f32 cache): ${r.tokens} tokens, mean NLL ${r.meanNll.toFixed(6)}, ${(ms / 1000).toFixed(2)} s, ${(ms / (r.tokens + r.sequences)).toFixed(3)} ms/token`);
    expect(r.sequences).toBe(64);
    expect(r.tokens).toBe(REFERENCE.stories260K.A.tokens);
    expect(Math.abs(r.meanNll - REFERENCE.stories260K.A.meanNll)).toBeLessThan(REFERENCE_TOLERANCE);
    expect(r.perplexity).toBeCloseTo(Math.exp(r.meanNll), 12);
    runner.dispose();
  });

  it(`protocol B: ${REFERENCE.stories260K.B.tokens} tokens, mean NLL ${REFERENCE.stories260K.B.meanNll}`, () => {
    const runner = new LlamaRunner(stories.model, kivi);
    const progress: [number, number][] = [];
    const t0 = performance.now();
    const r = evaluate(runner, stories.tokenizer, text, 'B', { onProgress: (done, total) => progress.push([done, total]) });
    const ms = performance.now() - t0;
    console.log(`stories260K B (f32 cache): ${r.tokens} tokens, mean NLL ${r.meanNll.toFixed(6)}, ${(ms / 1000).toFixed(2)} s, ${(ms / (r.tokens + r.sequences)).toFixed(3)} ms/token`);
    expect(r.sequences).toBe(8);
    expect(r.tokens).toBe(REFERENCE.stories260K.B.tokens);
    expect(Math.abs(r.meanNll - REFERENCE.stories260K.B.meanNll)).toBeLessThan(REFERENCE_TOLERANCE);
    expect(progress.length).toBe(8);
    expect(progress.at(-1)).toEqual([r.tokens, r.tokens]);
    expect(r.perSequence.reduce((s, x) => s + x.tokens, 0)).toBe(r.tokens);
    runner.dispose();
  });

  it('packs protocol B windows as the README says', () => {
    const seqLen = stories.model.config.seqLen;
    const windows = protocolSequences(stories.tokenizer, text, 'B', seqLen);
    const paragraphs = splitParagraphs(text);
    let next = 0;
    for (const w of windows) {
      expect(w.tokens[0]).toBe(BOS);
      expect(w.tokens.length).toBeLessThanOrEqual(seqLen);
      const joined = paragraphs.slice(next, next + w.paragraphs).join('\n');
      expect(w.tokens.slice(1)).toEqual(stories.tokenizer.encode(joined));
      // The next paragraph would not have fit.
      const more = `${joined}\n${paragraphs[next + w.paragraphs]!}`;
      expect(1 + stories.tokenizer.encode(more).length).toBeGreaterThan(seqLen);
      next += w.paragraphs;
    }
  });

  it('generates the reference greedy story from BOS', () => {
    const runner = new LlamaRunner(stories.model, kivi);
    const pieces: string[] = [];
    const g = generate(runner, stories.tokenizer, { steps: 64, temperature: 0, onToken: (piece) => pieces.push(piece) });
    expect(g.text.startsWith('Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball')).toBe(true);
    expect(pieces.join('')).toBe(g.text);
    expect(g.tokens.length).toBe(65);
    expect(g.stop).toBe('steps');
    expect(runner.position).toBe(64); // BOS and 63 generated tokens were fed; the last one sampled was not
    // With a prompt, the prompt is fed first and printed, as run.c.
    const p = generate(runner, stories.tokenizer, { prompt: 'Once upon a time, there was a little girl named Lily.', steps: 40, temperature: 0 });
    expect(p.text.startsWith('Once upon a time, there was a little girl named Lily. She loved to play outside')).toBe(true);
    // Sampling is deterministic for a seed.
    const a = generate(runner, stories.tokenizer, { steps: 50, temperature: 1, seed: 42 });
    const b = generate(runner, stories.tokenizer, { steps: 50, temperature: 1, seed: 42 });
    expect(a.tokens).toEqual(b.tokens);
    expect(a.tokens.every((t) => Number.isInteger(t) && t >= 0 && t < 512)).toBe(true);
    runner.dispose();
  });

  it('KIVI-2 (2 bits, G = 32, R = 128) on protocol B: finite, a little above f32', () => {
    const runner = new LlamaRunner(stories.model, kivi, { bits: 2, groupSize: 32, residual: 128 });
    const t0 = performance.now();
    const r = evaluate(runner, stories.tokenizer, text, 'B');
    const ms = performance.now() - t0;
    const stats = runner.cache.stats(0);
    console.log(`stories260K B (KIVI-2 G=32 R=128): ${r.tokens} tokens, mean NLL ${r.meanNll.toFixed(6)} (f32 ${REFERENCE.stories260K.B.meanNll}), ${(ms / 1000).toFixed(2)} s`);
    expect(r.tokens).toBe(REFERENCE.stories260K.B.tokens);
    expect(Number.isFinite(r.meanNll)).toBe(true);
    expect(Math.abs(r.meanNll - KIVI2_STORIES260K_B.meanNll)).toBeLessThan(KIVI2_STORIES260K_B.tolerance);
    // The last window really went through 2-bit keys and values.
    expect(stats.quantizedKeys).toBeGreaterThan(0);
    expect(stats.quantizedValues).toBeGreaterThan(0);
    runner.dispose();
  });
});

describe('LlamaRunner on aidreams260K (head dim 16, seq_len 128)', () => {
  // This model leans little on attention: with every attention output zeroed its mean NLL moves by
  // only 1.6e-3, so the numbers are pinned (measured here; the builds agree to about 1e-6). That a
  // value group spans the whole head when D < G is checked against the reference in kernels.test.ts.
  const MEASURED = [5.430182, 5.430642, 5.42551];
  it('runs with an f32 and a KIVI-2 cache whose groups span the whole head', () => {
    const ai = loadModel('aidreams260K.bin', 'aidreams_tok512.bin');
    const results = [{ bits: 32 as const }, { bits: 2 as const, groupSize: 32, residual: 32 }, { bits: 2 as const, groupSize: 16, residual: 32 }].map((options) => {
      const runner = new LlamaRunner(ai.model, kivi, options);
      const r = evaluate(runner, ai.tokenizer, text, 'A', { paragraphs: 16 });
      if (options.bits === 2) expect(runner.cache.stats().quantizedKeys).toBeGreaterThan(0);
      runner.dispose();
      return r;
    });
    console.log(`aidreams260K A (16 paragraphs of TinyStories): mean NLL f32 ${results[0]!.meanNll.toFixed(6)}, KIVI-2 G=32 R=32 ${results[1]!.meanNll.toFixed(6)}, G=16 R=32 ${results[2]!.meanNll.toFixed(6)}`);
    results.forEach((r, i) => {
      expect(r.tokens).toBe(results[0]!.tokens);
      expect(Math.abs(r.meanNll - MEASURED[i]!), `configuration ${i}`).toBeLessThan(2e-4);
    });
  });
});

describe('LlamaRunner lifecycle and errors', () => {
  it('counts positions, resets to a new empty cache, and refuses use after dispose()', () => {
    const runner = new LlamaRunner(stories.model, kivi, { bits: 4 });
    expect(runner.cacheOptions).toMatchObject({ layers: 5, kvHeads: 4, headDim: 8, queryHeads: 8, bits: 4, maxTokens: 512 });
    const f32 = runner.forward(BOS);
    expect(f32).toBeInstanceOf(Float32Array);
    expect(f32.length).toBe(512);
    runner.advance(403);
    expect(runner.position).toBe(2);
    expect(runner.cache.tokens(4)).toBe(2);
    const first = runner.cache;
    runner.reset();
    expect(runner.position).toBe(0);
    expect(first.isDisposed).toBe(true);
    expect(runner.cache.tokens(0)).toBe(0);
    // Same logits after a reset; a Float64Array out gets the unrounded values.
    const f64 = runner.forward(BOS, new Float64Array(512));
    for (let i = 0; i < 512; i++) expect(Math.fround(f64[i]!)).toBe(f32[i]);
    runner.dispose();
    runner.dispose();
    expect(() => runner.forward(BOS)).toThrow(/disposed/);
    expect(() => runner.reset()).toThrow(TypeError);
  });

  it('refuses bad tokens, outputs and cache shapes, and positions past seq_len', () => {
    expect(() => new LlamaRunner(stories.model, kivi, { headDim: 16 })).toThrow(/cacheOptions.headDim is the model's \(8\), got 16/);
    expect(() => new LlamaRunner(stories.model, kivi, { bits: 3 as 2 })).toThrow(/bits must be one of/);
    expect(() => new LlamaRunner(stories.model, {} as Kivi)).toThrow(TypeError);
    const runner = new LlamaRunner(stories.model, kivi);
    expect(() => runner.forward(512)).toThrow(/token must be an integer from 0 to 511, got 512/);
    expect(() => runner.forward(1.5)).toThrow(RangeError);
    expect(() => runner.forward(BOS, new Float32Array(10))).toThrow(/out must have length vocabSize = 512/);
    expect(runner.position).toBe(0);
    runner.dispose();
    const ai = loadModel('aidreams260K.bin', 'aidreams_tok512.bin');
    const short = new LlamaRunner(ai.model, kivi);
    for (let i = 0; i < 128; i++) short.advance(BOS);
    expect(() => short.forward(BOS)).toThrow(/context is seq_len = 128 tokens/);
    short.dispose();
    const other = new LlamaRunner(ai.model, kivi);
    expect(() => evaluate(other, Tokenizer.fromBytes(modelBytes('tok4096.bin'), 4096), text, 'A')).toThrow(/tokenizer has 4096 tokens, the model 512/);
    expect(() => evaluate(other, ai.tokenizer, text, 'C' as 'A')).toThrow(/protocol must be 'A' or 'B'/);
    other.dispose();
  });
});
