export { Kivi, type LoadOptions } from './kivi';
export { KiviCache, MAX_ABS_INPUT, type AttendOptions, type CacheStats } from './cache';
export type { Bits, CacheOptions, KeyGrouping, KeyWindow, ResolvedOptions, ValueGrouping } from './options';
export type { GroupListing } from './layout';
export { VARIANTS, type Variant, type VariantName } from './variants';
