// The llama2.c tokenizer (tokenizer.bin as written by llama2.c's tokenizer.py), encoding and decoding
// exactly as run.c's encode() and decode().
//
// File layout, little-endian:
//   | int32 max_token_length | vocab_size × ( f32 score | int32 length | length bytes ) |
// Ids 0 <unk>, 1 BOS ("\n<s>\n"), 2 EOS ("\n</s>\n"), 3..258 the byte-fallback pieces "<0x00>".."<0xFF>";
// sentencepiece's "▁" is stored as a plain space.
//
// Pieces are compared as bytes: internally each piece is a "binary string" (one char per byte), so
// concatenating two pieces is concatenating their bytes, as run.c's sprintf("%s%s").

import { describe } from '../options';

export const UNK = 0;
export const BOS = 1;
export const EOS = 2;
/** Byte b falls back to token b + BYTE_FALLBACK_OFFSET (run.c: `(unsigned char)c + 3`). */
export const BYTE_FALLBACK_OFFSET = 3;

export interface EncodeOptions {
  /** Prepend BOS (1). Default false. */
  bos?: boolean;
  /** Append EOS (2). Default false. */
  eos?: boolean;
}

const WHERE = 'Tokenizer.fromBytes';
const utf8 = new TextEncoder();

function binary(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]!);
  return s;
}

export class Tokenizer {
  readonly vocabSize: number;
  readonly maxTokenLength: number;
  private readonly pieces: string[]; // binary strings
  private readonly rawPieces: Uint8Array[];
  private readonly scores: Float32Array;
  private readonly lookup: Map<string, number>;
  /** decode(): the bytes a token stands for, with and without the leading space stripped after BOS. */
  private readonly decoded: Uint8Array[];
  private readonly decodedAfterBos: Uint8Array[];
  private readonly textDecoder = new TextDecoder('utf-8');

  /** `special`: ids that text never encodes to and that decode to nothing (SentencePiece's control
   *  and unknown tokens, as a GGUF vocabulary marks them); a tokenizer.bin has none. */
  private constructor(maxTokenLength: number, pieces: Uint8Array[], scores: Float32Array, special: ReadonlySet<number> = new Set()) {
    this.vocabSize = pieces.length;
    this.maxTokenLength = maxTokenLength;
    this.rawPieces = pieces;
    this.pieces = pieces.map(binary);
    this.scores = scores;
    this.lookup = new Map();
    // run.c finds pieces by bsearch over the sorted vocabulary; with duplicate pieces it may find
    // any of them. Here the lowest id wins (the shipped tokenizers have no duplicates).
    this.pieces.forEach((p, id) => {
      if (!this.lookup.has(p) && !special.has(id)) this.lookup.set(p, id);
    });
    this.decoded = pieces.map((raw, id) => {
      if (special.has(id)) return new Uint8Array(0);
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(this.pieces[id]!);
      return m ? Uint8Array.of(parseInt(m[1]!, 16)) : raw;
    });
    this.decodedAfterBos = this.decoded.map((d) => (d[0] === 0x20 ? d.subarray(1) : d));
  }

  /** Parses a tokenizer.bin for a model of `vocabSize` tokens; throws a RangeError/TypeError on a
   *  malformed file (truncated, negative or too long pieces, bytes left over after vocabSize entries). */
  static fromBytes(bytes: Uint8Array, vocabSize: number): Tokenizer {
    if (!(bytes instanceof Uint8Array)) throw new TypeError(`${WHERE}: expected the tokenizer file as a Uint8Array, got ${describe(bytes)}`);
    if (typeof vocabSize !== 'number') throw new TypeError(`${WHERE}: vocabSize must be a number, got ${describe(vocabSize)}`);
    if (!Number.isInteger(vocabSize) || vocabSize < 1) throw new RangeError(`${WHERE}: vocabSize must be a positive integer, got ${vocabSize}`);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (bytes.length < 4) throw new RangeError(`${WHERE}: truncated file: ${bytes.length} bytes, expected at least the 4-byte max_token_length`);
    const maxTokenLength = view.getInt32(0, true);
    if (maxTokenLength < 1) throw new RangeError(`${WHERE}: max_token_length must be positive, got ${maxTokenLength}`);
    const pieces: Uint8Array[] = [];
    const scores = new Float32Array(vocabSize);
    let offset = 4;
    for (let id = 0; id < vocabSize; id++) {
      if (offset + 8 > bytes.length) {
        throw new RangeError(`${WHERE}: truncated file: it holds ${id} of the ${vocabSize} tokens (entry ${id} needs 8 bytes of score and length at offset ${offset}, the file has ${bytes.length} bytes)`);
      }
      const score = view.getFloat32(offset, true);
      const length = view.getInt32(offset + 4, true);
      offset += 8;
      if (Number.isNaN(score)) throw new RangeError(`${WHERE}: the score of token ${id} is NaN`);
      if (length < 0 || length > maxTokenLength) {
        throw new RangeError(`${WHERE}: token ${id} has length ${length}, expected 0 to max_token_length (${maxTokenLength})`);
      }
      if (offset + length > bytes.length) {
        throw new RangeError(`${WHERE}: truncated file: token ${id} needs ${length} bytes at offset ${offset}, the file has ${bytes.length} bytes`);
      }
      scores[id] = score;
      pieces.push(bytes.slice(offset, offset + length));
      offset += length;
    }
    if (offset !== bytes.length) {
      throw new RangeError(`${WHERE}: ${bytes.length - offset} bytes left over after the ${vocabSize} tokens the model expects: the file holds ${countEntries(view, offset)} more tokens (a tokenizer for another vocabulary?)`);
    }
    return new Tokenizer(maxTokenLength, pieces, scores);
  }

