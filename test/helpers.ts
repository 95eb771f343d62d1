// Shared by the test files: every build loaded once per file, and comparisons with the reference.
import { expect } from 'vitest';
import { Kivi, VARIANTS, type CacheOptions, type GroupListing, type VariantName } from '../src/index';
import type { ReferenceOptions } from '../src/reference';
import type { WasmRuntime } from '../src/wasm';

/** Every build, loaded explicitly; the vitest config runs Node with the flags that let all three run. */
export async function loadAllVariants(): Promise<Map<VariantName, Kivi>> {
  const loaded = new Map<VariantName, Kivi>();
  for (const v of VARIANTS) {
    const kivi = await Kivi.load({ variant: v.name });
    expect(kivi.variant).toBe(v.name);
    loaded.set(v.name, kivi);
  }
  return loaded;
}

export const VARIANT_NAMES = VARIANTS.map((v) => v.name);

/** The runtime behind a Kivi (internal; for fault injection and direct kernel calls). */
export function runtimeOf(kivi: Kivi): WasmRuntime {
  return (kivi as unknown as { runtime: WasmRuntime }).runtime;
}

/** Watches rt's allocations from now on; stop() puts alloc and free back and returns the blocks
 *  allocated since and not freed. */
export function trackAllocations(rt: WasmRuntime): { stop(): Set<number> } {
  const alloc = rt.alloc, free = rt.free;
  const live = new Set<number>();
  rt.alloc = (bytes, what) => {
    const ptr = alloc.call(rt, bytes, what);
    live.add(ptr);
    return ptr;
  };
  rt.free = (ptr) => {
    live.delete(ptr);
    free.call(rt, ptr);
  };
  return {
    stop() {
      rt.alloc = alloc;
      rt.free = free;
      return live;
    },
  };
}

/** The reference's options for cache options (defaults filled in as the facade does). */
export function referenceOptions(o: CacheOptions): ReferenceOptions {
  return {
    layers: o.layers,
    kvHeads: o.kvHeads,
    headDim: o.headDim,
    queryHeads: o.queryHeads ?? o.kvHeads,
    bits: o.bits ?? 2,
    groupSize: o.groupSize ?? 32,
    residual: o.residual ?? 128,
    sinkTokens: o.sinkTokens ?? 0,
    keyWindow: o.keyWindow ?? 'chunked',
    keyGrouping: o.keyGrouping ?? 'channel',
    valueGrouping: o.valueGrouping ?? 'token',
  };
}

/** Codes and halves bit-identical (reports the first difference). */
export function expectSameGroups(got: GroupListing | null, want: GroupListing, what: string): void {
  expect(got, what).not.toBeNull();
  const g = got!;
  expect(g.grouping, `${what}: grouping`).toBe(want.grouping);
  expect(g.codes.length, `${what}: number of codes`).toBe(want.codes.length);
  expect(g.scales.length, `${what}: number of groups`).toBe(want.scales.length);
  const firstDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
    return -1;
  };
  const s = firstDiff(g.scales, want.scales);
  expect(s, `${what}: scale half of group ${s}: got 0x${g.scales[s]?.toString(16)}, want 0x${want.scales[s]?.toString(16)}`).toBe(-1);
  const z = firstDiff(g.zeros, want.zeros);
  expect(z, `${what}: zero half of group ${z}: got 0x${g.zeros[z]?.toString(16)}, want 0x${want.zeros[z]?.toString(16)}`).toBe(-1);
  const c = firstDiff(g.codes, want.codes);
  expect(c, `${what}: code ${c}: got ${g.codes[c]}, want ${want.codes[c]}`).toBe(-1);
}
