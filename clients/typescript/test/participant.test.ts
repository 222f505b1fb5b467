import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";

import { FileEntityStore, MemoryEntityStore, VersionConflict } from "../src/entities.js";
import { newTokenId, signalHeaders, TokenServiceError, tokenFor, type Signal, type Token, TokenServiceClient } from "../src/index.js";
import { Participant, Permanent, Refusal, type Effects } from "../src/participant.js";
import { NotDelivered, type Sender } from "../src/sender.js";

/** A token service of one destination, in memory, with switchable failures. */
class FakeTokens {
  live = new Map<string, Token>();
  fail: TokenServiceError | undefined;
  failTransitions: TokenServiceError | undefined;
  /** Calls that named no conversation: a service over a split store asks every part for them. */
  unrouted = 0;
  constructor(readonly destination: string) {}
  private routed(conversation: string | undefined): void {
    if (!conversation) this.unrouted++;
  }
  async get(id: string, conversation?: string): Promise<Token | undefined> {
    if (this.fail) throw this.fail;
    this.routed(conversation);
    const t = this.live.get(id);
    if (t && t.destination !== this.destination) {
      throw new TokenServiceError("not yours", { status: 403, problem: { type: "https://github.com/batonhq/baton/blob/main/docs/token-service.md#problem-not-your-token" }, notApplied: true });
    }
    return t;
  }
  async claimRoot(id: string, conversation?: string): Promise<Token> {
    const t = await this.get(id, conversation);
    if (!t) throw new TokenServiceError("gone", { status: 404, notApplied: true });
    if (t.expiresAt && Date.parse(t.expiresAt) <= Date.now()) throw new TokenServiceError("expired", { status: 410, notApplied: true });
    delete t.expiresAt;
    return t;
  }
  async transition(consume: string, create: Token[] = [], conversation?: string): Promise<boolean> {
    if (this.fail) throw this.fail;
    if (this.failTransitions) throw this.failTransitions;
    this.routed(conversation);
    if (!this.live.delete(consume)) return false;
    for (const t of create) this.live.set(t.id, t);
    return true;
  }
}

const down = () => new TokenServiceError("down", { status: 503, notApplied: true });

function setup() {
  const tokens = new FakeTokens("billing");
  const entities = new MemoryEntityStore();
  const sent: Signal[] = [];
  let senderFails = false;
  const sender = { send: async (s: Signal) => { if (senderFails) throw new NotDelivered("down"); sent.push(s); return { status: 200, outcome: "applied", reply: new Uint8Array() }; } } as unknown as Sender;
  const p = new Participant("billing", tokens as unknown as TokenServiceClient, entities, { sender, sweepAfterMs: 0, alert: () => undefined });
  p.activity("count", (s) => "e/" + (JSON.parse(Buffer.from(s.payload).toString()) as { entity: string }).entity, (s, state): Effects => {
    state.count = ((state.count as number | undefined) ?? 0) + 1;
    return { emit: [{ destination: "shipping", type: "count", payload: s.payload }], reply: JSON.stringify({ count: state.count }) };
  });
  const signal = (live = true, entity = "a"): Signal => {
    const sig: Signal = { id: newTokenId(), conversation: newTokenId(), causation: newTokenId(), destination: "billing", type: "count", payload: Buffer.from(JSON.stringify({ entity })) };
    if (live) tokens.live.set(sig.id, tokenFor(sig));
    return sig;
  };
  const post = (sig: Signal, payload?: Uint8Array) => {
    const headers: Record<string, string[]> = {};
    for (const [k, v] of Object.entries(signalHeaders(sig))) headers[k.toLowerCase()] = [v];
    return p.handle("POST", headers, payload ?? sig.payload);
  };
  const count = async (entity = "a") => ((await entities.load("e/" + entity)).state.count as number | undefined) ?? 0;
  return { tokens, entities, sent, p, signal, post, count, setSenderFails: (v: boolean) => (senderFails = v) };
}

