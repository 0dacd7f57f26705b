// Check every test vector in docs/vectors/*.json with the independent codec in codec.mjs.
//
// Usage: node vectors.mjs [vectors dir]. Prints one line per failure, then "CHECKED <n> FAILED <m>" and exits
// non-zero when anything failed. Every vector is decoded (fields, verdicts, signers compared) and, when valid,
// re-encoded from its fields and compared byte for byte.

import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as C from './codec.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const dir = resolve(process.argv[2] ?? join(here, '..', '..', '..', 'docs', 'vectors'));
const load = (name) => JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8'));
const { fromHex: raw, toHex: hx } = C;
const dec = (n) => BigInt(n).toString();

let checked = 0;
const failures = [];

function check(label, fn) {
  checked += 1;
  try {
    fn();
  } catch (e) {
    failures.push(`${label}: ${e.message}`);
  }
}

function canon(v) {
  if (Array.isArray(v)) return v.map(canon);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])]));
  return v;
}

function same(what, got, want) {
  const g = JSON.stringify(canon(got));
  const w = JSON.stringify(canon(want));
  if (g !== w) throw new Error(`${what}: got ${g.slice(0, 300)} want ${w.slice(0, 300)}`);
}

function sameBytes(what, got, want) {
  if (!C.equal(got, want)) throw new Error(`${what}: got ${hx(got).slice(0, 80)}... want ${hx(want).slice(0, 80)}...`);
}

function throws(what, fn) {
  try {
    fn();
  } catch (e) {
    if (e instanceof C.DecodeError) return e;
    throw new Error(`${what}: unexpected ${e.constructor.name}: ${e.message}`);
  }
  throw new Error(`${what}: decoded, but the vector is invalid`);
}

// ---------------------------------------------------------------------------------------------------------------
// keys.json

const keys = load('keys');
const domain = keys.domain;
const CHAIN_ID = BigInt(domain.chainId);
const ESCROW = raw(domain.verifyingContract);
const SEPARATOR = C.domainSeparator(CHAIN_ID, ESCROW);

check('keys', () => {
  sameBytes('domain separator', SEPARATOR, raw(domain.separator));
  for (const [name, h] of Object.entries(keys.typeHashes)) sameBytes(`typehash ${name}`, C.typeHash(name), raw(h));
  sameBytes('empty spec hash', C.keccak(new Uint8Array()), raw(keys.emptySpecHash));
  for (const [name, w] of Object.entries(keys.wallets)) sameBytes(`address ${name}`, C.addressOf(raw(w.privateKey)), raw(w.address));
  if (keys.topic !== `gpunet/${CHAIN_ID}/${domain.verifyingContract.toLowerCase()}/offers/1`) throw new Error('topic');
});

// ---------------------------------------------------------------------------------------------------------------
// offers.json / withdrawals.json

function contextOf(base, override) {
  const ctx = JSON.parse(JSON.stringify(base));
  for (const [k, v] of Object.entries(override ?? {})) {
    ctx[k] = v && typeof v === 'object' && !Array.isArray(v) ? { ...ctx[k], ...v } : v;
  }
  const r = ctx.rules;
  return {
    now: BigInt(ctx.now),
    chainId: BigInt(ctx.domain.chainId),
    escrow: raw(ctx.domain.verifyingContract),
    rules: { ...r, maxTtl: BigInt(r.maxTtl), maxClockSkew: BigInt(r.maxClockSkew),
      withdrawalMaxAge: BigInt(r.withdrawalMaxAge), minFreeStake: BigInt(r.minFreeStake),
      collateralBps: BigInt(r.collateralBps) },
    providers: Object.fromEntries(Object.entries(ctx.providers).map(([a, p]) => [a, {
      registered: p.registered, freeStake: BigInt(p.freeStake), minNonce: BigInt(p.minNonce) }])),
    book: ctx.book.map((e) => ({ offerId: raw(e.offerId), provider: raw(e.provider), gpuModel: raw(e.gpuModel),
      nonce: BigInt(e.nonce) })),
  };
}