  /**
   * A tokenizer from pieces and scores (e.g. a GGUF file's vocabulary, with SentencePiece's "▁"
   * already turned into spaces), encoding and decoding as fromBytes' tokenizers do; `special` ids
   * (control and unknown tokens) are never produced by encode() and decode to nothing.
   */
  static fromPieces(pieces: readonly Uint8Array[], scores: Float32Array, special: ReadonlySet<number> = new Set()): Tokenizer {
    const where = 'Tokenizer.fromPieces';
    if (!Array.isArray(pieces) || !pieces.every((p) => p instanceof Uint8Array)) throw new TypeError(`${where}: pieces must be an array of Uint8Array, got ${describe(pieces)}`);
    if (!(scores instanceof Float32Array)) throw new TypeError(`${where}: scores must be a Float32Array, got ${describe(scores)}`);
    if (pieces.length < 1 || scores.length !== pieces.length) throw new RangeError(`${where}: expected one score per piece and at least one piece, got ${pieces.length} pieces and ${scores.length} scores`);
    const nan = scores.findIndex((s) => Number.isNaN(s));
    if (nan >= 0) throw new RangeError(`${where}: the score of token ${nan} is NaN`);
    let maxTokenLength = 1;
    for (const p of pieces) maxTokenLength = Math.max(maxTokenLength, p.length);
    return new Tokenizer(maxTokenLength, pieces.slice(), scores.slice(), special);
  }

  /** The piece's bytes as stored (a space for sentencepiece's "▁"; "<0x0A>" for byte tokens). */
  piece(id: number): Uint8Array {
    return this.rawPieces[this.checkId('piece', id)]!;
  }

  score(id: number): number {
    return this.scores[this.checkId('score', id)]!;
  }

  /** The id of the piece with exactly these UTF-8 bytes, or -1 (run.c's str_lookup). */
  idOf(piece: string): number {
    return this.lookup.get(binary(utf8.encode(piece))) ?? -1;
  }

  /**
   * Token ids of `text` as run.c's encode(): optional BOS; if the text is non-empty the piece " "
   * (the dummy prefix); each UTF-8 character (up to 4 bytes) as its piece, or as byte tokens
   * (byte + 3) if there is none; then, repeatedly, the adjacent pair whose concatenation is a piece
   * with the highest score (the leftmost on ties; only scores > -1e10, as run.c) is merged; optional EOS.
   *
   * The merge loop is run.c's, made O(n log n) with a heap of candidate pairs instead of a rescan of
   * all pairs per merge; it picks the same pair every step. Differences from C, where C has none:
   * a NUL character (which ends a C string) is encoded as the byte token <0x00>; a vocabulary
   * without the piece " " gets the byte token for a space as its dummy prefix (run.c would write -1).
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') throw new TypeError(`Tokenizer.encode: text must be a string, got ${describe(text)}`);
    if (typeof options !== 'object' || options === null) throw new TypeError(`Tokenizer.encode: options must be an object, got ${describe(options)}`);
    const bytes = utf8.encode(text);
    const ids: number[] = [];
    if (options.bos) ids.push(BOS);
    if (bytes.length > 0) ids.push(this.lookup.get(' ') ?? this.byteToken(0x20));

    // UTF-8 characters, as run.c: a buffer restarts at every non-continuation byte and is looked up
    // once the next byte is not a continuation byte or it holds 4 bytes.
    let start = 0;
    let length = 0;
    for (let i = 0; i < bytes.length; i++) {
      if ((bytes[i]! & 0xc0) !== 0x80) {
        start = i;
        length = 0;
      }
      length++;
      const next = i + 1 < bytes.length ? bytes[i + 1]! : 0;
      if ((next & 0xc0) === 0x80 && length < 4) continue;
      const id = this.lookup.get(binary(bytes.subarray(start, start + length)));
      if (id !== undefined) {
        ids.push(id);
      } else {
        for (let j = start; j < start + length; j++) ids.push(this.byteToken(bytes[j]!));
      }
      length = 0;
      start = i + 1;
    }

    const merged = this.merge(ids);
    if (options.eos) merged.push(EOS);
    return merged;
  }

  /** The text of `token` following `prev`, as run.c's decode(): after BOS a leading space is
   *  stripped; a byte token "<0xNN>" stands for the raw byte NN. Bytes that are not whole UTF-8
   *  characters become U+FFFD: use decodeBytes or decodeAll to join byte tokens correctly. */
  decode(prev: number, token: number): string {
    return this.textDecoder.decode(this.decodeBytes(prev, token));
  }

