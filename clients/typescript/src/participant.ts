/**
 * A participant: runs docs/protocol.md section 3.2 with the token service
 * as its token store. Framework neutral: Participant.handle takes a
 * request's method, headers and body and resolves to an Answer;
 * nodeListener puts it behind node:http. Section 3.7 says what to answer
 * when the token service fails: every such failure is answered 503 so that
 * the sender retries, except those that prove the signal itself is wrong.
 */
import type { IncomingMessage, ServerResponse } from "node:http";

import { type EntityStore, type Entity, type OutboxEntry, VersionConflict } from "./entities.js";
import { digestOf, isTokenId, MAX_PAYLOAD_BYTES, newTokenId, parseSignal, ProblemTypes, SignalError, tokenFor, TokenServiceClient, TokenServiceError, type Signal, type Token } from "./index.js";
import { NotDelivered, Refused, type Sender } from "./sender.js";

const problemBase = "https://github.com/batonhq/baton/blob/main/docs/protocol.md#problem-";
const commitAttempts = 10;

/** A signal an activity asks to send; the participant gives it an id, conversation and causation. */
export interface Emit {
  destination: string;
  type: string;
  payload?: Uint8Array | string;
}

/** What an activity returns. It changes the state it is given in place. */
export interface Effects {
  emit?: Emit[];
  reply?: Uint8Array | string;
  replyType?: string;
}

/** Thrown by an activity that can never succeed for this signal: refused with 422 rejected. */
export class Permanent extends Error {
  override name = "Permanent";
}

/** A Permanent whose message is for the sender: the 422 answer's detail (a form's "quantity must be 1 to 10"). A plain Permanent's message is not sent: it may name what the sender must not see. */
export class Refusal extends Permanent {
  override name = "Refusal";
}

/** An answer to a signal request. */
export interface Answer {
  status: number;
  headers: Record<string, string>;
  body: Uint8Array;
}

interface Activity {
  entity: (sig: Signal) => string;
  handle: (sig: Signal, state: Record<string, unknown>) => Effects | Promise<Effects>;
}

export interface ParticipantOptions {
  /** Delivers the signals that activities emit; absent if they emit none. */
  sender?: Sender;
  /** Outbox entries older than this (milliseconds) are finished by sweep. Default 5000. */
  sweepAfterMs?: number;
  /** Receives what an operator must know (refused transitions, undeliverable signals). Default console.error. */
  alert?: (message: string) => void;
}

type HeaderBag = Record<string, string | string[] | undefined>;

/**
 * Processes the signals of one destination exactly once. tokens is a
 * client of the token service with this destination's key. One process
 * per entity store (FileEntityStore serialises commits in its process).
 */
export class Participant {
  private readonly activities = new Map<string, Activity>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly sweepAfterMs: number;
  private readonly alert: (message: string) => void;

  constructor(
    readonly destination: string,
    private readonly tokens: TokenServiceClient,
    private readonly entities: EntityStore,
    private readonly options: ParticipantOptions = {},
  ) {
    this.sweepAfterMs = options.sweepAfterMs ?? 5000;
    this.alert = options.alert ?? ((m) => console.error(m));
  }

  /** Registers the activity for signals of type: entity names the entity a signal acts on. */
  activity(type: string, entity: Activity["entity"], handle: Activity["handle"]): void {
    this.activities.set(type, { entity, handle });
  }

  /** Answers one request; headers as node's req.headersDistinct (lower-case names, all values). */
  async handle(method: string, headers: HeaderBag, body: Uint8Array | undefined): Promise<Answer> {
    const token = tokenOfHeader(headers);
    if (method !== "POST") {
      const a = problem(405, "method-not-allowed", "Method Not Allowed", "signals are POSTed", token);
      a.headers["Allow"] = "POST";
      return a;
    }
    if (body === undefined || body.length > MAX_PAYLOAD_BYTES) {
      return problem(413, "payload-too-large", "Payload Too Large", `the body exceeds ${MAX_PAYLOAD_BYTES} bytes`, token);
    }
    let sig: Signal;
    try {
      sig = parseSignal(headers, body);
    } catch (err) {
      if (err instanceof SignalError) return problem(400, "malformed-signal", "Malformed Signal", err.message, token);
      throw err;
    }
    return this.process(sig);
  }

