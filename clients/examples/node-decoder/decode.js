#!/usr/bin/env node
// A dependency-free decoder of splitinfer coded tensors (coder versions 1 and 2), written only from docs/BITSTREAM.md.
//
// As a module: decodeTensor(tensor, referenceLevels, limits) -> { levels: Uint8Array, values: Float32Array },
// where `tensor` has the fields of splitinfer.v1.CompressedTensor as in the conformance vectors
// (shape, clip_min, clip_max, quantizer {kind, levels, reconstruction, thresholds}, coder_value,
// coder_version, payload (a Uint8Array) or payload_base64, payload_crc32). It throws DecodeError on
// anything the document says a decoder must refuse.
// As a command: node decode.js <folder of conformance vectors> decodes every vector and checks it.
'use strict';

const fs = require('fs');
const path = require('path');

const CODER_VERSION = 1;
const INTER_VERSION = 2; // TEMPORAL_CONTEXTS only (section 4.3)
const BIN_CONTEXTS = 1;
const NEIGHBOUR_CONTEXTS = 2;
const SIGNED_NEIGHBOUR_CONTEXTS = 3;
const TEMPORAL_CONTEXTS = 4;
const DEFAULT_LIMITS = Object.freeze({ maxElements: 2 ** 26, maxBins: 2 ** 30 });
const TOP = 2 ** 24;

class DecodeError extends Error {}

function fail(message) {
  throw new DecodeError(message);
}

// CRC-32 (reflected 0xEDB88320, init and final XOR 0xFFFFFFFF), section 7.1.
const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// Sections 3.1 and 3.2: two-rate probability states and the range decoder over d[0..n-1].
class BinDecoder {
  constructor(data, contexts) {
    this.data = data;
    this.fast = new Int32Array(contexts).fill(16384);
    this.slow = new Int32Array(contexts).fill(16384);
    this.range = 0xffffffff;
    this.code = 0;
    for (let i = 0; i < 4; i++) this.code = this.code * 256 + this.byteAt(i);
    this.pos = 4;
  }

  byteAt(i) {
    return i < this.data.length ? this.data[i] : 0;
  }

  bin(ctx) {
    const fast = this.fast[ctx];
    const slow = this.slow[ctx];
    const p0 = (fast + slow) >> 1;
    const bound = (this.range >>> 15) * p0;
    let bit;
    if (this.code < bound) {
      bit = 0;
      this.range = bound;
      this.fast[ctx] = fast + ((32752 - fast) >> 4);
      this.slow[ctx] = slow + ((32640 - slow) >> 7);
    } else {
      bit = 1;
      this.code -= bound;
      this.range -= bound;
      this.fast[ctx] = fast + ((16 - fast) >> 4);
      this.slow[ctx] = slow + ((128 - slow) >> 7);
    }
    while (this.range < TOP) {
      this.range = (this.range * 256) % 4294967296;
      this.code = (this.code * 256 + this.byteAt(this.pos)) % 4294967296;
      this.pos += 1;
    }
    return bit;
  }
}

function cmp3(a, b) {
  return a < b ? 0 : a === b ? 1 : 2;
}

function checkShape(shape, limits) {
  if (!Array.isArray(shape)) fail('shape must be a list of non-negative integers');
  if (shape.length > 32) fail(`shape has ${shape.length} dimensions; at most 32 are allowed`);
  let elements = 1;
  let zero = false;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) fail(`shape ${JSON.stringify(shape)} must hold non-negative integers`);
    if (d === 0) zero = true;
  }
  if (zero) return 0;
  for (const d of shape) {
    elements *= d;
    if (elements > limits.maxElements) {
      fail(`shape ${JSON.stringify(shape)} exceeds the element limit ${limits.maxElements}`);
    }
  }
  return elements;
}

// Section 2: P planes of H rows x W columns.
function planes(shape) {
  if (shape.length === 0) return [1, 1, 1];
  if (shape.length === 1) return [1, 1, shape[0]];
  let p = 1;
  for (let i = 0; i < shape.length - 2; i++) p *= shape[i];
  return [p, shape[shape.length - 2], shape[shape.length - 1]];
}

