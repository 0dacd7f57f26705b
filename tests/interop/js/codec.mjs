// A small, independent codec for the gpunet wire formats, written from docs/spec.md.
//
// It decodes and re-encodes offer/withdrawal envelopes, heartbeats, checkpoints, lease stream messages and
// offers-sync frames, checks EIP-712 (secp256k1) and ed25519 signatures, opens and seals the job-spec box, runs the
// offer/withdrawal validation rules and the sync pager. Crypto primitives come from the @noble packages already
// installed for js-libp2p; everything protocol-specific is here.

import { keccak_256 } from '@noble/hashes/sha3';
import { sha256 } from '@noble/hashes/sha2';
import { secp256k1 } from '@noble/curves/secp256k1';
import { ed25519, x25519, edwardsToMontgomeryPub, edwardsToMontgomeryPriv } from '@noble/curves/ed25519';
import { xsalsa20poly1305, hsalsa } from '@noble/ciphers/salsa';

// ---------------------------------------------------------------------------------------------------------------
// Bytes

export class DecodeError extends Error {
  constructor(reason) {
    super(reason);
    this.reason = reason;
  }
}

export const fromHex = (h) => {
  if (!h.startsWith('0x') || h.length % 2) throw new Error(`bad hex ${h.slice(0, 20)}`);
  return Uint8Array.from(Buffer.from(h.slice(2), 'hex'));
};
export const toHex = (b) => '0x' + Buffer.from(b).toString('hex');
export const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let i = 0;
  for (const p of parts) {
    out.set(p, i);
    i += p.length;
  }
  return out;
};
export const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
export const compare = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b));
export const keccak = (b) => keccak_256(b);
const ascii = (s) => Uint8Array.from(Buffer.from(s, 'latin1'));
const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export function beInt(b) {
  let n = 0n;
  for (const x of b) n = (n << 8n) | BigInt(x);
  return n;
}

export function beBytes(n, size) {
  n = BigInt(n);
  if (n < 0n || n >= 1n << BigInt(8 * size)) throw new Error(`integer ${n} does not fit ${size} bytes`);
  const out = new Uint8Array(size);
  for (let i = size - 1; i >= 0; i--) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return out;
}

const word = (n) => beBytes(n, 32);
const addrWord = (a) => concat(new Uint8Array(12), a);

// ---------------------------------------------------------------------------------------------------------------
// EIP-712 and signatures

const SECP_N = secp256k1.CURVE.n;
export const TYPES = {
  EIP712Domain: 'EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)',
  Offer:
    'Offer(address provider,uint256 nonce,bytes32 gpuModel,uint32 gpuCount,uint32 vramMiB,uint256 pricePerGpuSecond,' +
    'uint64 minDuration,uint64 maxDuration,uint64 expiresAt,bytes32 specHash)',
  UsageCheckpoint:
    'UsageCheckpoint(uint256 leaseId,uint64 seq,uint64 cumulativeGpuSeconds,bytes32 heartbeatHead,uint64 timestamp)',
  OfferWithdrawal: 'OfferWithdrawal(address provider,uint256 nonceBelow,uint64 timestamp)',
  JobSpec: 'JobSpec(uint256 leaseId,bytes32 specHash,bytes32 consumerNodeKey)',
};
export const typeHash = (name) => keccak(ascii(TYPES[name]));

export function domainSeparator(chainId, escrow) {
  return keccak(concat(typeHash('EIP712Domain'), keccak(ascii('gpunet LeaseEscrow')), keccak(ascii('1')),
    word(chainId), addrWord(escrow)));
}

export const digest712 = (separator, structHash) => keccak(concat(Uint8Array.of(0x19, 0x01), separator, structHash));

export function offerStructHash(o) {
  return keccak(concat(typeHash('Offer'), addrWord(o.provider), word(o.nonce), o.gpuModel, word(o.gpuCount),
    word(o.vramMiB), word(o.pricePerGpuSecond), word(o.minDuration), word(o.maxDuration), word(o.expiresAt),
    o.specHash));
}

export const withdrawalStructHash = (w) =>
  keccak(concat(typeHash('OfferWithdrawal'), addrWord(w.provider), word(w.nonceBelow), word(w.timestamp)));

export const checkpointStructHash = (c) =>
  keccak(concat(typeHash('UsageCheckpoint'), word(c.leaseId), word(c.seq), word(c.cumulativeGpuSeconds),
    c.heartbeatHead, word(c.timestamp)));

export const jobSpecStructHash = (leaseId, specHash, nodeKey) =>
  keccak(concat(typeHash('JobSpec'), word(leaseId), specHash, nodeKey));

export class SignatureError extends Error {}