  /** The bytes run.c's decode() returns for `token` following `prev`. */
  decodeBytes(prev: number, token: number): Uint8Array {
    this.checkId('decode', token);
    return (prev === BOS ? this.decodedAfterBos : this.decoded)[token]!;
  }

  /**
   * The text of a token sequence: each token's decode() bytes given the token before it (`prev`
   * for the first, default BOS, so the dummy-prefix space is dropped as sentencepiece does), joined
   * and then read as UTF-8, so characters spread over byte tokens come out whole. BOS and EOS
   * produce no text.
   */
  decodeAll(tokens: ArrayLike<number>, prev: number = BOS): string {
    const parts: Uint8Array[] = [];
    let total = 0;
    for (let i = 0; i < tokens.length; i++) {
      const token = tokens[i]!;
      if (token !== BOS && token !== EOS) {
        const b = this.decodeBytes(prev, token);
        parts.push(b);
        total += b.length;
      } else {
        this.checkId('decodeAll', token);
      }
      prev = token;
    }
    const out = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return this.textDecoder.decode(out);
  }

  private byteToken(byte: number): number {
    const id = byte + BYTE_FALLBACK_OFFSET;
    if (id >= this.vocabSize) throw new RangeError(`Tokenizer.encode: byte fallback for 0x${byte.toString(16)} needs token ${id}, but the vocabulary has ${this.vocabSize} tokens`);
    return id;
  }

  private checkId(where: string, id: number): number {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new RangeError(`Tokenizer.${where}: token must be an integer from 0 to ${this.vocabSize - 1}, got ${describe(id)}`);
    }
    return id;
  }

  /** run.c's merge loop. Tokens form a linked list; every adjacent pair whose concatenation is a
   *  piece is a heap entry (score desc, then position asc); entries of pairs that changed are
   *  skipped when popped. Positions are the left token's original index, which orders pairs as
   *  run.c's index i does, because a merge keeps the left token's slot. */
  private merge(ids: number[]): number[] {
    const n = ids.length;
    if (n < 2) return ids;
    const tok = Int32Array.from(ids);
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap = new PairHeap();
    const consider = (left: number) => {
      const right = next[left]!;
      if (right < 0) return;
      const id = this.lookup.get(this.pieces[tok[left]!]! + this.pieces[tok[right]!]!);
      if (id === undefined) return;
      const score = this.scores[id]!;
      if (!(score > -1e10)) return; // run.c starts from best_score = -1e10 and needs strictly more
      heap.push(score, left, tok[left]!, tok[right]!, id);
    };
    for (let i = 0; i + 1 < n; i++) consider(i);
    while (heap.size > 0) {
      const e = heap.pop();
      const left = e.position;
      const right = next[left]!;
      // Stale unless the pair at `left` still holds the same two tokens.
      if (right < 0 || tok[left] !== e.left || tok[right] !== e.right) continue;
      tok[left] = e.merged;
      const after = next[right]!;
      next[left] = after;
      if (after >= 0) prev[after] = left;
      tok[right] = -1;
      if (prev[left]! >= 0) consider(prev[left]!);
      consider(left);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]!) out.push(tok[i]!);
    return out;
  }
}

interface PairEntry {
  score: number;
  position: number;
  left: number;
  right: number;
  merged: number;
}

/** Binary max-heap of merge candidates: higher score first, then lower position. */
class PairHeap {
  private readonly items: PairEntry[] = [];

  get size(): number {
    return this.items.length;
  }

  push(score: number, position: number, left: number, right: number, merged: number): void {
    const items = this.items;
    items.push({ score, position, left, right, merged });
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(items[i]!, items[parent]!)) break;
      [items[i], items[parent]] = [items[parent]!, items[i]!];
      i = parent;
    }
  }

  pop(): PairEntry {
    const items = this.items;
    const top = items[0]!;
    const last = items.pop()!;
    if (items.length > 0) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let best = i;
        if (l < items.length && before(items[l]!, items[best]!)) best = l;
        if (r < items.length && before(items[r]!, items[best]!)) best = r;
        if (best === i) break;
        [items[i], items[best]] = [items[best]!, items[i]!];
        i = best;
      }
    }
    return top;
  }
}

function before(a: PairEntry, b: PairEntry): boolean {
  return a.score > b.score || (a.score === b.score && a.position < b.position);
}

/** How many whole entries follow `offset` (for the error message about leftover bytes). */
function countEntries(view: DataView, offset: number): string {
  let count = 0;
  while (offset + 8 <= view.byteLength) {
    const length = view.getInt32(offset + 4, true);
    if (length < 0 || offset + 8 + length > view.byteLength) return `${count}+ (then malformed)`;
    offset += 8 + length;
    count++;
  }
  return offset === view.byteLength ? String(count) : `${count}+ (then malformed)`;
}
