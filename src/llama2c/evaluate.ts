// Perplexity of a model with a given cache on a text, by the two protocols of
// shared/models/README.md. Every sequence starts with a fresh, empty cache and is fed one token at
// a time; the negative log-likelihood of each predicted token comes from a float64 log-softmax of
// the logits.
//
//   A  the first 64 non-empty paragraphs (split on blank lines, trimmed), each scored on its own as
//      [BOS] + encode(paragraph), truncated to seq_len tokens.
//   B  8 packed windows: a window joins consecutive paragraphs with "\n" while
//      1 + len(encode(joined)) <= seq_len, the next window starts at the next paragraph; scored as
//      [BOS] + encode(joined). A paragraph that alone exceeds that is its own window, truncated to
//      seq_len tokens (BOS included), as in A.

import { describe } from '../options';
import type { LlamaRunner } from './model';
import { BOS, type Tokenizer } from './tokenizer';

export type Protocol = 'A' | 'B';

export interface ProtocolOptions {
  /** Protocol A: how many paragraphs (default 64). */
  paragraphs?: number;
  /** Protocol B: how many windows (default 8). */
  windows?: number;
}

export interface EvaluateOptions extends ProtocolOptions {
  /** Called after each sequence with the tokens predicted so far and the total the protocol predicts. */
  onProgress?: (done: number, total: number) => void;
}

/** One sequence of a protocol: its token ids (BOS first) and where it came from. */
export interface ProtocolSequence {
  tokens: number[];
  /** Paragraphs it holds (1 in protocol A). */
  paragraphs: number;
  /** Cut to seq_len tokens. */
  truncated: boolean;
}

export interface SequenceScore {
  /** Tokens predicted (sequence length − 1). */
  tokens: number;
  /** Sum of their negative log-likelihoods (nats). */
  nll: number;
  paragraphs: number;
  truncated: boolean;
}

export interface EvaluationResult {
  protocol: Protocol;
  /** Tokens predicted over all sequences. */
  tokens: number;
  /** Mean negative log-likelihood per predicted token (nats). */
  meanNll: number;
  /** exp(meanNll). */
  perplexity: number;
  /** Sequences (paragraphs or windows) scored. */
  sequences: number;
  /** Each sequence's tokens and NLL sum, in order. */
  perSequence: SequenceScore[];
}

/** Paragraphs of a text: split on blank (empty or whitespace-only) lines, trimmed, empty ones dropped. */
export function splitParagraphs(text: string): string[] {
  if (typeof text !== 'string') throw new TypeError(`splitParagraphs: text must be a string, got ${describe(text)}`);
  return text
    .split(/\n\s*\n/)
    .map((p) => p.trim())
    .filter((p) => p.length > 0);
}

/** The token sequences a protocol scores (see the top of this file). */
export function protocolSequences(tokenizer: Tokenizer, text: string, protocol: Protocol, seqLen: number, options: ProtocolOptions = {}): ProtocolSequence[] {
  const where = 'protocolSequences';
  if (protocol !== 'A' && protocol !== 'B') throw new RangeError(`${where}: protocol must be 'A' or 'B', got ${describe(protocol)}`);
  if (!Number.isInteger(seqLen) || seqLen < 2) throw new RangeError(`${where}: seqLen must be an integer >= 2, got ${describe(seqLen)}`);
  const paragraphs = splitParagraphs(text);
  const withBos = (tokens: number[]): { tokens: number[]; truncated: boolean } => {
    const all = [BOS, ...tokens];
    return all.length > seqLen ? { tokens: all.slice(0, seqLen), truncated: true } : { tokens: all, truncated: false };
  };

  if (protocol === 'A') {
    const count = positiveInteger(where, 'paragraphs', options.paragraphs ?? 64);
    return paragraphs.slice(0, count).map((p) => ({ ...withBos(tokenizer.encode(p)), paragraphs: 1 }));
  }

  const windows = positiveInteger(where, 'windows', options.windows ?? 8);
  const out: ProtocolSequence[] = [];
  let i = 0;
  while (out.length < windows && i < paragraphs.length) {
    let joined = paragraphs[i]!;
    let tokens = tokenizer.encode(joined);
    let j = i + 1;
    if (1 + tokens.length <= seqLen) {
      while (j < paragraphs.length) {
        const candidate = `${joined}\n${paragraphs[j]!}`;
        const encoded = tokenizer.encode(candidate);
        if (1 + encoded.length > seqLen) break;
        joined = candidate;
        tokens = encoded;
        j++;
      }
    }
    out.push({ ...withBos(tokens), paragraphs: j - i });
    i = j;
  }
  return out;
}