/** The 20-byte signer of a 65-byte r||s||v wallet signature; v 27/28, 0 < r < n, 0 < s <= n/2 only. */
export function recoverSigner(digest, sig) {
  if (sig.length !== 65) throw new SignatureError('length');
  const v = sig[64];
  if (v !== 27 && v !== 28) throw new SignatureError('v not 27/28');
  const r = beInt(sig.subarray(0, 32));
  const s = beInt(sig.subarray(32, 64));
  if (!(r > 0n && r < SECP_N) || !(s > 0n && s <= SECP_N / 2n)) throw new SignatureError('r/s out of range');
  let pub;
  try {
    pub = new secp256k1.Signature(r, s).addRecoveryBit(v - 27).recoverPublicKey(digest).toRawBytes(false);
  } catch (e) {
    throw new SignatureError(`does not recover: ${e.message}`);
  }
  return keccak(pub.subarray(1)).subarray(12);
}

export const addressOf = (privateKey) => keccak(secp256k1.getPublicKey(privateKey, false).subarray(1)).subarray(12);

// ---------------------------------------------------------------------------------------------------------------
// Offer spec (canonical JSON)

const TOKEN = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,31}$/;
const BENCH = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const SPEC_KEYS = ['benchmarks', 'cpu_cores', 'cuda_version', 'driver_version', 'interconnect', 'ram_gib', 'region',
  'simulated'];

export function encodeSpec(s) {
  const bench = Object.keys(s.benchmarks).sort().map((k) => `"${k}":${s.benchmarks[k]}`).join(',');
  return ascii(`{"benchmarks":{${bench}},"cpu_cores":${s.cpu_cores},"cuda_version":"${s.cuda_version}",` +
    `"driver_version":"${s.driver_version}","interconnect":"${s.interconnect}","ram_gib":${s.ram_gib},` +
    `"region":"${s.region}","simulated":${s.simulated}}`);
}

/** Strict spec decoding: ASCII JSON object, exactly the eight keys, typed values, byte-identical re-encoding. */
export function decodeSpec(bytes) {
  if (bytes.length > 2048) throw new DecodeError('spec_too_long');
  if (bytes.some((b) => b >= 0x80)) throw new DecodeError('spec_not_json');
  const text = Buffer.from(bytes).toString('latin1');
  let obj;
  try {
    // integer literals become BigInt (scores reach 2^63); other numbers stay floats and fail the type checks
    const marked = text.replace(/([:,[]\s*)(-?\d+)(?=\s*[,}\]])/g, '$1{"$int":"$2"}');
    obj = JSON.parse(marked, (k, v) => (v && typeof v === 'object' && '$int' in v ? BigInt(v.$int) : v));
  } catch {
    throw new DecodeError('spec_not_json');
  }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) throw new DecodeError('spec_bad_keys');
  const keys = Object.keys(obj).sort();
  if (keys.length !== SPEC_KEYS.length || keys.some((k, i) => k !== SPEC_KEYS[i])) throw new DecodeError('spec_bad_keys');
  const bad = () => new DecodeError('spec_bad_field');
  const b = obj.benchmarks;
  if (b === null || typeof b !== 'object' || Array.isArray(b)) throw bad();
  for (const k of ['region', 'driver_version', 'cuda_version', 'interconnect']) {
    if (typeof obj[k] !== 'string' || !TOKEN.test(obj[k])) throw bad();
  }
  for (const k of ['cpu_cores', 'ram_gib']) {
    if (typeof obj[k] !== 'bigint' || obj[k] < 0n || obj[k] >= 1n << 32n) throw bad();
  }
  if (typeof obj.simulated !== 'boolean') throw bad();
  const names = Object.keys(b);
  if (names.length > 32) throw bad();
  for (const k of names) {
    if (!BENCH.test(k) || typeof b[k] !== 'bigint' || b[k] < 0n || b[k] >= 1n << 63n) throw bad();
  }
  if (!equal(encodeSpec(obj), bytes)) throw new DecodeError('spec_not_canonical');
  return obj;
}

// ---------------------------------------------------------------------------------------------------------------
// Envelopes, offer records, withdrawal records

export const MAX_MESSAGE = 4096;
const ENVELOPE = 56;
const OFFER_FIXED = 250;
const WITHDRAWAL = 128;

function reader(bytes) {
  let pos = 0;
  return {
    take(n) {
      const out = bytes.subarray(pos, pos + n);
      pos += n;
      return out;
    },
    int(n) {
      return beInt(this.take(n));
    },
  };
}

export function decodeEnvelope(data) {
  if (data.length > MAX_MESSAGE) throw new DecodeError('oversize');
  if (data.length < ENVELOPE) throw new DecodeError('truncated');
  if (data[0] !== 0x47 || data[1] !== 0x4e) throw new DecodeError('bad_magic'); // "GN"
  if (data[2] !== 1) throw new DecodeError('unknown_version');
  if (data[3] !== 1 && data[3] !== 2) throw new DecodeError('unknown_type');
  return { type: data[3], chainId: beInt(data.subarray(4, 36)), escrow: data.subarray(36, 56),
    body: data.subarray(ENVELOPE) };
}