// Section 1, "Compact uniform quantizers": linspace(lo, hi, n) in doubles as numpy computes it (i * step + lo,
// the last value hi itself), each rounded to float32; thresholds halfway between, in doubles, rounded.
function deriveUniform(lo, hi, n) {
  if (!(Number.isFinite(lo) && Number.isFinite(hi) && lo < hi)) fail(`clip_min ${lo} must be below clip_max ${hi}`);
  const step = (hi - lo) / (n - 1);
  const rec = [];
  for (let i = 0; i < n - 1; i++) rec.push(Math.fround(i * step + lo));
  rec.push(hi);
  const thr = [];
  for (let j = 0; j < n - 1; j++) thr.push(Math.fround((rec[j] + rec[j + 1]) / 2));
  return [rec, thr];
}

function checkQuantizer(tensor) {
  const q = tensor.quantizer;
  if (!q || typeof q !== 'object') fail('the tensor has no quantizer');
  const kind = q.kind;
  if (!(kind === 'UNIFORM' || kind === 'ECSQ' || kind === 1 || kind === 2)) fail(`unknown quantizer kind ${kind}`);
  const n = q.levels;
  if (!Number.isInteger(n) || n < 2 || n > 256) fail(`quantizer levels must be 2..256, got ${n}`);
  const none = (list) => list == null || (Array.isArray(list) && list.length === 0);
  const lo = Math.fround(tensor.clip_min);
  const hi = Math.fround(tensor.clip_max);
  const compact = none(q.reconstruction) && none(q.thresholds);
  if (compact && !(kind === 'UNIFORM' || kind === 1)) fail('only a UNIFORM quantizer may leave out its values');
  const [rec, thr] = compact ? deriveUniform(lo, hi, n) : [q.reconstruction, q.thresholds];
  if (!Array.isArray(rec) || rec.length !== n) fail(`${n} levels need ${n} reconstruction values`);
  if (!Array.isArray(thr) || thr.length !== n - 1) fail(`${n} levels need ${n - 1} thresholds`);
  for (const v of [lo, hi, ...rec, ...thr]) {
    if (typeof v !== 'number' || !Number.isFinite(Math.fround(v))) fail('quantizer values must be finite float32');
  }
  if (!(lo < hi)) fail(`clip_min ${lo} must be below clip_max ${hi}`);
  for (let i = 1; i < n; i++) {
    if (Math.fround(rec[i]) < Math.fround(rec[i - 1])) fail('reconstruction values must ascend');
  }
  for (let i = 1; i < n - 1; i++) if (Math.fround(thr[i]) < Math.fround(thr[i - 1])) fail('thresholds must ascend');
  return Float32Array.from(rec);
}

function decodeTruncatedUnary(data, coder, n, shape, reference, maxBins) {
  const [P, H, W] = planes(shape);
  const contexts = coder === BIN_CONTEXTS ? n - 1 : 3 * (n - 1);
  const dec = new BinDecoder(data, contexts);
  const levels = new Uint8Array(P * H * W);
  let bins = 0;
  for (let p = 0; p < P; p++) {
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const i = (p * H + y) * W + x;
        const left = x > 0 ? levels[i - 1] : 0;
        const above = y > 0 ? levels[i - W] : 0;
        const ref = coder === TEMPORAL_CONTEXTS ? reference[i] : 0;
        let k = 0;
        for (let b = 0; b <= n - 2; b++) {
          let ctx;
          if (coder === BIN_CONTEXTS) ctx = b;
          else if (coder === NEIGHBOUR_CONTEXTS) ctx = 3 * b + (left > b) + (above > b);
          else ctx = 3 * b + cmp3(ref, b);
          if (dec.bin(ctx) === 0) break;
          k += 1;
        }
        levels[i] = k;
        bins += k + 1;
        if (bins > maxBins) fail(`the payload decodes to more than ${maxBins} bins`);
      }
    }
  }
  return [levels, dec];
}

