// Kivi.load({ modules }): several precompiled builds (what the workerd entry hands over), tried best
// first through the same checks as the embedded builds; and the workerd entry of dist/.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Kivi, VARIANTS, type VariantName } from '../src/index';

const root = join(__dirname, '..');
const bytes = (name: VariantName) => new Uint8Array(readFileSync(join(root, 'build', `kivi.${name}.wasm`)));
const compiled = (name: VariantName) => new WebAssembly.Module(bytes(name));

describe('Kivi.load({ modules })', () => {
  it('picks the best build given, as modules or bytes, like the embedded ones', async () => {
    // vitest runs Node with --experimental-wasm-relaxed-simd --no-liftoff: the relaxed build runs.
    const all = { 'relaxed-simd': compiled('relaxed-simd'), simd: compiled('simd'), scalar: compiled('scalar') };
    expect((await Kivi.load({ modules: all })).variant).toBe((await Kivi.load()).variant);
    expect((await Kivi.load({ modules: { simd: bytes('simd'), scalar: bytes('scalar') } })).variant).toBe('simd');
    expect((await Kivi.load({ modules: { scalar: compiled('scalar') } })).variant).toBe('scalar');
  });

  it.each(VARIANTS.map((v) => v.name))('honours variant %s among the modules', async (name) => {
    const all = { 'relaxed-simd': compiled('relaxed-simd'), simd: compiled('simd'), scalar: compiled('scalar') };
    expect((await Kivi.load({ modules: all, variant: name })).variant).toBe(name);
  });

  it('computes what the embedded builds compute', async () => {
    const run = async (kivi: Kivi) => {
      const cache = kivi.createCache({ layers: 1, kvHeads: 2, headDim: 16, groupSize: 8, residual: 8 });
      const kv = Float32Array.from({ length: 40 * 32 }, (_, i) => Math.sin(i * 0.37));
      cache.append(0, kv, kv.map((x) => x * 0.5));
      return cache.attend(0, kv.subarray(kv.length - 32));
    };
    const given = await run(await Kivi.load({ modules: { scalar: compiled('scalar') } }));
    const embedded = await run(await Kivi.load({ variant: 'scalar' }));
    expect(Array.from(given)).toEqual(Array.from(embedded));
  });

  it('says what went wrong when none can be used', async () => {
    await expect(Kivi.load({ modules: {}, threads: 1 })).rejects.toThrow(/no build of the kernels runs correctly here \(relaxed-simd: not given; simd: not given; scalar: not given\)/);
    await expect(Kivi.load({ modules: {}, threads: 2 })).rejects.toThrow(/\(relaxed-simd-threads: not given; relaxed-simd: not given; simd-threads: not given; simd: not given; scalar: not given\)/);
    await expect(Kivi.load({ modules: { scalar: compiled('scalar') }, variant: 'simd' })).rejects.toThrow(/simd: not given/);
    await expect(Kivi.load({ modules: { simd: compiled('scalar') } })).rejects.toThrow(/simd: the module given for it is the "scalar" build/);
  });

  it('refuses malformed modules options', async () => {
    await expect(Kivi.load({ modules: [compiled('scalar')] as never })).rejects.toThrow(TypeError);
    await expect(Kivi.load({ modules: compiled('scalar') as never })).rejects.toThrow(/modules must be an object keyed by build/);
    await expect(Kivi.load({ modules: { avx512: compiled('scalar') } as never })).rejects.toThrow(RangeError);
    await expect(Kivi.load({ modules: { simd: 'kivi.simd.wasm' } as never })).rejects.toThrow(/modules\["simd"\] must be a WebAssembly.Module or the bytes of one, got "kivi.simd.wasm"/);
    await expect(Kivi.load({ module: compiled('scalar'), modules: { scalar: compiled('scalar') } })).rejects.toThrow(/either module or modules/);
  });
});

describe('the workerd entry (dist/workerd.js)', () => {
  it('imports the three builds shipped beside it and embeds none', () => {
    const code = readFileSync(join(root, 'dist', 'workerd.js'), 'utf8');
    for (const name of VARIANTS.map((v) => v.name)) {
      expect(code).toContain(`from './kivi.${name}.wasm'`);
      expect(new Uint8Array(readFileSync(join(root, 'dist', `kivi.${name}.wasm`)))).toEqual(bytes(name));
    }
    expect(code).not.toMatch(/AGFzbQ/); // base64 of "\0asm"
  });
});
