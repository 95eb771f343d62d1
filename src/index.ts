export { Kivi, type LoadOptions } from './kivi';
export { KiviCache, MAX_ABS_INPUT, type AttendOptions, type CacheStats, type Float16ArrayLike, type Tensor } from './cache';
export type { Bits, CacheOptions, KeyGrouping, KeyWindow, ResolvedOptions, ValueGrouping } from './options';
export type { GroupListing } from './layout';
export { BUILDS, VARIANTS, type Build, type BuildName, type Variant, type VariantName } from './variants';
export { checkCacheStream, type CacheSource, type CacheStream, type CacheStreamSummary, type CheckedCacheStream, type RestoreStreamOptions, type SerializeStreamOptions } from './stream';