function offerFields(env, o) {
  return {
    envelope: { type: env.type, chainId: dec(env.chainId), escrow: hx(env.escrow) },
    provider: hx(o.provider), nonce: dec(o.nonce), gpuModel: hx(o.gpuModel), gpuModelName: C.gpuModelName(o.gpuModel),
    gpuCount: dec(o.gpuCount), vramMiB: dec(o.vramMiB), pricePerGpuSecond: dec(o.pricePerGpuSecond),
    minDuration: dec(o.minDuration), maxDuration: dec(o.maxDuration), expiresAt: dec(o.expiresAt),
    specHash: hx(o.specHash), signature: hx(o.signature), spec: Buffer.from(o.specBytes).toString('latin1'),
  };
}

function withdrawalFields(env, w) {
  return {
    envelope: { type: env.type, chainId: dec(env.chainId), escrow: hx(env.escrow) },
    provider: hx(w.provider), nonceBelow: dec(w.nonceBelow), timestamp: dec(w.timestamp), signature: hx(w.signature),
  };
}

function checkSigner(v, digest, signature) {
  if ('signer' in v) {
    sameBytes('signer', C.recoverSigner(digest, signature), raw(v.signer));
  } else {
    let ok = false;
    try {
      C.recoverSigner(digest, signature);
    } catch (e) {
      ok = e instanceof C.SignatureError;
    }
    if (!ok) throw new Error(`signature should not recover (${v.signerError})`);
  }
}

