// The conversation kept in the origin private file system (OPFS), so that a reload can resume it:
//
//   kivi-demo/cache.kivi     the KiviCache, streamed in (cache.serializeStream piped into the file)
//                            and out (the file's stream into kivi.restoreCacheStream)
//   kivi-demo/checkpoint     the model and tokenizer files, so that resuming needs no file picker
//   kivi-demo/tokenizer
//   kivi-demo/state.json     what the cache is of: the token ids so far, the text, the cache
//                            options, the files' names; written last, so it names a complete save
//
// A write goes to the file's swap copy and replaces it when the writable stream closes, so a
// save interrupted midway leaves the previous one.

const DIR = 'kivi-demo';

async function dir(create = true) {
  const root = await navigator.storage.getDirectory();
  return root.getDirectoryHandle(DIR, { create });
}

async function writeFile(folder, name, data) {
  const writable = await (await folder.getFileHandle(name, { create: true })).createWritable();
  if (data instanceof ReadableStream) {
    await data.pipeTo(writable); // closes the file when the stream ends, aborts it on an error
  } else {
    await writable.write(data);
    await writable.close();
  }
}

/** Saves a conversation: the cache as it streams out of wasm memory, then the files and the state. */
export async function saveConversation({ cache, checkpoint, tokenizer, state }) {
  const folder = await dir();
  await writeFile(folder, 'cache.kivi', cache.serializeStream({ chunkBytes: 1 << 20 }));
  const cacheBytes = (await (await folder.getFileHandle('cache.kivi')).getFile()).size;
  // The model files are copied once; a later save of the same files keeps them.
  const same = await loadState(folder);
  if (!(same && same.checkpointName === state.checkpointName && same.checkpointBytes === checkpoint.size)) await writeFile(folder, 'checkpoint', checkpoint);
  if (tokenizer && !(same && same.tokenizerName === state.tokenizerName && same.tokenizerBytes === tokenizer.size)) await writeFile(folder, 'tokenizer', tokenizer);
  const saved = { ...state, checkpointBytes: checkpoint.size, tokenizerBytes: tokenizer?.size ?? 0, cacheBytes, savedAt: new Date().toISOString() };
  await writeFile(folder, 'state.json', JSON.stringify(saved));
  return saved;
}

async function loadState(folder) {
  try {
    return JSON.parse(await (await (await folder.getFileHandle('state.json')).getFile()).text());
  } catch {
    return null;
  }
}

/** The saved conversation's state, or null. */
export async function savedState() {
  try {
    return await loadState(await dir(false));
  } catch {
    return null;
  }
}

/** The saved files: the cache as a stream (read as restoreCacheStream asks), the model files as Files. */
export async function savedFiles() {
  const folder = await dir(false);
  const file = async (name) => (await folder.getFileHandle(name)).getFile();
  const state = await loadState(folder);
  return { state, cache: (await file('cache.kivi')).stream(), checkpoint: await file('checkpoint'), tokenizer: state?.tokenizerBytes ? await file('tokenizer') : undefined };
}

export async function forgetConversation() {
  const root = await navigator.storage.getDirectory();
  await root.removeEntry(DIR, { recursive: true }).catch(() => undefined);
}
