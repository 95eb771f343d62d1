// onnxruntime-web peers for the attention benchmark: one decode step (one query token, every head of one
// layer) over `context` cached f32 tokens, run by ONNX Runtime's WebAssembly execution provider, single
// thread. Three graphs, built here in code (no model files, nothing downloaded):
//
//  - `ort MatMul/Softmax/MatMul`: what a transformers.js model exported without fused attention runs
//    (Hugging Face eager attention: repeat_kv = Unsqueeze/Expand/Reshape for GQA, k^T, MatMul, Mul by
//    1/sqrt(D), Softmax, MatMul). The query and the whole past key/value are graph inputs, as in real use
//    where the cache changes every step.
//  - `ort MultiHeadAttention` (com.microsoft, shapes with Hq == Hkv) and `ort GroupQueryAttention`
//    (com.microsoft, shapes with Hq != Hkv): the fused contrib ops of onnxruntime's transformer optimizer and
//    of onnxruntime-genai models. They take the past cache [1, Hkv, past, D] plus the newest token's key and
//    value and append it themselves, so they are fed tokens 0..N-2 as past and token N-1 as the new key/value:
//    attention then covers exactly the same N tokens as the other peers.
//
// onnxruntime-web's JavaScript API copies every CPU input tensor into the WebAssembly heap on each run(), so
// the timed step includes one copy of the KV cache (as in transformers.js decoding on the wasm EP, which
// additionally copies the present key/value back out; here only `output` is fetched).
import * as ort from 'onnxruntime-web';
import protobuf from 'protobufjs';

export interface AttentionShape { queryHeads: number; kvHeads: number; headDim: number }

export interface OnnxPeer {
  name: string;
  /** one decode step: one query token [queryHeads][headDim] over `context` cached tokens */
  run(query: Float32Array): Promise<Float32Array>;
  dispose(): Promise<void>;
}

export interface OnnxPeerOptions {
  /** also build a GroupQueryAttention peer for shapes with Hq == Hkv (onnxruntime-genai uses GQA for those too). Default false. */
  gqaForMha?: boolean;
  /** extra session options (e.g. graphOptimizationLevel, logSeverityLevel); the execution provider stays 'wasm' */
  sessionOptions?: ort.InferenceSession.SessionOptions;
}

// ---------------------------------------------------------------------------------------------
// ONNX model serialization: the subset of onnx.proto3 (https://github.com/onnx/onnx/blob/main/onnx/onnx.proto3)
// these graphs need, with the official field numbers, compiled by protobufjs (the version onnxruntime-web uses).

const ONNX_PROTO = `
syntax = "proto3";
package onnx;
message AttributeProto {
  string name = 1;
  float f = 2;
  int64 i = 3;
  bytes s = 4;
  repeated float floats = 7;
  repeated int64 ints = 8;
  int32 type = 20;             // AttributeType: FLOAT = 1, INT = 2, STRING = 3, FLOATS = 6, INTS = 7
}
message ValueInfoProto { string name = 1; TypeProto type = 2; }
message NodeProto {
  repeated string input = 1;
  repeated string output = 2;
  string name = 3;
  string op_type = 4;
  repeated AttributeProto attribute = 5;
  string domain = 7;
}
message ModelProto {
  int64 ir_version = 1;
  string producer_name = 2;
  string producer_version = 3;
  GraphProto graph = 7;
  repeated OperatorSetIdProto opset_import = 8;
}
message GraphProto {
  repeated NodeProto node = 1;
  string name = 2;
  repeated TensorProto initializer = 5;
  repeated ValueInfoProto input = 11;
  repeated ValueInfoProto output = 12;
}
message TensorProto {
  repeated int64 dims = 1;
  int32 data_type = 2;         // DataType: FLOAT = 1, INT32 = 6, INT64 = 7
  repeated int64 int64_data = 7 [packed = true];
  string name = 8;
  bytes raw_data = 9;
}
message TensorShapeProto {
  message Dimension { oneof value { int64 dim_value = 1; string dim_param = 2; } }
  repeated Dimension dim = 1;
}
message TypeProto {
  message Tensor { int32 elem_type = 1; TensorShapeProto shape = 2; }
  oneof value { Tensor tensor_type = 1; }
}
message OperatorSetIdProto { string domain = 1; int64 version = 2; }
`;

const FLOAT = 1;
/** ONNX TensorProto.DataType FLOAT16 */
export const FLOAT16 = 10;
const INT32 = 6;
const INT64 = 7;
const ATTR_FLOAT = 1;
const ATTR_INT = 2;
const ATTR_INTS = 7;

let modelProto: protobuf.Type | undefined;

