// stories3M (f32 file) through an f32 cache: the reference numbers of shared/models/README.md.
// ~13 s on a 2-core machine; the Q8_0 file is in llama2c-q80.test.ts so that the two run in parallel.
import { describe, expect, it } from 'vitest';
import { generate, LlamaRunner, type Protocol } from '../src/llama2c/index';
import { expectReference, REFERENCE, useModel } from './llama2c-helpers';

const stories = useModel('stories3M.f32.bin', 'tok4096.bin');

describe('stories3M (f32 weights, f32 cache)', () => {
  for (const protocol of ['A', 'B'] as Protocol[]) {
    const want = REFERENCE.stories3M[protocol];
    it(`protocol ${protocol}: ${want.tokens} tokens, mean NLL ${want.meanNll}`, () => expectReference(stories, protocol, want, 'stories3M'));
  }

  it('generates greedily from BOS', () => {
    const runner = new LlamaRunner(stories.model, stories.kivi);
    const g = generate(runner, stories.tokenizer, { steps: 24, temperature: 0 });
    expect(g.text.startsWith('Once upon a time, there was a little girl named Lily.')).toBe(true);
    runner.dispose();
  });
});