function decodeSigned(data, m, n, shape, maxBins) {
  const [P, H, W] = planes(shape);
  const dec = new BinDecoder(data, 12 + 6 * (n - 1));
  const levels = new Uint8Array(P * H * W);
  const upRoom = n - 1 - m;
  const both = m > 0 && upRoom > 0;
  let bins = 0;
  for (let p = 0; p < P; p++) {
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const i = (p * H + y) * W + x;
        const left = x > 0 ? levels[i - 1] : m;
        const above = y > 0 ? levels[i - W] : m;
        if (dec.bin((left !== m) + (above !== m)) === 0) {
          levels[i] = m;
          bins += 1;
        } else {
          const up = both ? dec.bin(3 + 3 * cmp3(left, m) + cmp3(above, m)) : m === 0 ? 1 : 0;
          const span = up === 1 ? upRoom - 1 : m - 1;
          const dl = Math.abs(left - m);
          const da = Math.abs(above - m);
          let mag = 0;
          for (let j = 0; j < span; j++) {
            if (dec.bin(12 + 3 * (up * (n - 1) + j) + (dl > j + 1) + (da > j + 1)) === 0) break;
            mag += 1;
          }
          levels[i] = up === 1 ? m + 1 + mag : m - 1 - mag;
          bins += mag + 3;
        }
        if (bins > maxBins) fail(`the payload decodes to more than ${maxBins} bins`);
      }
    }
  }
  return [levels, dec];
}

// Section 4.3: per plane a skip bin, then per element the change from the reference level.
function decodeInter(data, n, shape, reference, maxBins) {
  const [P, H, W] = planes(shape);
  const dec = new BinDecoder(data, 44);
  const E = P * H * W;
  const levels = new Uint8Array(E);
  const counts = new Array(n).fill(0);
  for (const r of reference) counts[r] += 1;
  let m = 0;
  for (let k = 1; k < n; k++) if (counts[k] > counts[m]) m = k;
  let bins = 0;
  let sPrev = 0;
  for (let p = 0; E > 0 && p < P; p++) {
    const s = dec.bin(sPrev);
    sPrev = s;
    bins += 1;
    if (bins > maxBins) fail(`the payload decodes to more than ${maxBins} bins`);
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const i = (p * H + y) * W + x;
        const r = reference[i];
        levels[i] = r;
        if (s === 1) continue;
        const dl = x > 0 ? levels[i - 1] - reference[i - 1] : 0;
        const da = y > 0 ? levels[i - W] - reference[i - W] : 0;
        bins += 1;
        if (dec.bin(2 + (dl !== 0) + (da !== 0) + 3 * Math.min(Math.abs(r - m), 2)) === 1) {
          const u = r > 0 && r < n - 1 ? dec.bin(11 + cmp3(dl + da, 0) + 3 * cmp3(r, m)) : r === 0 ? 1 : 0;
          const span = u === 1 ? n - 2 - r : r - 1;
          let mag = 0;
          for (let j = 0; j < span; j++) {
            if (dec.bin(20 + 3 * (2 * Math.min(j, 3) + u) + (Math.abs(dl) > 1) + (Math.abs(da) > 1)) === 0) break;
            mag += 1;
          }
          levels[i] = u === 1 ? r + 1 + mag : r - 1 - mag;
          bins += mag + 2;
        }
        if (bins > maxBins) fail(`the payload decodes to more than ${maxBins} bins`);
      }
    }
  }
  return [levels, dec];
}

