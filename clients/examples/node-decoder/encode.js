#!/usr/bin/env node
// The encoder half of docs/BITSTREAM.md (sections 3.1, 3.3, 4), written from the document only: it re-encodes
// the levels of every conformance vector and checks the payload bytes, so the document's encoder description
// (range encoder, carry handling, flush, the signed coder's pivot choice) is proven complete too.
//
// As a module: encodeLevels(levels, shape, n, coder, referenceLevels, version = 1) -> Uint8Array payload.
// As a command: node encode.js <folder of conformance vectors>.
'use strict';

const fs = require('fs');
const path = require('path');

const BIN_CONTEXTS = 1;
const NEIGHBOUR_CONTEXTS = 2;
const SIGNED_NEIGHBOUR_CONTEXTS = 3;
const TEMPORAL_CONTEXTS = 4;
const TWO32 = 4294967296;

class BinEncoder {
  constructor(contexts) {
    this.fast = new Int32Array(contexts).fill(16384);
    this.slow = new Int32Array(contexts).fill(16384);
    this.low = 0; // up to 33 bits: exact in a double
    this.range = 0xffffffff;
    this.cache = 0;
    this.pending = 0;
    this.out = [];
  }

  shiftLow() {
    if (this.low < 0xff000000 || this.low > 0xffffffff) {
      const carry = this.low >= TWO32 ? 1 : 0;
      this.out.push((this.cache + carry) & 0xff);
      for (; this.pending > 0; this.pending--) this.out.push((0xff + carry) & 0xff);
      this.cache = Math.floor(this.low / 2 ** 24) & 0xff;
    } else {
      this.pending += 1;
    }
    this.low = (this.low % 2 ** 24) * 256;
  }

  bin(bit, ctx) {
    const fast = this.fast[ctx];
    const slow = this.slow[ctx];
    const bound = (this.range >>> 15) * ((fast + slow) >> 1);
    if (bit === 0) {
      this.range = bound;
      this.fast[ctx] = fast + ((32752 - fast) >> 4);
      this.slow[ctx] = slow + ((32640 - slow) >> 7);
    } else {
      this.low += bound;
      this.range -= bound;
      this.fast[ctx] = fast + ((16 - fast) >> 4);
      this.slow[ctx] = slow + ((128 - slow) >> 7);
    }
    while (this.range < 2 ** 24) {
      this.range *= 256;
      this.shiftLow();
    }
  }

  finish() {
    for (let i = 0; i < 5; i++) this.shiftLow();
    return this.out.slice(1);
  }
}

function planes(shape) {
  if (shape.length === 0) return [1, 1, 1];
  if (shape.length === 1) return [1, 1, shape[0]];
  let p = 1;
  for (let i = 0; i < shape.length - 2; i++) p *= shape[i];
  return [p, shape[shape.length - 2], shape[shape.length - 1]];
}

const cmp3 = (a, b) => (a < b ? 0 : a === b ? 1 : 2);

// Section 4.3: TEMPORAL_CONTEXTS version 2.
function encodeInter(levels, shape, n, reference) {
  const [P, H, W] = planes(shape);
  const counts = new Array(n).fill(0);
  for (const r of reference) counts[r] += 1;
  let m = 0;
  for (let k = 1; k < n; k++) if (counts[k] > counts[m]) m = k;
  const enc = new BinEncoder(44);
  let sPrev = 0;
  for (let p = 0; levels.length > 0 && p < P; p++) {
    let s = 1;
    for (let i = p * H * W; i < (p + 1) * H * W; i++) if (levels[i] !== reference[i]) s = 0;
    enc.bin(s, sPrev);
    sPrev = s;
    if (s === 1) continue;
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const i = (p * H + y) * W + x;
        const k = levels[i];
        const r = reference[i];
        const dl = x > 0 ? levels[i - 1] - reference[i - 1] : 0;
        const da = y > 0 ? levels[i - W] - reference[i - W] : 0;
        enc.bin(k !== r ? 1 : 0, 2 + (dl !== 0) + (da !== 0) + 3 * Math.min(Math.abs(r - m), 2));
        if (k === r) continue;
        const u = k > r ? 1 : 0;
        if (r > 0 && r < n - 1) enc.bin(u, 11 + cmp3(dl + da, 0) + 3 * cmp3(r, m));
        const span = u === 1 ? n - 2 - r : r - 1;
        const mag = Math.abs(k - r) - 1;
        for (let j = 0; j < span; j++) {
          const bit = mag > j ? 1 : 0;
          enc.bin(bit, 20 + 3 * (2 * Math.min(j, 3) + u) + (Math.abs(dl) > 1) + (Math.abs(da) > 1));
          if (bit === 0) break;
        }
      }
    }
  }
  return Uint8Array.from(enc.finish());
}