describe("participant", () => {
  it("applies a signal once, then answers copies as duplicates", async () => {
    const t = setup();
    const sig = t.signal();
    const a = await t.post(sig);
    assert.equal(a.status, 200);
    assert.equal(a.headers["Baton-Outcome"], "applied");
    assert.deepEqual(JSON.parse(Buffer.from(a.body).toString()), { count: 1 });
    assert.equal(t.tokens.live.has(sig.id), false);
    assert.equal(t.sent.length, 1);
    assert.equal(t.sent[0]?.causation, sig.id);
    assert.equal(t.tokens.live.has(t.sent[0]!.id), true);
    assert.equal(t.tokens.unrouted, 0, "every token call names the signal's conversation (Baton-Conversation)");
    const b = await t.post(sig);
    assert.equal(b.status, 409);
    assert.equal(b.headers["Baton-Outcome"], "duplicate");
    assert.equal(await t.count(), 1);
  });

  it("keeps the entry when the transition fails, and a retry replays the reply", async () => {
    const t = setup();
    const sig = t.signal();
    t.tokens.failTransitions = down();
    assert.equal((await t.post(sig)).status, 503);
    t.tokens.failTransitions = undefined;
    const b = await t.post(sig);
    assert.equal(b.headers["Baton-Outcome"], "replayed");
    assert.deepEqual(JSON.parse(Buffer.from(b.body).toString()), { count: 1 });
    assert.equal(await t.count(), 1);
  });

  it("asks to retry and applies nothing while the token service is down", async () => {
    const t = setup();
    const sig = t.signal();
    t.tokens.fail = down();
    const a = await t.post(sig);
    assert.equal(a.status, 503);
    assert.equal(a.headers["Retry-After"], "1");
    t.tokens.fail = undefined;
    assert.equal(await t.count(), 0);
    assert.equal((await t.post(sig)).status, 200);
  });

  it("refuses tampered and misaddressed signals and leaves their tokens live", async () => {
    const t = setup();
    const sig = t.signal();
    assert.equal((await t.post({ ...sig, payload: Buffer.from('{"entity":"b"}') })).status, 422);
    assert.equal((await t.post({ ...sig, conversation: newTokenId() })).status, 422);
    const foreign = t.signal();
    t.tokens.live.get(foreign.id)!.destination = "shipping";
    assert.equal((await t.post(foreign)).status, 403);
    assert.equal(t.tokens.live.has(sig.id), true);
    assert.equal((await t.post(sig)).status, 200);
  });

  it("applies concurrent copies once", async () => {
    const t = setup();
    const sig = t.signal();
    const answers = await Promise.all(Array.from({ length: 12 }, () => t.post(sig)));
    assert.equal(answers.filter((a) => a.headers["Baton-Outcome"] === "applied").length, 1);
    assert.equal(await t.count(), 1);
  });

  it("leaves an undelivered child to the sweeper", async () => {
    const t = setup();
    const sig = t.signal();
    t.setSenderFails(true);
    assert.equal((await t.post(sig)).status, 503);
    t.setSenderFails(false);
    assert.equal(await t.p.sweep(), 1);
    assert.equal(t.sent.length, 1);
    assert.equal((await t.entities.load("e/a")).outbox.length, 0);
    assert.equal(await t.count(), 1);
  });

  it("refuses a signal whose activity fails for good", async () => {
    const t = setup();
    t.p.activity("count", () => "e/x", () => { throw new Permanent("db password=hunter2"); });
    const sig = t.signal();
    const answer = await t.post(sig);
    assert.equal(answer.status, 422);
    assert.equal(new TextDecoder().decode(answer.body).includes("hunter2"), false, "a Permanent's message stays in the participant");
    assert.equal(t.tokens.live.has(sig.id), true);
  });

  it("tells the sender a Refusal's reason", async () => {
    const t = setup();
    t.p.activity("count", () => "e/x", () => { throw new Refusal("quantity must be 1 to 10"); });
    const answer = await t.post(t.signal());
    assert.equal(answer.status, 422);
    assert.equal(JSON.parse(new TextDecoder().decode(answer.body)).detail, "quantity must be 1 to 10");
  });

  it("answers requests that carry no signal", async () => {
    const t = setup();
    assert.equal((await t.p.handle("GET", {}, new Uint8Array())).headers["Allow"], "POST");
    assert.equal((await t.p.handle("POST", {}, new Uint8Array())).status, 400);
    assert.equal((await t.p.handle("POST", {}, undefined)).status, 413);
  });
});

describe("file entity store", () => {
  it("compares and sets, and keeps commits across instances", async () => {
    const dir = await mkdtemp(join(tmpdir(), "baton-entities-"));
    const s = new FileEntityStore(dir);
    const e = await s.load("k");
    await s.commit({ ...e, state: { n: 1 } }, 0);
    await assert.rejects(s.commit({ ...e, state: { n: 2 } }, 0), VersionConflict);
    const again = await new FileEntityStore(dir).load("k");
    assert.equal(again.version, 1);
    assert.deepEqual(again.state, { n: 1 });
  });
});
