// llama.cpp native, through node-llama-cpp: one way to load it, shared by the peer tools here.
//
// Only the prebuilt linux-x64 binary of the npm package @node-llama-cpp/linux-x64 is used:
// `build: 'never'` and `skipDownload: true` forbid node-llama-cpp's fallbacks (downloading llama.cpp's
// source and building it with cmake), and `gpu: false` keeps it from probing CUDA/Vulkan/Metal builds.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';

const here = dirname(fileURLToPath(import.meta.url));

/** The cache types the comparison uses, as node-llama-cpp names ggml's types. */
export const CACHE_TYPES = ['F16', 'Q8_0', 'Q4_0'];

export async function loadLlama() {
  process.env.NODE_LLAMA_CPP_SKIP_DOWNLOAD = 'true';
  return getLlama({
    gpu: false,
    build: 'never',
    usePrebuiltBinaries: true,
    skipDownload: true,
    progressLogs: false,
    logLevel: LlamaLogLevel.error,
  });
}

/** Which llama.cpp runs: node-llama-cpp's version, the llama.cpp release it was built from and the
 *  commit of the llama.cpp source bundle it ships (llama/gitRelease.bundle). */
export function llamaCppVersions(llama) {
  const pkg = (name) => JSON.parse(readFileSync(join(here, 'node_modules', name, 'package.json'), 'utf8')).version;
  const release = JSON.parse(readFileSync(join(here, 'node_modules/node-llama-cpp/llama/llama.cpp.info.json'), 'utf8'));
  return {
    nodeLlamaCpp: pkg('node-llama-cpp'),
    binary: `@node-llama-cpp/linux-x64@${pkg('@node-llama-cpp/linux-x64')}`,
    llamaCpp: `${release.llamaCppGithubRepo} ${release.tag}`,
    llamaCppCommit: bundleHead(join(here, 'node_modules/node-llama-cpp/llama/gitRelease.bundle')),
    buildType: llama?.buildType,
    cpu: llama?.systemInfo?.trim(),
  };
}

/** The commit a git bundle's HEAD names: its header is text ("# v2 git bundle", then "<sha> <ref>" lines). */
function bundleHead(path) {
  const head = readFileSync(path).subarray(0, 4096).toString('latin1');
  const line = head.split('\n').find((l) => /^[0-9a-f]{40} HEAD$/.test(l));
  return line ? line.slice(0, 40) : 'unknown';
}