function decodeTensor(tensor, referenceLevels = null, limits = DEFAULT_LIMITS) {
  const elements = checkShape(tensor.shape, limits);
  const reconstruction = checkQuantizer(tensor);
  const n = tensor.quantizer.levels;
  const coder = tensor.coder_value;
  if (![BIN_CONTEXTS, NEIGHBOUR_CONTEXTS, SIGNED_NEIGHBOUR_CONTEXTS, TEMPORAL_CONTEXTS].includes(coder)) {
    fail(`unknown entropy coder ${coder}`);
  }
  const inter = coder === TEMPORAL_CONTEXTS && tensor.coder_version === INTER_VERSION;
  if (tensor.coder_version !== CODER_VERSION && !inter) {
    fail(`coder version ${tensor.coder_version} is unknown for coder ${coder}`);
  }
  const payload = tensor.payload instanceof Uint8Array ? tensor.payload
    : new Uint8Array(Buffer.from(tensor.payload_base64, 'base64'));
  if (crc32(payload) !== tensor.payload_crc32) fail('the payload fails its CRC-32 check');
  const h = coder === SIGNED_NEIGHBOUR_CONTEXTS ? 1 : 0;
  const L = payload.length;
  if (L < h + 4) fail(`a ${L}-byte payload is truncated`);
  if (inter) {
    const codedPlanes = elements > 0 ? planes(tensor.shape)[0] : 0;
    if (codedPlanes > (L + 8) * 2600) fail(`a ${L}-byte payload cannot hold ${codedPlanes} planes`);
    if (L > 4 + 8 + Math.floor(((codedPlanes + elements * n) * 9 + 7) / 8)) fail(`a ${L}-byte payload is too long`);
  } else {
    if (elements > (L + 8) * 2600) fail(`a ${L}-byte payload cannot hold ${elements} elements`);
    if (L > h + 4 + 8 + Math.floor((elements * (n - 1) * 9 + 7) / 8)) fail(`a ${L}-byte payload is too long`);
  }
  if (coder === TEMPORAL_CONTEXTS) {
    if (referenceLevels == null) fail('TEMPORAL_CONTEXTS needs the reference levels');
    if (referenceLevels.length !== elements) fail('the reference has another shape');
    for (const r of referenceLevels) {
      if (!Number.isInteger(r) || r < 0 || r >= n) fail(`reference level ${r} out of range`);
    }
  } else if (referenceLevels != null) {
    fail('a reference is only used by TEMPORAL_CONTEXTS');
  }
  let levels;
  let dec;
  let streamLength;
  if (coder === SIGNED_NEIGHBOUR_CONTEXTS) {
    const m = payload[0];
    if (m >= n) fail(`side byte ${m} names no level of ${n}`);
    const stream = payload.subarray(1);
    streamLength = stream.length;
    [levels, dec] = decodeSigned(stream, m, n, tensor.shape, limits.maxBins);
  } else if (inter) {
    streamLength = L;
    [levels, dec] = decodeInter(payload, n, tensor.shape, referenceLevels, limits.maxBins);
  } else {
    streamLength = L;
    [levels, dec] = decodeTruncatedUnary(payload, coder, n, tensor.shape, referenceLevels, limits.maxBins);
  }
  if (dec.pos !== streamLength) {
    fail(`the payload does not end where its last bin does (${dec.pos} of ${streamLength} bytes)`);
  }
  if (!(dec.code < dec.range)) fail('the payload does not terminate cleanly');
  const values = new Float32Array(levels.length);
  for (let i = 0; i < levels.length; i++) values[i] = reconstruction[levels[i]];
  return { levels, values };
}

function checkFolder(folder) {
  const files = fs.readdirSync(folder).filter((f) => f.endsWith('.json')).sort();
  let decoded = 0;
  let refused = 0;
  const problems = [];
  for (const file of files) {
    const vector = JSON.parse(fs.readFileSync(path.join(folder, file), 'utf8'));
    let result = null;
    let error = null;
    try {
      const limits = vector.limits
        ? { maxElements: vector.limits.max_elements, maxBins: vector.limits.max_bins } : DEFAULT_LIMITS;
      result = decodeTensor(vector.tensor, vector.reference_levels, limits);
    } catch (e) {
      if (!(e instanceof DecodeError)) throw e;
      error = e;
    }
    if (vector.expect_error != null) {
      if (error) refused += 1;
      else problems.push(`${file}: decoded, but must be refused (${vector.expect_error})`);
      continue;
    }
    if (error) {
      problems.push(`${file}: refused: ${error.message}`);
      continue;
    }
    const want = vector.levels;
    const bad = want.length !== result.levels.length ? 0 : want.findIndex((k, i) => result.levels[i] !== k);
    const badValue = vector.values.findIndex((v, i) => result.values[i] !== v);
    if (want.length !== result.levels.length || bad >= 0) problems.push(`${file}: levels differ at ${bad}`);
    else if (vector.values.length !== result.values.length || badValue >= 0) {
      problems.push(`${file}: values differ at ${badValue}`);
    }
    else decoded += 1;
  }
  for (const p of problems) console.log(`FAIL ${p}`);
  console.log(`${files.length} vectors: ${decoded} decoded exactly, ${refused} refused as expected, `
    + `${problems.length} failed`);
  return problems.length === 0 && files.length > 0;
}

module.exports = { decodeTensor, crc32, DecodeError, DEFAULT_LIMITS };

if (require.main === module) {
  if (process.argv.length !== 3) {
    console.error('usage: node decode.js <folder of conformance vectors (tests/codec/conformance)>');
    process.exit(2);
  }
  process.exit(checkFolder(process.argv[2]) ? 0 : 1);
}