function encodeLevels(levels, shape, n, coder, reference = null, version = 1) {
  if (coder === TEMPORAL_CONTEXTS && version === 2) return encodeInter(levels, shape, n, reference);
  const [P, H, W] = planes(shape);
  if (coder !== SIGNED_NEIGHBOUR_CONTEXTS) {
    const enc = new BinEncoder(coder === BIN_CONTEXTS ? n - 1 : 3 * (n - 1));
    for (let p = 0; p < P; p++) {
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < W; x++) {
          const i = (p * H + y) * W + x;
          const k = levels[i];
          const left = x > 0 ? levels[i - 1] : 0;
          const above = y > 0 ? levels[i - W] : 0;
          for (let b = 0; b <= n - 2; b++) {
            let ctx = b;
            if (coder === NEIGHBOUR_CONTEXTS) ctx = 3 * b + (left > b) + (above > b);
            else if (coder === TEMPORAL_CONTEXTS) ctx = 3 * b + cmp3(reference[i], b);
            const bit = k > b ? 1 : 0;
            enc.bin(bit, ctx);
            if (bit === 0) break;
          }
        }
      }
    }
    return Uint8Array.from(enc.finish());
  }
  // Pivot: the most frequent level, the lowest on a tie, 0 when there is no element.
  const counts = new Array(n).fill(0);
  for (const k of levels) counts[k] += 1;
  let m = 0;
  for (let k = 1; k < n; k++) if (counts[k] > counts[m]) m = k;
  const upRoom = n - 1 - m;
  const both = m > 0 && upRoom > 0;
  const enc = new BinEncoder(12 + 6 * (n - 1));
  for (let p = 0; p < P; p++) {
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const i = (p * H + y) * W + x;
        const k = levels[i];
        const left = x > 0 ? levels[i - 1] : m;
        const above = y > 0 ? levels[i - W] : m;
        enc.bin(k !== m ? 1 : 0, (left !== m) + (above !== m));
        if (k === m) continue;
        const up = k > m ? 1 : 0;
        if (both) enc.bin(up, 3 + 3 * cmp3(left, m) + cmp3(above, m));
        const mag = Math.abs(k - m) - 1;
        const span = up === 1 ? upRoom - 1 : m - 1;
        for (let j = 0; j < span; j++) {
          const bit = mag > j ? 1 : 0;
          enc.bin(bit, 12 + 3 * (up * (n - 1) + j) + (Math.abs(left - m) > j + 1) + (Math.abs(above - m) > j + 1));
          if (bit === 0) break;
        }
      }
    }
  }
  return Uint8Array.from([m, ...enc.finish()]);
}

function checkFolder(folder) {
  const files = fs.readdirSync(folder).filter((f) => f.endsWith('.json')).sort();
  let same = 0;
  const problems = [];
  for (const file of files) {
    const vector = JSON.parse(fs.readFileSync(path.join(folder, file), 'utf8'));
    if (vector.expect_error != null) continue;
    const t = vector.tensor;
    const got = Buffer.from(encodeLevels(vector.levels, t.shape, t.quantizer.levels, t.coder_value,
      vector.reference_levels, t.coder_version)).toString('base64');
    if (got === t.payload_base64) same += 1;
    else problems.push(`FAIL ${file}: the payload differs`);
  }
  for (const p of problems) console.log(p);
  console.log(`${same} re-encoded byte for byte, ${problems.length} differ`);
  return problems.length === 0 && same > 0;
}

module.exports = { encodeLevels };

if (require.main === module) {
  if (process.argv.length !== 3) {
    console.error('usage: node encode.js <folder of conformance vectors (tests/codec/conformance)>');
    process.exit(2);
  }
  process.exit(checkFolder(process.argv[2]) ? 0 : 1);
}