export function decodeOfferRecord(body) {
  if (body.length < OFFER_FIXED) throw new DecodeError('truncated');
  if (body[0] !== 0x47 || body[1] !== 0x4f) throw new DecodeError('bad_magic'); // "GO"
  if (body[2] !== 1) throw new DecodeError('unknown_version');
  const r = reader(body.subarray(3));
  const o = {
    provider: r.take(20), nonce: r.int(32), gpuModel: r.take(32), gpuCount: r.int(4), vramMiB: r.int(4),
    pricePerGpuSecond: r.int(32), minDuration: r.int(8), maxDuration: r.int(8), expiresAt: r.int(8),
    specHash: r.take(32), signature: r.take(65),
  };
  const specLen = Number(r.int(2));
  if (specLen > 2048) throw new DecodeError('spec_too_long');
  if (body.length !== OFFER_FIXED + specLen) {
    throw new DecodeError(body.length < OFFER_FIXED + specLen ? 'truncated' : 'trailing');
  }
  o.specBytes = body.subarray(OFFER_FIXED);
  o.spec = specLen ? decodeSpec(o.specBytes) : null;
  return o;
}

export function decodeWithdrawalRecord(body) {
  if (body.length !== WITHDRAWAL) throw new DecodeError(body.length < WITHDRAWAL ? 'truncated' : 'trailing');
  if (body[0] !== 0x47 || body[1] !== 0x57) throw new DecodeError('bad_magic'); // "GW"
  if (body[2] !== 1) throw new DecodeError('unknown_version');
  const r = reader(body.subarray(3));
  return { provider: r.take(20), nonceBelow: r.int(32), timestamp: r.int(8), signature: r.take(65) };
}

export function decodeGossip(data) {
  const env = decodeEnvelope(data);
  const record = env.type === 1 ? decodeOfferRecord(env.body) : decodeWithdrawalRecord(env.body);
  return { env, record };
}

const envelopeHeader = (type, chainId, escrow) =>
  concat(ascii('GN'), Uint8Array.of(1, type), word(chainId), escrow);

export function encodeOfferMessage(chainId, escrow, o, specBytes) {
  return concat(envelopeHeader(1, chainId, escrow), ascii('GO'), Uint8Array.of(1), o.provider, word(o.nonce),
    o.gpuModel, beBytes(o.gpuCount, 4), beBytes(o.vramMiB, 4), word(o.pricePerGpuSecond), beBytes(o.minDuration, 8),
    beBytes(o.maxDuration, 8), beBytes(o.expiresAt, 8), o.specHash, o.signature, beBytes(specBytes.length, 2),
    specBytes);
}

export function encodeWithdrawalMessage(chainId, escrow, w) {
  return concat(envelopeHeader(2, chainId, escrow), ascii('GW'), Uint8Array.of(1), w.provider, word(w.nonceBelow),
    beBytes(w.timestamp, 8), w.signature);
}