  /** Runs section 3.2 for one signal. */
  async process(sig: Signal): Promise<Answer> {
    if (sig.destination !== this.destination) {
      return problem(403, "misaddressed", "Misaddressed", `signal for ${JSON.stringify(sig.destination)} arrived at ${JSON.stringify(this.destination)}`, sig.id);
    }
    const act = this.activities.get(sig.type);
    if (act === undefined) return problem(404, "unknown-type", "Unknown Type", `no activity for ${JSON.stringify(sig.type)}`, sig.id);
    let key: string;
    try {
      key = act.entity(sig);
    } catch (err) {
      return problem(422, "unroutable", "Unroutable", String(err instanceof Error ? err.message : err), sig.id);
    }
    // Copies of one signal, and signals of one entity, take turns in this
    // process: a later copy finds the first one's outcome.
    return this.locked(`token:${sig.id}`, () =>
      this.locked(`entity:${key}`, async () => {
        for (let i = 0; i < commitAttempts; i++) {
          const answer = await this.attempt(sig, key, act);
          if (answer !== undefined) return answer;
        }
        return unavailable(sig.id, "version conflicts did not settle");
      }),
    );
  }

  /** One pass of steps 1 to 8; undefined on a version conflict. */
  private async attempt(sig: Signal, key: string, act: Activity): Promise<Answer | undefined> {
    const ent = await this.entities.load(key); // step 1, before the token is read
    const entry = ent.outbox.find((e) => e.id === sig.id);
    if (entry !== undefined) return sameAsEntry(entry, sig) ?? this.finish(ent, entry, "replayed"); // step 2
    let tok: Token | undefined;
    try {
      tok = await this.tokens.get(sig.id, sig.conversation); // step 3
    } catch (err) {
      return this.tokenFailure(err, sig);
    }
    if (tok === undefined) return duplicate(sig.id);
    const refusal = this.admit(tok, sig);
    if (refusal !== undefined) return refusal;
    if (tok.expiresAt !== undefined) {
      try {
        await this.tokens.claimRoot(sig.id, sig.conversation);
      } catch (err) {
        return this.tokenFailure(err, sig);
      }
    }
    const state = structuredClone(ent.state); // step 4
    let effects: Effects;
    try {
      effects = (await act.handle(sig, state)) ?? {};
    } catch (err) {
      if (err instanceof Refusal) return problem(422, "rejected", "Rejected", err.message, sig.id);
      if (err instanceof Permanent) return problem(422, "rejected", "Rejected", "the activity refused the signal for good", sig.id);
      return unavailable(sig.id, "the activity failed for now");
    }
    const newEntry: OutboxEntry = {
      id: sig.id,
      conversation: sig.conversation,
      causation: sig.causation ?? "",
      destination: sig.destination,
      type: sig.type,
      digest: digestOf(sig.payload),
      signals: (effects.emit ?? []).map((e) => ({ id: newTokenId(), destination: e.destination, type: e.type, payload: base64(e.payload) })),
      reply: base64(effects.reply),
      replyType: effects.replyType ?? "application/json",
      createdAt: Date.now(),
    };
    const loaded = ent.version;
    const next: Entity = { ...ent, state, outbox: [...ent.outbox, newEntry] };
    try {
      await this.entities.commit(next, loaded);
    } catch (err) {
      if (err instanceof VersionConflict) return undefined;
      return unavailable(sig.id, "the entity store failed");
    }
    next.version = loaded + 1;
    return this.finish(next, newEntry, "applied");
  }