for (const file of ['offers', 'withdrawals']) {
  const f = load(file);
  for (const v of f.vectors) {
    check(`${file}/${v.name}`, () => {
      const data = raw(v.hex);
      same('verdict', C.validateGossip(data, contextOf(f.context, v.contextOverride)), { verdict: v.verdict, reason: v.reason });
      if ('decodeError' in v) {
        const e = throws('decode', () => C.decodeGossip(data));
        if (e.reason !== v.decodeError) throw new Error(`decode reason ${e.reason}, want ${v.decodeError}`);
        return;
      }
      const { env, record } = C.decodeGossip(data);
      const sep = C.domainSeparator(env.chainId, env.escrow);
      const fields = v.fields;
      if (env.type === 1) {
        same('fields', offerFields(env, record), fields);
        const id = C.offerStructHash(record);
        sameBytes('offer id', id, raw(v.offerId));
        const digest = C.digest712(sep, id);
        sameBytes('digest', digest, raw(v.digest));
        checkSigner(v, digest, record.signature);
        const o = {
          provider: raw(fields.provider), nonce: BigInt(fields.nonce), gpuModel: raw(fields.gpuModel),
          gpuCount: BigInt(fields.gpuCount), vramMiB: BigInt(fields.vramMiB),
          pricePerGpuSecond: BigInt(fields.pricePerGpuSecond), minDuration: BigInt(fields.minDuration),
          maxDuration: BigInt(fields.maxDuration), expiresAt: BigInt(fields.expiresAt), specHash: raw(fields.specHash),
          signature: raw(fields.signature),
        };
        const spec = fields.spec ? C.encodeSpec(C.decodeSpec(Buffer.from(fields.spec, 'latin1'))) : new Uint8Array();
        sameBytes('encode', C.encodeOfferMessage(BigInt(fields.envelope.chainId), raw(fields.envelope.escrow), o, spec), data);
      } else {
        same('fields', withdrawalFields(env, record), fields);
        const sh = C.withdrawalStructHash(record);
        sameBytes('struct hash', sh, raw(v.structHash));
        const digest = C.digest712(sep, sh);
        sameBytes('digest', digest, raw(v.digest));
        checkSigner(v, digest, record.signature);
        const w = { provider: raw(fields.provider), nonceBelow: BigInt(fields.nonceBelow),
          timestamp: BigInt(fields.timestamp), signature: raw(fields.signature) };
        sameBytes('encode', C.encodeWithdrawalMessage(BigInt(fields.envelope.chainId), raw(fields.envelope.escrow), w), data);
      }
    });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// heartbeats.json

const heartbeats = load('heartbeats');
for (const v of heartbeats.vectors) {
  check(`heartbeats/${v.name}`, () => {
    const data = raw(v.hex);
    const nodeKey = raw(heartbeats.nodeKey);
    if (!v.valid) {
      throws('verify', () => C.verifyHeartbeat(data, nodeKey));
      return;
    }
    const hb = C.verifyHeartbeat(data, nodeKey);
    same('fields', {
      leaseId: dec(hb.leaseId), seq: dec(hb.seq), timeMs: dec(hb.timeMs), gpuSeconds: dec(hb.gpuSeconds),
      prevHash: hx(hb.prevHash), usage: hx(hb.usage), usageDecoded: hb.usageDecoded, signature: hx(hb.signature),
    }, v.fields);
    sameBytes('hash', C.heartbeatHash(data), raw(v.hash));
    const f = v.fields;
    const usage = C.encodeUsage(f.usageDecoded);
    sameBytes('usage encode', usage, raw(f.usage));
    const body = C.encodeHeartbeatBody({ leaseId: BigInt(f.leaseId), seq: BigInt(f.seq), timeMs: BigInt(f.timeMs),
      gpuSeconds: BigInt(f.gpuSeconds), prevHash: raw(f.prevHash), usage });
    sameBytes('encode', C.concat(body, raw(f.signature)), data);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// checkpoints.json (signatures)

const checkpoints = load('checkpoints');
const cpOf = (f, leaseId = f.leaseId) => ({ leaseId: BigInt(leaseId), seq: BigInt(f.seq),
  cumulativeGpuSeconds: BigInt(f.cumulativeGpuSeconds), heartbeatHead: raw(f.heartbeatHead),
  timestamp: BigInt(f.timestamp), signature: raw(f.signature) });
for (const v of checkpoints.signatures) {
  check(`checkpoints/${v.name}`, () => {
    const cp = cpOf(v.fields);
    const sh = C.checkpointStructHash(cp);
    sameBytes('struct hash', sh, raw(v.structHash));
    const digest = C.digest712(SEPARATOR, sh);
    sameBytes('digest', digest, raw(v.digest));
    checkSigner(v, digest, cp.signature);
  });
}

const big = (x) => BigInt(x);
const tol = Object.fromEntries(Object.entries(checkpoints.tolerance).map(([k, x]) => [k, big(x)]));
for (const v of checkpoints.verifications) {
  check(`checkpoints/verify/${v.name}`, () => {
    const j = v.view;
    const view = {
      leaseId: big(j.leaseId), provider: raw(j.provider), providerNodeKey: raw(j.providerNodeKey), gpus: big(j.gpus),
      startedAt: big(j.startedAt), endsAt: big(j.endsAt), accepting: j.accepting,
      closedAt: j.closedAt === null ? null : big(j.closedAt), lastSeq: big(j.lastSeq),
      lastCumulative: big(j.lastCumulative), lastTimestamp: big(j.lastTimestamp),
      lastDigest: j.lastDigest === null ? null : raw(j.lastDigest), lastHead: raw(j.lastHead),
      lastHeadSeq: big(j.lastHeadSeq), lastHeadTimeMs: big(j.lastHeadTimeMs), lastHeadGpuSeconds: big(j.lastHeadGpuSeconds),
    };
    const beats = checkpoints.chains[v.chain].map(raw);
    const got = C.verifyCheckpoint(view, beats, cpOf(v.checkpoint), SEPARATOR, big(v.nowMs), tol);
    same('verdict', got, { reason: v.reason, beatsCovered: v.beatsCovered });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// job_spec.json

const job = load('job_spec');
check('job_spec/signature', () => {
  const s = job.signature;
  const json = new TextEncoder().encode(job.jobJson);
  sameBytes('spec hash', C.keccak(json), raw(s.specHash));
  const sh = C.jobSpecStructHash(BigInt(s.leaseId), raw(s.specHash), raw(s.consumerNodeKey));
  sameBytes('struct hash', sh, raw(s.structHash));
  const digest = C.digest712(SEPARATOR, sh);
  sameBytes('digest', digest, raw(s.digest));
  sameBytes('signer', C.recoverSigner(digest, raw(s.signature)), raw(s.consumer));
  sameBytes('stranger', C.recoverSigner(digest, raw(s.strangerSignature)), raw(s.strangerSigner));
  if (C.equal(raw(s.strangerSigner), raw(s.consumer))) throw new Error('stranger signed as the consumer');
  const b = job.box;
  const good = b.opens[0];
  const sealed = C.sealBox(raw(good.plaintext), raw(b.senderSeed), raw(b.recipientNodeKey), raw(b.nonce));
  sameBytes('seal', sealed, raw(good.sealed));
  const plain = raw(good.plaintext);
  sameBytes('plaintext layout', plain, C.concat(C.beBytes(s.leaseId, 32), raw(s.signature), json));
});
// canonical job JSON of each version: keys sorted at every level, no whitespace, ports sorted, every resource
// written (ASCII examples: Python writes
// non-ASCII as \\u escapes, which JSON.stringify does not)
function canonicalJson(value) {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}
for (const v of job.versions) {
  check(`job_spec/versions/${v.name}`, () => {
    const parsed = JSON.parse(v.canonical);
    if (canonicalJson(parsed) !== v.canonical) throw new Error('canonical form differs');
    for (const [k, given] of Object.entries(v.given)) {
      if (!['resources', 'ports'].includes(k) && canonicalJson(given) !== canonicalJson(parsed[k])) throw new Error(`field ${k} differs`);
    }
    sameBytes('spec hash', C.keccak(new TextEncoder().encode(v.canonical)), raw(v.specHash));
  });
}
for (const v of job.box.opens) {
  check(`job_spec/box/${v.name}`, () => {
    const args = [BigInt(v.leaseId), raw(v.sealed), raw(job.box.recipientSeed), raw(v.senderNodeKey)];
    if (v.error !== null) {
      throws('open', () => C.openJobSpec(...args));
      return;
    }
    const opened = C.openJobSpec(...args);
    sameBytes('plaintext', opened.plaintext, raw(v.plaintext));
    const digest = C.digest712(SEPARATOR, C.jobSpecStructHash(BigInt(v.leaseId), C.keccak(opened.jobJson),
      raw(v.senderNodeKey)));
    sameBytes('job spec signer', C.recoverSigner(digest, opened.signature), raw(job.signature.consumer));
  });
}

// ---------------------------------------------------------------------------------------------------------------
// lease_messages.json

function leaseFields(m) {
  const out = { type: m.type, leaseId: dec(m.leaseId) };
  switch (m.type) {
    case 'JOB_SPEC': return { ...out, sealed: hx(m.sealed) };
    case 'JOB_RESULT': return { ...out, exitCode: m.exitCode, simulated: m.simulated, logTail: m.logTail,
      failure: m.failure, imageDigest: m.imageDigest };
    case 'LOG': return { ...out, seq: dec(m.seq), dropped: dec(m.dropped), text: m.text };
    case 'HEARTBEAT': return { ...out, heartbeat: hx(m.heartbeat) };
    case 'CHECKPOINT':
      return { ...out, seq: dec(m.seq), cumulativeGpuSeconds: dec(m.cumulativeGpuSeconds),
        heartbeatHead: hx(m.heartbeatHead), timestamp: dec(m.timestamp), signature: hx(m.signature) };
    case 'ACK': return { ...out, refType: m.refType, refSeq: dec(m.refSeq) };
    default: return { ...out, refType: m.refType, refSeq: dec(m.refSeq), code: m.code, message: m.message };
  }
}

function leaseFromFields(f) {
  const m = { ...f, leaseId: BigInt(f.leaseId) };
  for (const k of ['sealed', 'heartbeat', 'heartbeatHead', 'signature']) if (k in f) m[k] = raw(f[k]);
  for (const k of ['seq', 'cumulativeGpuSeconds', 'timestamp', 'refSeq', 'dropped']) if (k in f) m[k] = BigInt(f[k]);
  return m;
}

const lease = load('lease_messages');
for (const v of lease.vectors) {
  check(`lease_messages/${v.name}`, () => {
    const data = raw(v.hex);
    if (!v.valid) {
      throws('decode', () => C.decodeLeaseMessage(data));
      return;
    }
    const m = C.decodeLeaseMessage(data);
    same('fields', leaseFields(m), v.fields);
    sameBytes('encode', C.encodeLeaseMessage(leaseFromFields(v.fields)), data);
    if (m.type === 'HEARTBEAT') C.verifyHeartbeat(m.heartbeat, raw(keys.nodeKeys.provider.publicKey));
    if (m.type === 'CHECKPOINT') {
      const signer = C.recoverSigner(C.digest712(SEPARATOR, C.checkpointStructHash(m)), m.signature);
      sameBytes('checkpoint signer', signer, raw(keys.wallets.provider.address));
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// sync.json

const sync = load('sync');
for (const v of sync.uvarints) {
  check(`sync/uvarint/${v.hex}`, () => {
    const data = raw(v.hex);
    if (!v.valid) {
      throws('decode', () => C.decodeUvarint(data));
      return;
    }
    const [n, pos] = C.decodeUvarint(data);
    if (n !== BigInt(v.value) || pos !== data.length) throw new Error(`decoded ${n}`);
    sameBytes('encode', C.encodeUvarint(BigInt(v.value)), data);
  });
}
for (const v of sync.requests) {
  check(`sync/request/${v.name}`, () => {
    const data = raw(v.hex);
    if (!v.valid) {
      throws('decode', () => C.decodeSyncRequest(data));
      return;
    }
    const req = C.decodeSyncRequest(data);
    same('fields', { cursor: hx(req.cursor), limit: req.limit }, v.fields);
    sameBytes('encode', C.encodeSyncRequest({ cursor: raw(v.fields.cursor), limit: v.fields.limit }), data);
    sameBytes('frame', C.frame(data), raw(v.frame));
    sameBytes('unframe', C.unframe(raw(v.frame), 64), data);
  });
}
for (const v of sync.pages) {
  check(`sync/page/${v.name}`, () => {
    const data = raw(v.hex);
    if (!v.valid) {
      throws('decode', () => C.decodeSyncPage(data));
      return;
    }
    const page = C.decodeSyncPage(data);
    same('fields', { more: page.more, nextCursor: page.nextCursor && hx(page.nextCursor), blobs: page.blobs.map(hx) },
      v.fields);
    const f = v.fields;
    sameBytes('encode', C.encodeSyncPage({ nextCursor: f.nextCursor && raw(f.nextCursor), blobs: f.blobs.map(raw) }),
      data);
    sameBytes('frame', C.frame(data), raw(v.frame));
  });
}
for (const s of sync.sessions) {
  check(`sync/session/${s.name}`, () => {
    const live = s.live.map(raw);
    let cursor = new Uint8Array();
    const served = [];
    s.exchanges.forEach((ex, i) => {
      const req = C.decodeSyncRequest(C.unframe(raw(ex.request), 64));
      sameBytes(`request ${i} cursor`, req.cursor, cursor);
      if (req.limit !== s.requestLimit) throw new Error('request limit');
      const page = C.decodeSyncPage(C.unframe(raw(ex.response), 1 << 20));
      const mine = C.syncPage(live, s.pageOffers, s.pageBytes, req);
      sameBytes(`response ${i}`, C.frame(C.encodeSyncPage(mine)), raw(ex.response));
      served.push(...page.blobs.map(hx));
      const last = i === s.exchanges.length - 1;
      if (page.more === last) throw new Error(`page ${i}: more=${page.more}`);
      if (page.more) {
        if (C.compare(page.nextCursor, cursor) <= 0) throw new Error('cursor did not advance');
        cursor = page.nextCursor;
      }
    });
    // every live blob that fits a page is served exactly once
    const fits = live.filter((b) => b.length + 10 <= s.pageBytes - 64).map(hx).sort();
    same('served', [...served].sort(), fits);
  });
}

// ---------------------------------------------------------------------------------------------------------------

for (const line of failures) console.log(`FAIL ${line}`);
console.log(`CHECKED ${checked} FAILED ${failures.length}`);
process.exit(failures.length ? 1 : 0);