type Attribute = number | number[] | { float: number };
export interface NodeSpec { op: string; inputs: string[]; outputs: string[]; domain?: string; attributes?: Record<string, Attribute> }
/** dims: numbers, or strings for symbolic dimensions */
export interface ValueSpec { name: string; type: number; dims: (number | string)[] }
export interface GraphSpec { name: string; inputs: ValueSpec[]; outputs: ValueSpec[]; nodes: NodeSpec[]; int64Initializers?: Record<string, number[]> }

function valueInfo(v: ValueSpec): object {
  return { name: v.name, type: { tensorType: { elemType: v.type, shape: { dim: v.dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } } };
}

function attribute(name: string, a: Attribute): object {
  if (Array.isArray(a)) return { name, type: ATTR_INTS, ints: a };
  if (typeof a === 'number') return { name, type: ATTR_INT, i: a };
  return { name, type: ATTR_FLOAT, f: a.float };
}

/** serialized ONNX model (IR 8, opset 17 + com.microsoft 1) */
export function buildModel(g: GraphSpec): Uint8Array {
  modelProto ??= protobuf.parse(ONNX_PROTO, { keepCase: false }).root.lookupType('onnx.ModelProto');
  const model = {
    irVersion: 8,
    producerName: 'kivi-wasm bench',
    producerVersion: '1',
    opsetImport: [{ domain: '', version: 17 }, { domain: 'com.microsoft', version: 1 }],
    graph: {
      name: g.name,
      node: g.nodes.map((n, i) => ({
        name: `${n.op}_${i}`,
        opType: n.op,
        domain: n.domain ?? '',
        input: n.inputs,
        output: n.outputs,
        attribute: Object.entries(n.attributes ?? {}).map(([k, v]) => attribute(k, v)),
      })),
      initializer: Object.entries(g.int64Initializers ?? {}).map(([name, values]) => ({ name, dataType: INT64, dims: [values.length], int64Data: values })),
      input: g.inputs.map(valueInfo),
      output: g.outputs.map(valueInfo),
    },
  };
  const error = modelProto.verify(model);
  if (error) throw new Error(`onnx model: ${error}`);
  return modelProto.encode(modelProto.fromObject(model)).finish();
}

// ---------------------------------------------------------------------------------------------
// The graphs

/** Hugging Face eager attention with repeat_kv, as exported to ONNX for transformers.js (no fused ops) */
function matmulGraph(s: AttentionShape, n: number): GraphSpec {
  const { queryHeads: hq, kvHeads: hkv, headDim: d } = s;
  const rep = hq / hkv;
  const nodes: NodeSpec[] = [];
  let k = 'past_key';
  let v = 'past_value';
  const int64Initializers: Record<string, number[]> = {};
  if (rep > 1) {
    // repeat_kv: x[:, :, None, :, :].expand(b, hkv, rep, n, d).reshape(b, hkv * rep, n, d)
    Object.assign(int64Initializers, { axis2: [2], expand_shape: [1, hkv, rep, n, d], repeat_shape: [1, hq, n, d] });
    for (const x of ['key', 'value']) {
      nodes.push(
        { op: 'Unsqueeze', inputs: [`past_${x}`, 'axis2'], outputs: [`${x}_unsqueezed`] },
        { op: 'Expand', inputs: [`${x}_unsqueezed`, 'expand_shape'], outputs: [`${x}_expanded`] },
        { op: 'Reshape', inputs: [`${x}_expanded`, 'repeat_shape'], outputs: [`${x}_repeated`] },
      );
    }
    k = 'key_repeated';
    v = 'value_repeated';
  }
  nodes.push(
    { op: 'Transpose', inputs: [k], outputs: ['key_t'], attributes: { perm: [0, 1, 3, 2] } },
    { op: 'MatMul', inputs: ['query', 'key_t'], outputs: ['qk'] },
    { op: 'Mul', inputs: ['qk', 'scale'], outputs: ['scores'] },
    { op: 'Softmax', inputs: ['scores'], outputs: ['probs'], attributes: { axis: -1 } },
    { op: 'MatMul', inputs: ['probs', v], outputs: ['output'] },
  );
  // the scale is a constant of the graph (a float initializer is not in GraphSpec: use a Constant node)
  nodes.unshift({ op: 'Constant', inputs: [], outputs: ['scale'], attributes: { value_float: { float: 1 / Math.sqrt(d) } } });
  return {
    name: 'attention_matmul',
    inputs: [
      { name: 'query', type: FLOAT, dims: [1, hq, 1, d] },
      { name: 'past_key', type: FLOAT, dims: [1, hkv, n, d] },
      { name: 'past_value', type: FLOAT, dims: [1, hkv, n, d] },
    ],
    outputs: [{ name: 'output', type: FLOAT, dims: [1, hq, 1, d] }],
    nodes,
    int64Initializers,
  };
}

/** com.microsoft.MultiHeadAttention, decode step with past_key/past_value (BNSH) and the new token's key/value */
function mhaGraph(s: AttentionShape, n: number): GraphSpec {
  const { queryHeads: h, headDim: d } = s;
  return {
    name: 'attention_mha',
    inputs: [
      { name: 'query', type: FLOAT, dims: [1, 1, h * d] },
      { name: 'key', type: FLOAT, dims: [1, 1, h * d] },
      { name: 'value', type: FLOAT, dims: [1, 1, h * d] },
      { name: 'past_key', type: FLOAT, dims: [1, h, n - 1, d] },
      { name: 'past_value', type: FLOAT, dims: [1, h, n - 1, d] },
    ],
    outputs: [
      { name: 'output', type: FLOAT, dims: [1, 1, h * d] },
      { name: 'present_key', type: FLOAT, dims: [1, h, n, d] },
      { name: 'present_value', type: FLOAT, dims: [1, h, n, d] },
    ],
    nodes: [{
      op: 'MultiHeadAttention',
      domain: 'com.microsoft',
      // query, key, value, bias, key_padding_mask, attention_bias, past_key, past_value
      inputs: ['query', 'key', 'value', '', '', '', 'past_key', 'past_value'],
      outputs: ['output', 'present_key', 'present_value'],
      attributes: { num_heads: h },
    }],
  };
}

/** com.microsoft.GroupQueryAttention, decode step: past (BNSH, N-1 tokens) + the new token, seqlens_k = N-1 */
function gqaGraph(s: AttentionShape, n: number): GraphSpec {
  const { queryHeads: hq, kvHeads: hkv, headDim: d } = s;
  return {
    name: 'attention_gqa',
    inputs: [
      { name: 'query', type: FLOAT, dims: [1, 1, hq * d] },
      { name: 'key', type: FLOAT, dims: [1, 1, hkv * d] },
      { name: 'value', type: FLOAT, dims: [1, 1, hkv * d] },
      { name: 'past_key', type: FLOAT, dims: [1, hkv, n - 1, d] },
      { name: 'past_value', type: FLOAT, dims: [1, hkv, n - 1, d] },
      { name: 'seqlens_k', type: INT32, dims: [1] },
      { name: 'total_sequence_length', type: INT32, dims: [] },
    ],
    outputs: [
      { name: 'output', type: FLOAT, dims: [1, 1, hq * d] },
      // symbolic: onnxruntime's static shape inference for GQA gives present the past length (N-1, as if
      // past and present shared one max-length buffer); at run time present holds max(total, past) = N tokens
      { name: 'present_key', type: FLOAT, dims: [1, hkv, 'present_sequence_length', d] },
      { name: 'present_value', type: FLOAT, dims: [1, hkv, 'present_sequence_length', d] },
    ],
    nodes: [{
      op: 'GroupQueryAttention',
      domain: 'com.microsoft',
      inputs: ['query', 'key', 'value', 'past_key', 'past_value', 'seqlens_k', 'total_sequence_length'],
      outputs: ['output', 'present_key', 'present_value'],
      attributes: { num_heads: hq, kv_num_heads: hkv },
    }],
  };
}

// ---------------------------------------------------------------------------------------------
// Runtime set-up and peers

const notes: string[] = [];
let configured = false;
let threads = 1;

/** Threads onnxruntime-web runs with (its numThreads): fixed once its runtime starts, so a process
 *  measures one thread count (the thread-scaling benchmark runs one process per count). */
export function setOnnxThreads(count: number): void {
  if (configured && count !== threads) throw new Error(`onnxruntime-web already runs with ${threads} threads in this process`);
  threads = count;
}

function configure(): void {
  if (configured) return;
  ort.env.wasm.numThreads = threads; // 1: no worker threads, one thread like our single-thread kernels
  ort.env.wasm.simd = true;    // the only build shipped is ort-wasm-simd-threaded.wasm (fixed-width SIMD)
  ort.env.wasm.proxy = false;  // run on the calling thread
  configured = true;
}

function note(message: string): void {
  if (!notes.includes(message)) notes.push(message);
}

function simdAvailable(): boolean {
  // (module (func (result v128) i32.const 0 i8x16.splat)) — validates only where WebAssembly SIMD exists
  const bytes = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 8, 1, 6, 0, 65, 0, 253, 15, 11]);
  return WebAssembly.validate(bytes);
}