/** Canonical gpuModel: 32 bytes, non-empty UTF-8 name without NUL, then only zeros. Returns the name or null. */
export function gpuModelName(model) {
  if (model.length !== 32) return null;
  let end = 32;
  while (end > 0 && model[end - 1] === 0) end--;
  const name = model.subarray(0, end);
  if (end === 0 || name.includes(0)) return null;
  try {
    return utf8Strict.decode(name);
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Offer / withdrawal validation (docs/spec.md, "Offer validation")

const REJECT = 'reject';
const IGNORE = 'ignore';
const verdict = (v, reason) => ({ verdict: v, reason });

/** ctx: { now, chainId, escrow, rules, providers: {hexAddr: {registered, freeStake, minNonce}}, book: [...] } */
export function validateGossip(data, ctx) {
  if (data.length > ctx.rules.maxMessageBytes) return verdict(REJECT, 'oversize');
  const asWithdrawal = data.length >= 4 && data[3] === 2;
  let env;
  let rec;
  try {
    env = decodeEnvelope(data);
    rec = asWithdrawal ? decodeWithdrawalRecord(env.body) : decodeOfferRecord(env.body);
  } catch (e) {
    if (!(e instanceof DecodeError)) throw e;
    return verdict(REJECT, e.reason === 'oversize' ? 'oversize' : 'malformed');
  }
  if (env.chainId !== ctx.chainId || !equal(env.escrow, ctx.escrow)) return verdict(REJECT, 'wrong_domain');
  const p = ctx.providers[toHex(rec.provider)] ?? { registered: false, freeStake: 0n, minNonce: 0n };
  const sep = domainSeparator(ctx.chainId, ctx.escrow);
  const signedBy = (structHash) => {
    try {
      return equal(recoverSigner(digest712(sep, structHash), rec.signature), rec.provider);
    } catch (e) {
      if (e instanceof SignatureError) return false;
      throw e;
    }
  };
  const now = ctx.now;
  if (asWithdrawal) {
    if (rec.nonceBelow === 0n) return verdict(REJECT, 'field_out_of_range');
    if (rec.timestamp > now + ctx.rules.maxClockSkew) return verdict(IGNORE, 'too_far_future');
    if (rec.timestamp + ctx.rules.withdrawalMaxAge < now) return verdict(IGNORE, 'stale');
    if (rec.nonceBelow <= p.minNonce) return verdict(IGNORE, 'no_effect');
    if (!p.registered) return verdict(IGNORE, 'provider_not_registered');
    if (!signedBy(withdrawalStructHash(rec))) return verdict(REJECT, 'bad_signature');
    if (ctx.rules.rateBurst < 1) return verdict(IGNORE, 'rate_limited');
    return { verdict: 'accept', reason: 'ok' };
  }
  const o = rec;
  if (o.gpuCount === 0n || o.vramMiB === 0n || o.pricePerGpuSecond === 0n || o.minDuration === 0n ||
      o.minDuration > o.maxDuration || gpuModelName(o.gpuModel) === null ||
      o.pricePerGpuSecond * o.gpuCount * o.maxDuration >= 1n << 248n) {
    return verdict(REJECT, 'field_out_of_range');
  }
  if (!equal(keccak(o.specBytes), o.specHash)) return verdict(REJECT, 'spec_hash_mismatch');
  if (o.expiresAt <= now) return verdict(IGNORE, 'expired');
  if (o.expiresAt > now + ctx.rules.maxTtl) return verdict(IGNORE, 'too_far_future');
  const id = offerStructHash(o);
  if (ctx.book.some((e) => equal(e.offerId, id))) return verdict(IGNORE, 'duplicate');
  const held = ctx.book.find((e) => equal(e.provider, o.provider) && equal(e.gpuModel, o.gpuModel));
  if (held && (held.nonce > o.nonce || (held.nonce === o.nonce && compare(held.offerId, id) < 0))) {
    return verdict(IGNORE, 'superseded');
  }
  if (o.nonce < p.minNonce) return verdict(IGNORE, 'nonce_cancelled');
  if (!p.registered) return verdict(IGNORE, 'provider_not_registered');
  const bps = ctx.rules.collateralBps;
  const minimalDeposit = o.pricePerGpuSecond * o.gpuCount * o.minDuration;
  const required = ctx.rules.minFreeStake + (bps ? (minimalDeposit * bps + 9999n) / 10000n : 0n);
  if (p.freeStake < required) return verdict(IGNORE, 'insufficient_stake');
  if (!signedBy(id)) return verdict(REJECT, 'bad_signature');
  if (ctx.rules.rateBurst < 1) return verdict(IGNORE, 'rate_limited'); // a fresh bucket holds rateBurst tokens
  return { verdict: 'accept', reason: 'ok' };
}

// ---------------------------------------------------------------------------------------------------------------
// Heartbeats

export const HEARTBEAT_BODY = 160;
export const HEARTBEAT_SIGNED = 224;

export function decodeUsage(u) {
  if (u.length !== 71) throw new DecodeError('usage size');
  if (u[0] & ~1) throw new DecodeError('usage flags');
  const n = Math.min(u[1], 11);
  const used = 2 + 6 * n;
  if (u.subarray(used).some((x) => x !== 0)) throw new DecodeError('usage padding');
  const devices = [];
  for (let p = 2; p < used; p += 6) {
    if (u[p] > 100) throw new DecodeError('utilisation above 100');
    devices.push({ utilisationPct: u[p], memoryMiB: Number(beInt(u.subarray(p + 1, p + 4))),
      powerW: Number(beInt(u.subarray(p + 4, p + 6))) });
  }
  return { simulated: (u[0] & 1) === 1, deviceCount: u[1], devices };
}

export function encodeUsage(s) {
  const out = new Uint8Array(71);
  out[0] = s.simulated ? 1 : 0;
  out[1] = s.deviceCount;
  s.devices.forEach((d, i) => {
    const p = 2 + 6 * i;
    out[p] = d.utilisationPct;
    out.set(beBytes(d.memoryMiB, 3), p + 1);
    out.set(beBytes(d.powerW, 2), p + 4);
  });
  return out;
}

export function decodeHeartbeatBody(body) {
  if (body.length !== HEARTBEAT_BODY) throw new DecodeError('heartbeat body size');
  if (body[0] !== 1) throw new DecodeError('heartbeat version');
  const r = reader(body.subarray(1));
  const hb = { leaseId: r.int(32), seq: r.int(8), timeMs: r.int(8), gpuSeconds: r.int(8), prevHash: r.take(32),
    usage: r.take(71) };
  if (hb.seq === 0n) throw new DecodeError('heartbeat seq 0');
  if ((hb.seq === 1n) !== hb.prevHash.every((x) => x === 0)) throw new DecodeError('prevHash zero iff seq 1');
  hb.usageDecoded = decodeUsage(hb.usage);
  return hb;
}

/** Verify the ed25519 signature by nodeKey, then decode strictly. */
export function verifyHeartbeat(signed, nodeKey) {
  if (signed.length !== HEARTBEAT_SIGNED) throw new DecodeError('heartbeat size');
  const body = signed.subarray(0, HEARTBEAT_BODY);
  const sig = signed.subarray(HEARTBEAT_BODY);
  let ok = false;
  try {
    ok = ed25519.verify(sig, body, nodeKey, { zip215: false });
  } catch {
    ok = false;
  }
  if (!ok) throw new DecodeError('heartbeat signature');
  const hb = decodeHeartbeatBody(body);
  hb.signature = sig;
  return hb;
}

export const encodeHeartbeatBody = (hb) =>
  concat(Uint8Array.of(1), word(hb.leaseId), beBytes(hb.seq, 8), beBytes(hb.timeMs, 8), beBytes(hb.gpuSeconds, 8),
    hb.prevHash, hb.usage);

export const heartbeatHash = (signed) => keccak(signed);

// ---------------------------------------------------------------------------------------------------------------
// Sealed job spec box (NaCl crypto_box from one ed25519 node key to another)

function u32le(bytes) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Uint32Array.from({ length: bytes.length / 4 }, (_, i) => dv.getUint32(4 * i, true));
}

function fromU32le(words) {
  const out = new Uint8Array(words.length * 4);
  const dv = new DataView(out.buffer);
  words.forEach((w, i) => dv.setUint32(4 * i, w, true));
  return out;
}

/** crypto_box_beforenm: HSalsa20(X25519(own, peer), 16 zero bytes), with both keys mapped from ed25519. */
export function boxKey(ownSeed, peerNodeKey) {
  const shared = x25519.getSharedSecret(edwardsToMontgomeryPriv(ownSeed), edwardsToMontgomeryPub(peerNodeKey));
  const out = new Uint32Array(8);
  hsalsa(u32le(ascii('expand 32-byte k')), u32le(shared), new Uint32Array(4), out);
  return fromU32le(out);
}

export function sealBox(plaintext, senderSeed, recipientNodeKey, nonce) {
  return concat(nonce, xsalsa20poly1305(boxKey(senderSeed, recipientNodeKey), nonce).encrypt(plaintext));
}

export function openBox(sealed, recipientSeed, senderNodeKey) {
  if (sealed.length < 40) throw new DecodeError('sealed payload too short');
  const nonce = sealed.subarray(0, 24);
  try {
    return xsalsa20poly1305(boxKey(recipientSeed, senderNodeKey), nonce).decrypt(sealed.subarray(24));
  } catch {
    throw new DecodeError('sealed payload does not open');
  }
}

/** Open a JOB_SPEC's sealed box: returns {signature, jobJson}; the lease id inside must be the message's. */
export function openJobSpec(leaseId, sealed, recipientSeed, senderNodeKey) {
  const plain = openBox(sealed, recipientSeed, senderNodeKey);
  if (plain.length < 32 || beInt(plain.subarray(0, 32)) !== leaseId) throw new DecodeError('another lease');
  return { plaintext: plain, signature: plain.subarray(32, 97), jobJson: plain.subarray(97) };
}

// ---------------------------------------------------------------------------------------------------------------
// Lease stream messages

export const MSG_TYPES = ['', 'JOB_SPEC', 'JOB_RESULT', 'HEARTBEAT', 'CHECKPOINT', 'ACK', 'ERROR', 'LOG'];
const MAX_LOG_CHUNK = 49152;
const MAX_OUTCOME_FIELD = 128;
export const ERROR_CODES = ['', 'MALFORMED', 'UNKNOWN_LEASE', 'HEARTBEAT_REJECTED', 'CHECKPOINT_REJECTED',
  'JOB_SPEC_REJECTED', 'INTERNAL'];
const MAX_LEASE_MESSAGE = 65536;

function text(bytes) {
  try {
    return utf8Strict.decode(bytes);
  } catch {
    throw new DecodeError('invalid UTF-8');
  }
}

function refType(code) {
  if (!MSG_TYPES[code]) throw new DecodeError('unknown ref type');
  return MSG_TYPES[code];
}

export function decodeLeaseMessage(data) {
  if (data.length > MAX_LEASE_MESSAGE) throw new DecodeError('too large');
  if (data.length < 34) throw new DecodeError('short header');
  if (data[0] !== 1) throw new DecodeError('version');
  const type = MSG_TYPES[data[1]];
  if (!type) throw new DecodeError('unknown type');
  const leaseRaw = data.subarray(2, 34);
  const leaseId = beInt(leaseRaw);
  const body = data.subarray(34);
  const exact = (n) => {
    if (body.length !== n) throw new DecodeError(`${type} body length`);
  };
  const r = reader(body);
  switch (type) {
    case 'JOB_SPEC': {
      if (body.length < 4) throw new DecodeError('job spec short');
      const n = Number(r.int(4));
      if (n < 72 || n > 60072) throw new DecodeError('sealed size');
      exact(4 + n);
      return { type, leaseId, sealed: r.take(n) };
    }
    case 'JOB_RESULT': {
      if (body.length < 7) throw new DecodeError('job result short');
      const exitCode = new DataView(body.buffer, body.byteOffset, 4).getInt32(0, false);
      const flags = body[4];
      const n = Number(beInt(body.subarray(5, 7)));
      if (flags & ~3) throw new DecodeError('flags');
      if (n > 4096) throw new DecodeError('log too long');
      if (body.length < 7 + n) throw new DecodeError('log tail truncated');
      const logTail = text(body.subarray(7, 7 + n));
      let at = 7 + n;
      const ascii = () => {
        if (at >= body.length) throw new DecodeError('outcome missing');
        const len = body[at];
        if (len > MAX_OUTCOME_FIELD || at + 1 + len > body.length) throw new DecodeError('outcome truncated');
        const raw = body.subarray(at + 1, at + 1 + len);
        if (raw.some((c) => c < 0x20 || c > 0x7e)) throw new DecodeError('outcome not printable ASCII');
        at += 1 + len;
        return String.fromCharCode(...raw);
      };
      let failure = '';
      let imageDigest = '';
      if (flags & 2) {
        failure = ascii();
        imageDigest = ascii();
        if (!failure && !imageDigest) throw new DecodeError('outcome flag with no outcome');
      }
      exact(at);
      return { type, leaseId, exitCode, simulated: (flags & 1) === 1, logTail, failure, imageDigest };
    }
    case 'LOG': {
      if (body.length < 18) throw new DecodeError('log short');
      const n = Number(beInt(body.subarray(16, 18)));
      if (n < 1 || n > MAX_LOG_CHUNK) throw new DecodeError('log chunk size');
      exact(18 + n);
      return { type, leaseId, seq: beInt(body.subarray(0, 8)), dropped: beInt(body.subarray(8, 16)),
        text: text(body.subarray(18)) };
    }
    case 'HEARTBEAT':
      exact(224);
      if (!equal(body.subarray(1, 33), leaseRaw)) throw new DecodeError('heartbeat lease id');
      return { type, leaseId, heartbeat: body };
    case 'CHECKPOINT':
      exact(121);
      return { type, leaseId, seq: r.int(8), cumulativeGpuSeconds: r.int(8), heartbeatHead: r.take(32),
        timestamp: r.int(8), signature: r.take(65) };
    case 'ACK':
      exact(9);
      return { type, leaseId, refType: refType(body[0]), refSeq: beInt(body.subarray(1, 9)) };
    default: {
      if (body.length < 13) throw new DecodeError('error short');
      const ref = refType(body[0]);
      const code = Number(beInt(body.subarray(9, 11)));
      const n = Number(beInt(body.subarray(11, 13)));
      if (n > 256) throw new DecodeError('error message too long');
      exact(13 + n);
      if (!ERROR_CODES[code]) throw new DecodeError('unknown error code');
      return { type, leaseId, refType: ref, refSeq: beInt(body.subarray(1, 9)), code: ERROR_CODES[code],
        message: text(body.subarray(13)) };
    }
  }
}

export function encodeLeaseMessage(m) {
  const head = concat(Uint8Array.of(1, MSG_TYPES.indexOf(m.type)), word(m.leaseId));
  switch (m.type) {
    case 'JOB_SPEC':
      return concat(head, beBytes(m.sealed.length, 4), m.sealed);
    case 'JOB_RESULT': {
      const log = utf8.encode(m.logTail);
      const fixed = new Uint8Array(7);
      new DataView(fixed.buffer).setInt32(0, m.exitCode, false);
      const extended = Boolean(m.failure || m.imageDigest);
      fixed[4] = (m.simulated ? 1 : 0) | (extended ? 2 : 0);
      fixed.set(beBytes(log.length, 2), 5);
      if (!extended) return concat(head, fixed, log);
      const field = (s) => concat(Uint8Array.of(s.length), utf8.encode(s));
      return concat(head, fixed, log, field(m.failure || ''), field(m.imageDigest || ''));
    }
    case 'LOG': {
      const t = utf8.encode(m.text);
      return concat(head, beBytes(m.seq, 8), beBytes(m.dropped, 8), beBytes(t.length, 2), t);
    }
    case 'HEARTBEAT':
      return concat(head, m.heartbeat);
    case 'CHECKPOINT':
      return concat(head, beBytes(m.seq, 8), beBytes(m.cumulativeGpuSeconds, 8), m.heartbeatHead,
        beBytes(m.timestamp, 8), m.signature);
    case 'ACK':
      return concat(head, Uint8Array.of(MSG_TYPES.indexOf(m.refType)), beBytes(m.refSeq, 8));
    default: {
      const msg = utf8.encode(m.message);
      return concat(head, Uint8Array.of(MSG_TYPES.indexOf(m.refType)), beBytes(m.refSeq, 8),
        beBytes(ERROR_CODES.indexOf(m.code), 2), beBytes(msg.length, 2), msg);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Frames and offers sync

export function encodeUvarint(n) {
  n = BigInt(n);
  const out = [];
  do {
    let b = Number(n & 0x7fn);
    n >>= 7n;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return Uint8Array.from(out);
}

/** Strict (minimal, at most 10 bytes) uvarint at pos: returns [value, next position]. */
export function decodeUvarint(buf, pos = 0) {
  let value = 0n;
  for (let i = 0; i < 10; i++) {
    if (pos + i >= buf.length) throw new DecodeError('truncated varint');
    const b = buf[pos + i];
    value |= BigInt(b & 0x7f) << BigInt(7 * i);
    if (!(b & 0x80)) {
      if (i > 0 && b === 0) throw new DecodeError('non-minimal varint');
      return [value, pos + i + 1];
    }
  }
  throw new DecodeError('varint too long');
}

export const frame = (body) => concat(encodeUvarint(body.length), body);

export function unframe(data, cap) {
  const [n, pos] = decodeUvarint(data);
  if (n > BigInt(cap)) throw new DecodeError('frame over cap');
  if (data.length !== pos + Number(n)) throw new DecodeError('frame length');
  return data.subarray(pos);
}

export function decodeSyncRequest(body) {
  if (body.length < 4 || body[0] !== 1) throw new DecodeError('request header');
  const clen = body[1];
  if ((clen !== 0 && clen !== 32) || body.length !== 4 + clen) throw new DecodeError('request length');
  const limit = Number(beInt(body.subarray(2 + clen)));
  if (limit === 0) throw new DecodeError('limit zero');
  return { cursor: body.subarray(2, 2 + clen), limit };
}

export const encodeSyncRequest = (req) =>
  concat(Uint8Array.of(1, req.cursor.length), req.cursor, beBytes(req.limit, 2));

export function decodeSyncPage(body) {
  if (body.length < 3 || body[0] !== 1 || body[1] > 1) throw new DecodeError('page header');
  let pos = 2;
  let nextCursor = null;
  if (body[1] === 1) {
    if (body.length < pos + 32) throw new DecodeError('truncated cursor');
    nextCursor = body.subarray(2, 34);
    pos = 34;
  }
  let count;
  [count, pos] = decodeUvarint(body, pos);
  if (count > 1024n) throw new DecodeError('count over 1024');
  const blobs = [];
  for (let i = 0n; i < count; i++) {
    let n;
    [n, pos] = decodeUvarint(body, pos);
    if (pos + Number(n) > body.length) throw new DecodeError('truncated blob');
    blobs.push(body.subarray(pos, pos + Number(n)));
    pos += Number(n);
  }
  if (pos !== body.length) throw new DecodeError('trailing bytes');
  return { more: nextCursor !== null, nextCursor, blobs };
}

export function encodeSyncPage(page) {
  const parts = [Uint8Array.of(1, page.nextCursor ? 1 : 0)];
  if (page.nextCursor) parts.push(page.nextCursor);
  parts.push(encodeUvarint(page.blobs.length));
  for (const b of page.blobs) parts.push(encodeUvarint(b.length), b);
  return concat(...parts);
}

/** The responder's page for a request (docs/spec.md, "Paging and cursor rules"). */
export function syncPage(live, pageOffers, pageBytes, req) {
  const sorted = live.map((b) => ({ h: sha256(b), b })).sort((x, y) => compare(x.h, y.h));
  let i = req.cursor.length ? sorted.findIndex((e) => compare(e.h, req.cursor) > 0) : 0;
  if (i < 0) i = sorted.length;
  const limit = Math.min(req.limit, pageOffers);
  const max = pageBytes - 64;
  let budget = max;
  const blobs = [];
  let last = null;
  while (i < sorted.length && blobs.length < limit) {
    const cost = sorted[i].b.length + 10;
    if (cost > max) {
      last = sorted[i++].h;
      continue;
    }
    if (cost > budget) break;
    blobs.push(sorted[i].b);
    budget -= cost;
    last = sorted[i++].h;
  }
  return { blobs, nextCursor: i < sorted.length ? last : null };
}

// ---------------------------------------------------------------------------------------------------------------
// Consumer checkpoint verification (docs/spec.md, "Checkpoint verification, exactly")

const ceilDiv = (a, b) => -((-a) / b); // BigInt ceil for b > 0
const maxBig = (a, b) => (a > b ? a : b);
const minBig = (a, b) => (a < b ? a : b);

/**
 * view: lease and last accepted state (BigInt numbers, Uint8Array keys/hashes, closedAt/lastDigest may be null);
 * beats: signed heartbeats; cp: {leaseId, seq, cumulativeGpuSeconds, heartbeatHead, timestamp, signature};
 * tol: {perGpuS, bps, clockSkewMs, heartbeatIntervalMs, maxGapIntervals} as BigInt.
 * Returns {reason: string|null, beatsCovered}.
 */
export function verifyCheckpoint(view, beats, cp, separator, nowMs, tol) {
  const reject = (reason) => ({ reason, beatsCovered: 0 });
  const gpus = view.gpus;
  const slack = (b) => maxBig(tol.perGpuS * gpus, (b * tol.bps) / 10000n);
  const bound = (t) => gpus * maxBig(0n, t - view.startedAt);
  const soft = (t) => bound(t) + slack(bound(t));
  const hardEnd = view.closedAt === null ? view.endsAt : minBig(view.endsAt, view.closedAt);
  const maxGapMs = tol.maxGapIntervals * tol.heartbeatIntervalMs;

  if (cp.leaseId !== view.leaseId) return reject('wrong_lease');
  const digest = digest712(separator, checkpointStructHash(cp));
  try {
    if (!equal(recoverSigner(digest, cp.signature), view.provider)) return reject('bad_signature');
  } catch (e) {
    if (e instanceof SignatureError) return reject('bad_signature');
    throw e;
  }
  if (!view.accepting) return reject('lease_not_open');
  if (view.closedAt !== null && cp.timestamp > view.closedAt) return reject('after_close');
  if (cp.seq <= view.lastSeq) {
    if (cp.seq === view.lastSeq && view.lastDigest !== null && !equal(digest, view.lastDigest)) {
      return reject('equivocation');
    }
    return reject('seq_replayed');
  }
  if (cp.seq !== view.lastSeq + 1n) return reject('seq_gap');
  if (cp.timestamp * 1000n > nowMs + tol.clockSkewMs) return reject('timestamp_in_future');
  if (cp.timestamp < view.lastTimestamp || cp.timestamp < view.startedAt) return reject('timestamp_regressed');
  const cum = cp.cumulativeGpuSeconds;
  if (cum < view.lastCumulative) return reject('cumulative_decreased');
  if (cum > bound(hardEnd) || cum > soft(minBig(nowMs / 1000n, hardEnd))) return reject('over_claim');

  let prev = { hash: view.lastHead, seq: view.lastHeadSeq, time: view.lastHeadTimeMs, gpu: view.lastHeadGpuSeconds };
  if (prev.seq === 0n) prev.time = view.startedAt * 1000n;
  let gapRule = prev.seq !== 0n;
  let covered = 0;
  let found = equal(cp.heartbeatHead, view.lastHead);
  for (const signed of found ? [] : beats) {
    if (signed.length !== HEARTBEAT_SIGNED) return reject('malformed_heartbeat');
    let sigOk = false;
    try {
      sigOk = ed25519.verify(signed.subarray(HEARTBEAT_BODY), signed.subarray(0, HEARTBEAT_BODY),
        view.providerNodeKey, { zip215: false });
    } catch {
      sigOk = false;
    }
    if (!sigOk) return reject('bad_heartbeat_signature');
    let hb;
    try {
      hb = decodeHeartbeatBody(signed.subarray(0, HEARTBEAT_BODY));
    } catch (e) {
      if (e instanceof DecodeError) return reject('malformed_heartbeat');
      throw e;
    }
    if (hb.leaseId !== view.leaseId || hb.seq !== prev.seq + 1n || !equal(hb.prevHash, prev.hash)) {
      return reject('chain_broken');
    }
    if (hb.timeMs < prev.time || hb.gpuSeconds < prev.gpu) return reject('heartbeat_out_of_order');
    if (gapRule && hb.timeMs - prev.time > maxGapMs) return reject('heartbeat_gap');
    if (hb.timeMs > nowMs + tol.clockSkewMs) return reject('heartbeat_in_future');
    if (hb.gpuSeconds > soft(minBig(ceilDiv(hb.timeMs, 1000n), hardEnd))) return reject('heartbeat_over_claim');
    gapRule = true;
    covered += 1;
    prev = { hash: heartbeatHash(signed), seq: hb.seq, time: hb.timeMs, gpu: hb.gpuSeconds };
    if (equal(prev.hash, cp.heartbeatHead)) {
      found = true;
      break;
    }
  }
  if (!found) return reject('head_mismatch');
  if (covered === 0) {
    if (cum > view.lastCumulative) return reject('head_mismatch');
  } else {
    const cpMs = cp.timestamp * 1000n;
    if (prev.time > cpMs + 1000n || cpMs - prev.time > maxGapMs) return reject('head_time_mismatch');
    const lagS = maxBig(0n, ceilDiv(cpMs - prev.time, 1000n));
    if (cum > prev.gpu + gpus * lagS) return reject('unproven_usage');
  }
  return { reason: null, beatsCovered: covered };
}
