// Command-line options shared by the subcommands, validated with messages that say what was
// expected and what was got.
import { readFileSync } from 'node:fs';
import type { CacheOptions } from '../index';

export class UsageError extends Error {}

/** A file's bytes; a file that cannot be read is a usage error naming it. */
export function readBytes(path: string, what: string): Uint8Array {
  try {
    return new Uint8Array(readFileSync(path));
  } catch (error) {
    throw new UsageError(`cannot read the ${what} ${JSON.stringify(path)}: ${(error as Error).message}`);
  }
}


export function integerOption(name: string, text: string | undefined, fallback: number, min: number, max: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new UsageError(`--${name} expects an integer from ${min} to ${max}, got ${JSON.stringify(text)}`);
  }
  return value;
}

export function numberOption(name: string, text: string | undefined, fallback: number, min: number, max: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value < min || value > max) {
    throw new UsageError(`--${name} expects a number from ${min} to ${max}, got ${JSON.stringify(text)}`);
  }
  return value;
}

export function choiceOption<T extends string>(name: string, text: string | undefined, fallback: T, choices: readonly T[]): T {
  if (text === undefined) return fallback;
  if (!choices.includes(text as T)) throw new UsageError(`--${name} expects one of ${choices.join(', ')}, got ${JSON.stringify(text)}`);
  return text as T;
}

export function requiredOption(name: string, text: string | undefined): string {
  if (text === undefined || text === '') throw new UsageError(`--${name} is required`);
  return text;
}

/** The cache options of the command line (KIVI-2 with the paper's G and R unless told otherwise). */
export const CACHE_FLAGS = {
  bits: { type: 'string' },
  'group-size': { type: 'string' },
  residual: { type: 'string' },
  sinks: { type: 'string' },
  'key-window': { type: 'string' },
  'key-grouping': { type: 'string' },
  'value-grouping': { type: 'string' },
  variant: { type: 'string' },
} as const;

export const CACHE_HELP = `cache options:
  --bits 2|4|8|32          bits per code; 32 = f32 cache (default 2)
  --group-size G           KIVI's G, a multiple of 8 (default 32)
  --residual R             newest tokens kept in f32, a multiple of G (default 128)
  --sinks S                first S tokens kept in f32 (default 0)
  --key-window chunked|sliding  (default chunked, as KIVI)
  --key-grouping channel|token, --value-grouping token|channel   (ablations)
  --variant auto|relaxed-simd|simd|scalar   wasm build (default auto)`;

export function cacheOptions(values: Record<string, string | boolean | undefined>): Partial<CacheOptions> {
  const text = (name: string) => values[name] as string | undefined;
  const bits = integerOption('bits', text('bits'), 2, 2, 32);
  if (![2, 4, 8, 32].includes(bits)) throw new UsageError(`--bits expects 2, 4, 8 or 32, got ${bits}`);
  return {
    bits: bits as 2 | 4 | 8 | 32,
    groupSize: integerOption('group-size', text('group-size'), 32, 8, 4096),
    residual: integerOption('residual', text('residual'), 128, 0, 1 << 20),
    sinkTokens: integerOption('sinks', text('sinks'), 0, 0, 1 << 20),
    keyWindow: choiceOption('key-window', text('key-window'), 'chunked', ['chunked', 'sliding'] as const),
    keyGrouping: choiceOption('key-grouping', text('key-grouping'), 'channel', ['channel', 'token'] as const),
    valueGrouping: choiceOption('value-grouping', text('value-grouping'), 'token', ['token', 'channel'] as const),
  };
}

export function variantOption(values: Record<string, string | boolean | undefined>): 'auto' | 'relaxed-simd' | 'simd' | 'scalar' {
  return choiceOption('variant', values.variant as string | undefined, 'auto', ['auto', 'relaxed-simd', 'simd', 'scalar'] as const);
}

/** "KIVI-2 (G=32, R=128)" and the like. */
export function describeCache(o: Partial<CacheOptions>): string {
  if (o.bits === 32) return 'f32';
  const parts = [`G=${o.groupSize}`, `R=${o.residual}`];
  if (o.sinkTokens) parts.push(`sinks ${o.sinkTokens}`);
  if (o.keyWindow === 'sliding') parts.push('sliding keys');
  if (o.keyGrouping === 'token') parts.push('keys per token');
  if (o.valueGrouping === 'channel') parts.push('values per channel');
  return `KIVI-${o.bits} (${parts.join(', ')})`;
}