export function onnxRuntimeInfo(): { version: string; backend: string; threads: number; simd: boolean; notes: string[] } {
  configure();
  return {
    version: ort.env.versions.web ?? ort.env.versions.common,
    backend: 'wasm (ort-wasm-simd-threaded.wasm, CPU kernels/MLAS)',
    threads: ort.env.wasm.numThreads ?? 0,
    simd: ort.env.wasm.simd !== false && simdAvailable(),
    notes: [...notes],
  };
}

/** [n][h][d] token-major (rows `from`..`to`-1) -> [1][h][to-from][d] head-major */
function toBnsh(src: Float32Array, heads: number, d: number, from: number, to: number): Float32Array {
  const n = to - from;
  const dst = new Float32Array(heads * n * d);
  for (let t = 0; t < n; t++) {
    for (let h = 0; h < heads; h++) {
      const s = ((from + t) * heads + h) * d;
      dst.set(src.subarray(s, s + d), (h * n + t) * d);
    }
  }
  return dst;
}

async function makePeer(name: string, graph: GraphSpec, feeds: Record<string, ort.Tensor>, queryTensor: ort.Tensor, options: OnnxPeerOptions): Promise<OnnxPeer | undefined> {
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(buildModel(graph), { ...options.sessionOptions, executionProviders: ['wasm'] });
  } catch (error) {
    note(`${name}: not available in the wasm EP (${String((error as Error).message ?? error).split('\n')[0]})`);
    return undefined;
  }
  const queryData = queryTensor.data as Float32Array;
  const allFeeds = { ...feeds, query: queryTensor };
  const fetches = ['output'];
  return {
    name,
    async run(query: Float32Array): Promise<Float32Array> {
      if (query.length !== queryData.length) throw new Error(`${name}: query length ${query.length}, expected ${queryData.length}`);
      queryData.set(query);
      const result = await session.run(allFeeds, fetches);
      return result.output!.data as Float32Array;
    },
    async dispose(): Promise<void> {
      await session.release();
    },
  };
}

