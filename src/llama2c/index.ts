// kivi-wasm/llama2c: run llama2.c checkpoints (karpathy/llama2.c) and GGUF files with attention through a KiviCache,
// and measure what a quantized cache costs in perplexity.
export {
  CHECKPOINT_MAGIC,
  HEADER_BYTES,
  LEGACY_HEADER_BYTES,
  parseCheckpoint,
  validateConfig,
  type CheckpointFormat,
  type LlamaConfig,
  type LlamaLayerWeights,
  type LlamaModel,
  type ParseOptions,
} from './checkpoint';
export { dequantize, matrixRow, matVec, type F32Matrix, type GgmlMatrix, type Matrix, type Q8Matrix } from './matrix';
export { BOS, BYTE_FALLBACK_OFFSET, EOS, Tokenizer, UNK, type EncodeOptions } from './tokenizer';
export { defaultCacheOptions, LlamaRunner, RMS_EPS, ROPE_THETA, rmsNorm } from './model';
export {
  evaluate,
  logSoftmaxAt,
  protocolSequences,
  scoreSequence,
  splitParagraphs,
  windowsOf,
  type EvaluateOptions,
  type EvaluationResult,
  type Protocol,
  type ProtocolOptions,
  type ProtocolSequence,
  type SequenceScore,
} from './evaluate';
export { generate, sample, XorShiftStar, type GenerateOptions, type GenerateResult } from './generate';
export {
  convertToGguf,
  llamaGgufContents,
  llamaHiddenDim,
  randomGguf,
  randomGgufContents,
  randomVocabulary,
  vocabularyOf,
  WEIGHT_TYPES,
  type ConvertOptions,
  type GgufVocabulary,
  type RandomModelOptions,
  type WeightType,
} from '../gguf/convert';
export { ggufChunks, ggufLayout, writeGguf, type GgufContents, type GgufLayout, type MetadataInput, type TensorToWrite } from '../gguf/write';
export { parseGguf, shortestDecimal, type GgufModel } from '../gguf/model';
export { isGguf, readGguf, type GgufFile, type GgufTensorInfo } from '../gguf/read';
export {
  GGML_TYPE_NAMES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, TENSOR_TYPES, TokenType,
  type MetadataValue, type StringArray, type TensorType, type TensorTypeName,
} from '../gguf/format';
export { parseModel, type ParsedModel } from './parse-model';