/** The token sequences (BOS first) of protocol B's packed windows. */
export function windowsOf(tokenizer: Tokenizer, text: string, seqLen: number, windows = 8): number[][] {
  return protocolSequences(tokenizer, text, 'B', seqLen, { windows }).map((s) => s.tokens);
}

/** Feeds `tokens` one at a time into a fresh cache and sums the NLL of tokens[1..]. The last token
 *  predicts nothing, so it is not fed. */
export function scoreSequence(runner: LlamaRunner, tokens: ArrayLike<number>): { tokens: number; nll: number } {
  const V = runner.config.vocabSize;
  if (tokens.length > runner.config.seqLen) {
    throw new RangeError(`scoreSequence: at most seq_len = ${runner.config.seqLen} tokens, got ${tokens.length}`);
  }
  for (let t = 0; t < tokens.length; t++) {
    const id = tokens[t]!;
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new RangeError(`scoreSequence: token ${t} must be an integer from 0 to ${V - 1}, got ${describe(id)}`);
  }
  runner.reset();
  const logits = new Float64Array(V);
  let nll = 0;
  for (let t = 0; t + 1 < tokens.length; t++) {
    runner.forward(tokens[t]!, logits);
    nll -= logSoftmaxAt(logits, tokens[t + 1]!);
  }
  return { tokens: Math.max(0, tokens.length - 1), nll };
}

/** log softmax(logits)[index], in float64. */
export function logSoftmaxAt(logits: ArrayLike<number>, index: number): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return logits[index]! - max - Math.log(sum);
}

/** Mean NLL and perplexity of `text` by protocol A or B (shared/models/README.md). Resets the runner. */
export function evaluate(runner: LlamaRunner, tokenizer: Tokenizer, text: string, protocol: Protocol, options: EvaluateOptions = {}): EvaluationResult {
  if (typeof options !== 'object' || options === null) throw new TypeError(`evaluate: options must be an object, got ${describe(options)}`);
  if (tokenizer.vocabSize !== runner.config.vocabSize) {
    throw new RangeError(`evaluate: the tokenizer has ${tokenizer.vocabSize} tokens, the model ${runner.config.vocabSize}`);
  }
  const sequences = protocolSequences(tokenizer, text, protocol, runner.config.seqLen, options);
  const total = sequences.reduce((sum, s) => sum + Math.max(0, s.tokens.length - 1), 0);
  const perSequence: SequenceScore[] = [];
  let tokens = 0;
  let nll = 0;
  for (const s of sequences) {
    const r = scoreSequence(runner, s.tokens);
    perSequence.push({ tokens: r.tokens, nll: r.nll, paragraphs: s.paragraphs, truncated: s.truncated });
    tokens += r.tokens;
    nll += r.nll;
    options.onProgress?.(tokens, total);
  }
  const meanNll = tokens > 0 ? nll / tokens : NaN;
  return { protocol, tokens, meanNll, perplexity: Math.exp(meanNll), sequences: perSequence.length, perSequence };
}

function positiveInteger(where: string, name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) throw new RangeError(`${where}: ${name} must be a positive integer, got ${describe(value)}`);
  return value;
}