  /** What a failing token service call at step 3 means for the signal (section 3.7). */
  private tokenFailure(err: unknown, sig: Signal): Answer {
    if (!(err instanceof TokenServiceError)) throw err;
    if (err.status === 404) return duplicate(sig.id);
    if (err.status === 410) return problem(410, "expired", "Expired", "the root token expired before it was claimed", sig.id);
    if (err.status === 403 && err.type === ProblemTypes.notYourToken) {
      return problem(403, "misaddressed", "Misaddressed", "the token is addressed to another destination", sig.id);
    }
    if (err.status === 400 || err.status === 401 || err.status === 403) {
      this.alert(`baton participant ${this.destination}: the token service refuses it (${err.message}): check its key and code`);
    }
    return unavailable(sig.id, "the token service is unavailable");
  }

  /** Step 3's admission checks, in the order of the protocol. */
  private admit(tok: Token, sig: Signal): Answer | undefined {
    if (tok.destination !== this.destination) return problem(403, "misaddressed", "Misaddressed", "the token is addressed to another destination", sig.id);
    if (tok.type !== sig.type || tok.conversation !== sig.conversation || (tok.causation ?? "") !== (sig.causation ?? "")) {
      return problem(422, "rejected", "Rejected", "the signal differs from its token", sig.id);
    }
    if (tok.digest !== digestOf(sig.payload)) return problem(422, "digest-mismatch", "Digest Mismatch", "the payload differs from the token's digest", sig.id);
    if (tok.expiresAt !== undefined && Date.now() >= Date.parse(tok.expiresAt)) {
      return problem(410, "expired", "Expired", "the root token expired", sig.id);
    }
    return undefined;
  }

  /** Steps 5 to 8 for a committed outbox entry. */
  private async finish(ent: Entity, entry: OutboxEntry, outcome: string): Promise<Answer> {
    const children: Signal[] = entry.signals.map((c) => ({
      id: c.id, conversation: entry.conversation, causation: entry.id, destination: c.destination, type: c.type,
      payload: Buffer.from(c.payload, "base64"),
    }));
    const answer = reply(entry, outcome);
    try {
      await this.tokens.transition(entry.id, children.map((c) => tokenFor(c)), entry.conversation); // step 5
    } catch (err) {
      if (!(err instanceof TokenServiceError)) throw err;
      if (err.status === 0 || err.status >= 500 || err.status === 400 || err.status === 401) {
        return unavailable(entry.id, "the activity is applied; its transition is not done yet");
      }
      this.alert(`baton participant ${this.destination}: the transition of ${entry.id} was refused for good (${err.message}); its outbox entry stays for an operator`);
      return answer;
    }
    for (const child of children) {
      try {
        if (this.options.sender === undefined) throw new Refused(0, "no sender for emitted signals");
        await this.options.sender.send(child); // step 6
      } catch (err) {
        if (err instanceof NotDelivered) return unavailable(entry.id, "the activity is applied; its signals are not all delivered yet");
        this.alert(`baton participant ${this.destination}: signal ${child.id} to ${child.destination} was refused (${String(err)}); its outbox entry stays for an operator`);
        return answer;
      }
    }
    await this.remove(ent, entry.id); // step 7
    return answer; // step 8
  }

  private async remove(ent: Entity, id: string): Promise<void> {
    for (let i = 0; i < commitAttempts; i++) {
      if (!ent.outbox.some((e) => e.id === id)) return;
      const loaded = ent.version;
      try {
        await this.entities.commit({ ...ent, outbox: ent.outbox.filter((e) => e.id !== id) }, loaded);
        return;
      } catch (err) {
        if (!(err instanceof VersionConflict)) break;
        ent = await this.entities.load(ent.key);
      }
    }
    // The sweeper finishes what is left.
  }

  /** Finishes outbox entries older than sweepAfterMs that nobody drives; resolves to how many. */
  async sweep(): Promise<number> {
    let finished = 0;
    const cutoff = Date.now() - this.sweepAfterMs;
    for (const ent of await this.entities.withOutbox()) {
      for (const entry of ent.outbox) {
        if (entry.createdAt > cutoff) continue;
        const answer = await this.locked(`token:${entry.id}`, () =>
          this.locked(`entity:${ent.key}`, async () => {
            const fresh = await this.entities.load(ent.key);
            const current = fresh.outbox.find((e) => e.id === entry.id);
            return current === undefined ? undefined : this.finish(fresh, current, "replayed");
          }),
        );
        if (answer?.status === 200) finished++;
      }
    }
    return finished;
  }

