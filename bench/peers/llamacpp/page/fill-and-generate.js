// What kivi-worker.js does with kivi-wasm's runner at each depth, as a plain module without imports,
// so that the peer test runs exactly this in Node and compares it with the page's run.
//
// For each depth N (ascending) the cache is filled to N tokens the way a user fills it, by the runner
// itself one token at a time (the runner has no batched prefill): BOS, then the word's token ("▁aa")
// over and over, each depth continuing from the previous one (the tokens generated there stay in the
// context, as they would in a conversation). Then `steps` tokens are generated greedily; the time
// from the first sampled token to the last covers steps − 1 forward passes (as llama.cpp's server
// code counts its generation time) and gives the tokens per second.

function argmax(logits) {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/** The token id of `word` (one token per word, after BOS), or an error saying what was got. */
export function wordToken(tokenizer, word, bos) {
  const ids = tokenizer.encode(`${word} ${word} ${word}`, { bos: true });
  if (ids.length !== 4 || ids[0] !== bos || ids[2] !== ids[1] || ids[3] !== ids[1]) throw new Error(`"${word}" is not one token per word in this vocabulary: ${ids}`);
  return ids[1];
}

/** Runs the fills and generations on a fresh runner; returns one row per depth. */
export function fillAndGenerate(runner, { depths, steps, word, bos, layers, vocabSize, now = () => performance.now() }) {
  if (runner.position !== 0) throw new Error(`the runner must be fresh, it is at position ${runner.position}`);
  const logits = new Float32Array(vocabSize);
  const rows = [];
  for (const depth of depths) {
    if (runner.position >= depth) throw new Error(`depths must grow by more than steps (${steps}): at ${depth} the cache holds ${runner.position} tokens`);
    const fillStart = now();
    if (runner.position === 0) runner.advance(bos);
    while (runner.position < depth - 1) runner.advance(word);
    runner.forward(word, logits); // the prompt's last token: its logits give the first generated one
    const fillMs = now() - fillStart;
    const generated = [];
    const start = now();
    let token = argmax(logits);
    generated.push(token);
    for (let s = 1; s < steps; s++) {
      runner.forward(token, logits);
      token = argmax(logits);
      generated.push(token);
    }
    const generationMs = now() - start;
    const stats = runner.cache.stats();
    rows.push({
      depth, fillMs, generationMs, steps, msPerToken: generationMs / (steps - 1), tokensPerSecond: ((steps - 1) * 1000) / generationMs,
      cacheTokens: stats.tokens / layers, cacheBytes: stats.bytes, bitsPerElement: stats.bitsPerElement, generated,
    });
  }
  return rows;
}
