// Text generation as run.c's generate(): [BOS] + encode(prompt), fed one token at a time; past the
// prompt the next token is sampled (argmax at temperature 0; otherwise softmax(logits / T) with
// run.c's top-p rule and its xorshift* generator); stops after `steps` positions or when the model
// produces BOS. Same algorithm as run.c, in float64, so sampled text can differ from run.c where
// float32 rounding changes a choice.

import { describe } from '../options';
import type { LlamaRunner } from './model';
import { BOS, type Tokenizer } from './tokenizer';

export interface GenerateOptions {
  /** Text to continue (default ""). */
  prompt?: string;
  /** Positions to run, prompt included, as run.c's -n (default 256; 0 or more than seq_len means seq_len). */
  steps?: number;
  /** 0 is greedy (argmax). Default 1, as run.c. */
  temperature?: number;
  /** Nucleus sampling threshold; <= 0 or >= 1 samples from the whole distribution. Default 0.9, as run.c. */
  topp?: number;
  /** Seed of the xorshift* generator, an integer; 0 or none takes one from the clock, as run.c. */
  seed?: number;
  /** Called for every token after BOS (prompt tokens included, as run.c prints them) with the text
   *  it completes (byte tokens of one character give "" until the character is whole) and its id. */
  onToken?: (text: string, token: number) => void;
}

export interface GenerateResult {
  /** Every token fed or produced, BOS first. */
  tokens: number[];
  /** Tokens of [BOS] + encode(prompt). */
  promptTokens: number;
  /** The text after BOS: the prompt's tokens and the generated ones, decoded as run.c prints them. */
  text: string;
  /** Why it stopped: the model produced BOS, or the steps ran out. */
  stop: 'bos' | 'steps';
}

/** Resets the runner and generates (see the top of this file). */
export function generate(runner: LlamaRunner, tokenizer: Tokenizer, options: GenerateOptions = {}): GenerateResult {
  const where = 'generate';
  if (typeof options !== 'object' || options === null) throw new TypeError(`${where}: options must be an object, got ${describe(options)}`);
  const V = runner.config.vocabSize;
  if (tokenizer.vocabSize !== V) throw new RangeError(`${where}: the tokenizer has ${tokenizer.vocabSize} tokens, the model ${V}`);
  const prompt = options.prompt ?? '';
  if (typeof prompt !== 'string') throw new TypeError(`${where}: prompt must be a string, got ${describe(prompt)}`);
  const seqLen = runner.config.seqLen;
  let steps = options.steps ?? 256;
  if (!Number.isInteger(steps) || steps < 0) throw new RangeError(`${where}: steps must be an integer >= 0, got ${describe(steps)}`);
  if (steps === 0 || steps > seqLen) steps = seqLen;
  const temperature = options.temperature ?? 1;
  if (typeof temperature !== 'number' || !(temperature >= 0) || !Number.isFinite(temperature)) {
    throw new RangeError(`${where}: temperature must be a finite number >= 0, got ${describe(temperature)}`);
  }
  const topp = options.topp ?? 0.9;
  if (typeof topp !== 'number' || Number.isNaN(topp)) throw new RangeError(`${where}: topp must be a number, got ${describe(topp)}`);
  const seed = options.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`${where}: seed must be an integer >= 0, got ${describe(seed)}`);
  const rng = new XorShiftStar(seed === 0 ? (Date.now() % 0xffffffff) + 1 : seed);

  const prompted = tokenizer.encode(prompt, { bos: true });
  const tokens = [prompted[0]!];
  const decoder = new TextDecoder('utf-8');
  let text = '';
  const logits = new Float64Array(V);
  runner.reset();
  let token = prompted[0]!;
  let stop: GenerateResult['stop'] = 'steps';
  for (let pos = 0; pos < steps; pos++) {
    let next: number;
    if (pos < prompted.length - 1) {
      next = prompted[pos + 1]!;
      runner.advance(token);
    } else {
      runner.forward(token, logits);
      next = sample(logits, temperature, topp, rng);
    }
    if (next === BOS) {
      stop = 'bos';
      break;
    }
    const piece = decoder.decode(tokenizer.decodeBytes(token, next), { stream: true });
    text += piece;
    tokens.push(next);
    options.onToken?.(piece, next);
    token = next;
  }
  text += decoder.decode();
  return { tokens, promptTokens: prompted.length, text, stop };
}

/** run.c's sample(): argmax at temperature 0, else softmax(logits / T) and top-p or plain sampling. */
export function sample(logits: Float64Array, temperature: number, topp: number, rng: XorShiftStar): number {
  const n = logits.length;
  if (temperature === 0) {
    let best = 0;
    for (let i = 1; i < n; i++) if (logits[i]! > logits[best]!) best = i;
    return best;
  }
  const probs = new Float64Array(n);
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[i]! / temperature);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    probs[i] = Math.exp(logits[i]! / temperature - max);
    sum += probs[i]!;
  }
  for (let i = 0; i < n; i++) probs[i] = probs[i]! / sum;
  const coin = rng.nextFloat();
  if (topp <= 0 || topp >= 1) {
    let cdf = 0;
    for (let i = 0; i < n; i++) {
      cdf += probs[i]!;
      if (coin < cdf) return i;
    }
    return n - 1;
  }
  // Top-p: candidates with p >= (1 - topp) / (n - 1) (they cannot all be outside the nucleus),
  // by probability descending; the nucleus ends at the first that takes the sum past topp.
  const cutoff = (1 - topp) / (n - 1);
  const candidates: number[] = [];
  for (let i = 0; i < n; i++) if (probs[i]! >= cutoff) candidates.push(i);
  candidates.sort((a, b) => probs[b]! - probs[a]! || a - b);
  let cumulative = 0;
  let last = candidates.length - 1;
  for (let i = 0; i < candidates.length; i++) {
    cumulative += probs[candidates[i]!]!;
    if (cumulative > topp) {
      last = i;
      break;
    }
  }
  const r = coin * cumulative;
  let cdf = 0;
  for (let i = 0; i <= last; i++) {
    cdf += probs[candidates[i]!]!;
    if (r < cdf) return candidates[i]!;
  }
  return candidates[last]!;
}

const MASK64 = (1n << 64n) - 1n;

/** run.c's random_u32 / random_f32: xorshift* on a 64-bit state. */
export class XorShiftStar {
  private state: bigint;

  constructor(seed: number) {
    this.state = BigInt(seed) & MASK64;
  }

  nextU32(): number {
    let s = this.state;
    s ^= s >> 12n;
    s ^= (s << 25n) & MASK64;
    s ^= s >> 27n;
    this.state = s;
    return Number(((s * 0x2545f4914f6cdd1dn) & MASK64) >> 32n);
  }

  /** In [0, 1), 24 bits. */
  nextFloat(): number {
    return (this.nextU32() >>> 8) / 16777216;
  }
}