  /** Sweeps every intervalMs until the returned function is called. */
  startSweeper(intervalMs = 1000): () => void {
    let running = false;
    const timer = setInterval(() => {
      if (running) return;
      running = true;
      this.sweep()
        .catch((err) => this.alert(`baton participant ${this.destination}: sweep failed: ${String(err)}`))
        .finally(() => (running = false));
    }, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  /** Runs fn after every earlier holder of name has finished. */
  private async locked<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const before = this.locks.get(name) ?? Promise.resolve();
    const run = before.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.locks.set(name, tail);
    try {
      return await run;
    } finally {
      if (this.locks.get(name) === tail) this.locks.delete(name);
    }
  }
}

/** The most of a refused body the listener reads and discards, so that its sender reads the 413. */
const drainLimit = 4 * MAX_PAYLOAD_BYTES;

/** A node:http request listener that answers every request with the participant. */
export function nodeListener(participant: Participant): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_PAYLOAD_BYTES) chunks.push(chunk);
      else if (size > drainLimit) req.destroy(); // not worth reading: the sender sees the connection close
    });
    req.on("error", () => undefined);
    req.on("end", () => {
      const body = size > MAX_PAYLOAD_BYTES ? undefined : Buffer.concat(chunks);
      participant
        .handle(req.method ?? "GET", req.headersDistinct, body)
        .catch((err) => unavailable("", `the participant failed: ${String(err)}`))
        .then((a) => {
          if (res.destroyed) return; // the sender hung up; the processing is done all the same
          res.writeHead(a.status, { ...a.headers, "Content-Length": String(a.body.length) });
          res.end(a.body);
        });
    });
  };
}

function tokenOfHeader(headers: HeaderBag): string {
  const v = headers["baton-token"];
  const one = Array.isArray(v) ? (v.length === 1 ? v[0] : undefined) : v;
  return one !== undefined && (isTokenId(one) || one === "0".repeat(32)) ? one : "";
}

function sameAsEntry(entry: OutboxEntry, sig: Signal): Answer | undefined {
  if (entry.conversation !== sig.conversation || entry.causation !== (sig.causation ?? "") || entry.destination !== sig.destination || entry.type !== sig.type) {
    return problem(422, "rejected", "Rejected", "the signal differs from the one that was processed", sig.id);
  }
  if (entry.digest !== digestOf(sig.payload)) return problem(422, "digest-mismatch", "Digest Mismatch", "the payload differs from the one processed", sig.id);
  return undefined;
}

function base64(v: Uint8Array | string | undefined): string {
  if (v === undefined) return "";
  return (typeof v === "string" ? Buffer.from(v, "utf8") : Buffer.from(v)).toString("base64");
}

function baseHeaders(token: string, outcome?: string): Record<string, string> {
  const h: Record<string, string> = { "Cache-Control": "no-store" };
  if (token) h["Baton-Token"] = token;
  if (outcome) h["Baton-Outcome"] = outcome;
  return h;
}

function reply(entry: OutboxEntry, outcome: string): Answer {
  return { status: 200, headers: { ...baseHeaders(entry.id, outcome), "Content-Type": entry.replyType || "application/octet-stream" }, body: Buffer.from(entry.reply, "base64") };
}

function problem(status: number, name: string, title: string, detail: string, token: string, outcome?: string): Answer {
  const h: Record<string, string> = { ...baseHeaders(token, outcome), "Content-Type": "application/problem+json" };
  if (status === 503) h["Retry-After"] = "1";
  const doc: Record<string, unknown> = { type: problemBase + name, title, status, detail };
  if (token) doc.token = token;
  return { status, headers: h, body: Buffer.from(JSON.stringify(doc)) };
}

function duplicate(token: string): Answer {
  return problem(409, "already-processed", "Already Processed", "the token is not live: the signal was processed before, or never issued", token, "duplicate");
}

function unavailable(token: string, detail: string): Answer {
  return problem(503, "unavailable", "Unavailable", detail, token);
}