/** keys/values: Float32Array [context][kvHeads][headDim] (token-major, post-RoPE), as our cache holds them */
export async function createOnnxPeers(shape: AttentionShape, context: number, keys: Float32Array, values: Float32Array, options: OnnxPeerOptions = {}): Promise<OnnxPeer[]> {
  const { queryHeads: hq, kvHeads: hkv, headDim: d } = shape;
  if (!(hq > 0 && hkv > 0 && d > 0 && hq % hkv === 0)) throw new Error('createOnnxPeers: queryHeads must be a positive multiple of kvHeads');
  if (!(Number.isInteger(context) && context >= 2)) throw new Error('createOnnxPeers: context must be an integer >= 2');
  if (keys.length < context * hkv * d || values.length < context * hkv * d) throw new Error('createOnnxPeers: keys/values shorter than context');
  configure();
  const peers: OnnxPeer[] = [];

  // 1. MatMul/Softmax/MatMul over the whole cache, [1, Hkv, N, D]
  {
    const feeds = {
      past_key: new ort.Tensor('float32', toBnsh(keys, hkv, d, 0, context), [1, hkv, context, d]),
      past_value: new ort.Tensor('float32', toBnsh(values, hkv, d, 0, context), [1, hkv, context, d]),
    };
    const peer = await makePeer('ort MatMul/Softmax/MatMul', matmulGraph(shape, context), feeds, new ort.Tensor('float32', new Float32Array(hq * d), [1, hq, 1, d]), options);
    if (peer) peers.push(peer);
  }

  // 2. fused contrib ops: past = tokens 0..N-2 in BNSH, the newest token N-1 as key/value [1, 1, Hkv*D]
  const last = (context - 1) * hkv * d;
  const fusedFeeds = (): Record<string, ort.Tensor> => ({
    key: new ort.Tensor('float32', keys.slice(last, last + hkv * d), [1, 1, hkv * d]),
    value: new ort.Tensor('float32', values.slice(last, last + hkv * d), [1, 1, hkv * d]),
    past_key: new ort.Tensor('float32', toBnsh(keys, hkv, d, 0, context - 1), [1, hkv, context - 1, d]),
    past_value: new ort.Tensor('float32', toBnsh(values, hkv, d, 0, context - 1), [1, hkv, context - 1, d]),
  });
  if (hq === hkv) {
    const peer = await makePeer('ort MultiHeadAttention', mhaGraph(shape, context), fusedFeeds(), new ort.Tensor('float32', new Float32Array(hq * d), [1, 1, hq * d]), options);
    if (peer) peers.push(peer);
  }
  if (hq !== hkv || options.gqaForMha) {
    const feeds = {
      ...fusedFeeds(),
      seqlens_k: new ort.Tensor('int32', Int32Array.of(context - 1), [1]),
      total_sequence_length: new ort.Tensor('int32', Int32Array.of(context), []),
    };
    const peer = await makePeer('ort GroupQueryAttention', gqaGraph(shape, context), feeds, new ort.Tensor('float32', new Float32Array(hq * d), [1, 1, hq * d]), options);
    if (peer) peers.push(peer);
  }
  return peers;
}
