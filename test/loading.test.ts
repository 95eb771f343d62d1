// Loading: which build runs where, the known-answer gate, precompiled modules, and the built
// package (dist/, ESM and CommonJS) in fresh Node processes with the runtime's own flags.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Kivi, VARIANTS } from '../src/index';

const root = join(__dirname, '..');
const nodeMajor = Number(process.versions.node.split('.')[0]);
const esm = join(root, 'dist', 'index.js');
const cjs = join(root, 'dist', 'index.cjs');

/** Runs a script in a fresh `node` with the given flags (no vitest flags) and returns its stdout. */
function node(flags: string[], script: string, type: 'module' | 'commonjs' = 'module'): string {
  return execFileSync(process.execPath, [...flags, `--input-type=${type}`, '-e', script], { cwd: root, encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } }).trim();
}

describe('the built package in a fresh Node process', () => {
  it(`picks the best build that runs correctly on plain Node ${nodeMajor}`, () => {
    const chosen = node([], `import { Kivi } from ${JSON.stringify(esm)}; console.log((await Kivi.load()).variant);`);
    // Node 20 validates relaxed SIMD only behind a flag; later versions ship it.
    expect(chosen).toBe(nodeMajor <= 20 ? 'simd' : 'relaxed-simd');
  });

  it.runIf(nodeMajor === 20)('rejects the relaxed build on Node 20 with the flag alone: its baseline compiler fails the known-answer check', () => {
    const out = node(['--experimental-wasm-relaxed-simd'], `
      import { Kivi } from ${JSON.stringify(esm)};
      console.log((await Kivi.load()).variant);
      try { await Kivi.load({ variant: 'relaxed-simd' }); console.log('loaded'); } catch (e) { console.log(e.message); }`);
    const [auto, forced] = out.split('\n');
    expect(auto).toBe('simd');
    expect(forced).toMatch(/relaxed-simd: known-answer check failed/);
  });

  it.runIf(nodeMajor === 20)('runs the relaxed build on Node 20 when the optimizing compiler alone compiles wasm', () => {
    expect(node(['--experimental-wasm-relaxed-simd', '--no-liftoff'], `import { Kivi } from ${JSON.stringify(esm)}; console.log((await Kivi.load()).variant);`)).toBe('relaxed-simd');
  });

  it('loads through CommonJS require()', () => {
    const out = node([], `const { Kivi } = require(${JSON.stringify(cjs)});
      Kivi.load({ variant: 'scalar' }).then((k) => {
        const c = k.createCache({ layers: 1, kvHeads: 1, headDim: 8 });
        c.append(0, new Float32Array(8).fill(0.5), new Float32Array(8).fill(2));
        console.log(k.variant, c.attend(0, new Float32Array(8).fill(1))[0]);
      });`, 'commonjs');
    expect(out).toBe('scalar 2');
  });

  it('compiles nothing at import time (no top-level await, no synchronous compile)', () => {
    const out = node([], `
      let calls = 0;
      for (const name of ['compile', 'instantiate', 'validate']) {
        const original = WebAssembly[name];
        WebAssembly[name] = (...args) => { calls++; return original.apply(WebAssembly, args); };
      }
      WebAssembly.Module = new Proxy(WebAssembly.Module, { construct(target, args) { calls++; return new target(...args); } });
      const { Kivi } = await import(${JSON.stringify(esm)});
      const atImport = calls;
      await Kivi.load();
      console.log(atImport, calls > 0);`);
    expect(out).toBe('0 true');
  });
});

describe('Kivi.load options', () => {
  const buildBytes = (name: string) => readFileSync(join(root, 'build', `kivi.${name}.wasm`));

  it.each(VARIANTS.map((v) => v.name))('accepts the %s build as a precompiled WebAssembly.Module and as bytes', async (name) => {
    const bytes = buildBytes(name);
    const fromModule = await Kivi.load({ module: new WebAssembly.Module(bytes) });
    expect(fromModule.variant).toBe(name);
    const fromBytes = await Kivi.load({ module: new Uint8Array(bytes) });
    expect(fromBytes.variant).toBe(name);
    const fromBuffer = await Kivi.load({ module: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength), variant: name });
    expect(fromBuffer.variant).toBe(name);
  });

  it('refuses a module of another build than the variant asked for', async () => {
    await expect(Kivi.load({ module: buildBytes('scalar'), variant: 'simd' })).rejects.toThrow(RangeError);
    await expect(Kivi.load({ module: buildBytes('scalar'), variant: 'simd' })).rejects.toThrow(/"simd" was asked for.*"scalar" build/);
  });

  it('refuses bytes that are not a module, and other things', async () => {
    await expect(Kivi.load({ module: new Uint8Array([0, 97, 115, 109, 9, 9]) })).rejects.toThrow(TypeError);
    await expect(Kivi.load({ module: 'kivi.wasm' as never })).rejects.toThrow(/module must be a WebAssembly.Module or the bytes of one, got "kivi.wasm"/);
    await expect(Kivi.load({ variant: 'avx512' as never })).rejects.toThrow(/variant must be one of "auto", "relaxed-simd", "simd", "scalar", got "avx512"/);
    await expect(Kivi.load(null as never)).rejects.toThrow(TypeError);
  });

  it('refuses a WebAssembly module that is not a kivi-wasm build', async () => {
    // (module (memory (export "memory") 1) (func (export "features") (result i32) i32.const 7)
    //   (func (export "alloc") (param i32) (result i32) i32.const 16) (func (export "free") (param i32))
    //   (func (export "selfTest") (param i32) (result i32) i32.const 0))
    const foreign = new Uint8Array([ // assembled by binaryen's wasm-as from the text above
      0, 97, 115, 109, 1, 0, 0, 0, 1, 14, 3, 96, 1, 127, 1, 127, 96, 0, 1, 127, 96, 1, 127, 0, 3, 5, 4, 1, 0, 2, 0, 5, 3, 1,
      0, 1, 7, 47, 5, 6, 109, 101, 109, 111, 114, 121, 2, 0, 8, 102, 101, 97, 116, 117, 114, 101, 115, 0, 0, 5, 97, 108,
      108, 111, 99, 0, 1, 4, 102, 114, 101, 101, 0, 2, 8, 115, 101, 108, 102, 84, 101, 115, 116, 0, 3, 10, 19, 4, 4, 0, 65,
      7, 11, 4, 0, 65, 16, 11, 2, 0, 11, 4, 0, 65, 0, 11,
    ]);
    await expect(Kivi.load({ module: foreign })).rejects.toThrow(/cannot be used: not a kivi-wasm build: missing exports realloc, .*f32_qchannel_quantize/);
  });
});
