/**
 * Client for the baton token service (`baton serve`) and helpers for baton
 * HTTP signals, so that a Node service takes part in baton conversations.
 *
 * A service that receives a signal:
 *   1. reads it from the request (parseSignal),
 *   2. reads its token (client.get); no live token means a duplicate,
 *   3. does its work and consumes the token in one transition that creates
 *      the tokens of the signals it emits (client.transition); consumed=false
 *      means another copy got there first: a duplicate,
 *   4. sends the emitted signals (sendSignal).
 *
 * See docs/token-service.md for the API and docs/protocol.md for the
 * protocol; the Go engine does the same steps with an outbox so that a crash
 * between 3 and 4 loses nothing.
 */
import { createHash, randomBytes } from "node:crypto";

/** Limits that every baton component enforces (baton.MaxPayloadBytes, MaxNameBytes). */
export const MAX_PAYLOAD_BYTES = 1 << 20;
export const MAX_NAME_BYTES = 200;

/** Header names of a signal request and of the answers to it (httpsignal). */
export const SignalHeaders = {
  token: "Baton-Token",
  conversation: "Baton-Conversation",
  causation: "Baton-Causation",
  type: "Baton-Type",
  destination: "Baton-Destination",
  idempotencyKey: "Idempotency-Key",
  traceparent: "traceparent",
  tracestate: "tracestate",
  outcome: "Baton-Outcome",
} as const;

/** Values of the Baton-Outcome answer header. */
export const Outcomes = {
  /** This request ran the activity. */
  applied: "applied",
  /** An earlier copy ran the activity; the answer is its reply. */
  replayed: "replayed",
  /** The token was consumed already (or never existed): already processed. */
  duplicate: "duplicate",
  /** Another copy is being processed right now; retry later. */
  inProgress: "in-progress",
} as const;

const problemBase = "https://github.com/batonhq/baton/blob/main/docs/token-service.md#problem-";

/** Problem types of the token service (RFC 9457 "type"); match on these. */
export const ProblemTypes = {
  invalid: problemBase + "invalid-request",
  unauthorized: problemBase + "unauthorized",
  forbidden: problemBase + "forbidden",
  notYourToken: problemBase + "not-your-token",
  notAChild: problemBase + "not-a-child",
  notFound: problemBase + "not-found",
  noRoute: problemBase + "no-such-route",
  method: problemBase + "method-not-allowed",
  exists: problemBase + "token-exists",
  expired: problemBase + "expired",
  tooLarge: problemBase + "body-too-large",
  mediaType: problemBase + "unsupported-media-type",
  outcomeUnknown: problemBase + "outcome-unknown",
  notApplied: problemBase + "not-applied",
} as const;

/** A token as the service reads and writes it; ids are 32 lowercase hex digits. */
export interface Token {
  id: string;
  conversation: string;
  /** Absent on root tokens. */
  causation?: string;
  destination: string;
  type: string;
  /** SHA-256 of the signal's payload, 64 lowercase hex digits. */
  digest: string;
  /** RFC 3339; the service sets it when absent. */
  createdAt?: string;
  /** Root tokens only. */
  expiresAt?: string;
}

/**
 * A root token to issue. The service chooses its id (so that no client can
 * issue a consumed root's id again) and its creation time.
 */
export interface RootRequest {
  /** A running conversation to add the root to; absent: the root's own id. */
  conversation?: string;
  destination: string;
  type: string;
  /** SHA-256 of the payload the signal will carry; absent: the empty payload's. */
  digest?: string;
  /** RFC 3339: when the root may no longer be admitted. */
  expiresAt?: string;
}

/** One page of a listing; pass nextAfter as `after` for the next page. */
export interface TokenPage {
  tokens: Token[];
  nextAfter?: string;
}

/** A signal: a request to one destination to do one activity. */
export interface Signal {
  id: string;
  conversation: string;
  causation?: string;
  destination: string;
  type: string;
  payload: Uint8Array;
  traceparent?: string;
  tracestate?: string;
}

/** Returns a fresh token id: 128 bits from crypto.randomBytes, as 32 lowercase hex digits. */
export function newTokenId(): string {
  return randomBytes(16).toString("hex");
}

/** Returns the SHA-256 of a payload as lowercase hex, the digest a token records. */
export function digestOf(payload: Uint8Array | string): string {
  return createHash("sha256").update(payload).digest("hex");
}

/** Writes a time as the service does: RFC 3339 in UTC with microseconds. */
export function formatTime(d: Date): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

const idPattern = /^[0-9a-f]{32}$/;
const zeroId = "0".repeat(32);

/** Reports whether s is a token id: 32 lowercase hex digits, not all zero. */
export function isTokenId(s: unknown): s is string {
  return typeof s === "string" && idPattern.test(s) && s !== zeroId;
}

/** Error of parseSignal and the signal helpers: the signal is malformed. */
export class SignalError extends Error {
  override name = "SignalError";
}

function checkName(what: string, name: string): void {
  if (name === "") throw new SignalError(`missing ${what}`);
  if (Buffer.byteLength(name, "utf8") > MAX_NAME_BYTES) {
    throw new SignalError(`${what} longer than ${MAX_NAME_BYTES} bytes`);
  }
  for (const ch of name) {
    const cp = ch.codePointAt(0)!;
    if (cp <= 0x20 || cp === 0x7f) throw new SignalError(`${what} ${JSON.stringify(name)} contains a space or control character`);
  }
}

/** Checks a signal as baton.Signal.Validate does; throws SignalError. */
export function validateSignal(sig: Signal): void {
  if (!isTokenId(sig.id)) throw new SignalError("token id must be 32 lowercase hex digits, not all zero");
  if (!isTokenId(sig.conversation)) throw new SignalError("conversation id must be 32 lowercase hex digits, not all zero");
  if (sig.causation !== undefined && !isTokenId(sig.causation)) throw new SignalError("causation id must be 32 lowercase hex digits");
  checkName("destination", sig.destination);
  checkName("type", sig.type);
  if (sig.payload.length > MAX_PAYLOAD_BYTES) {
    throw new SignalError(`payload of ${sig.payload.length} bytes exceeds the limit of ${MAX_PAYLOAD_BYTES}`);
  }
}

/** What an activity asks to send: the engine's Emit. */
export interface Emit {
  destination: string;
  type: string;
  payload?: Uint8Array | string;
}

function bytesOf(payload: Uint8Array | string | undefined): Uint8Array {
  if (payload === undefined) return new Uint8Array();
  return typeof payload === "string" ? Buffer.from(payload, "utf8") : payload;
}

/** Returns the signal that starts a new conversation: its id is the conversation's. */
export function rootSignal(emit: Emit): Signal {
  const id = newTokenId();
  const sig: Signal = { id, conversation: id, destination: emit.destination, type: emit.type, payload: bytesOf(emit.payload) };
  validateSignal(sig);
  return sig;
}

/**
 * Returns a signal that processing parent emits: a fresh token id, parent's
 * conversation, parent as causation, and parent's trace context.
 */
export function childSignal(parent: Signal, emit: Emit): Signal {
  const sig: Signal = {
    id: newTokenId(),
    conversation: parent.conversation,
    causation: parent.id,
    destination: emit.destination,
    type: emit.type,
    payload: bytesOf(emit.payload),
  };
  if (parent.traceparent !== undefined) sig.traceparent = parent.traceparent;
  if (parent.tracestate !== undefined) sig.tracestate = parent.tracestate;
  validateSignal(sig);
  return sig;
}

/** Returns the token that authorises sig. */
export function tokenFor(sig: Signal, createdAt: Date = new Date()): Token {
  const t: Token = {
    id: sig.id,
    conversation: sig.conversation,
    destination: sig.destination,
    type: sig.type,
    digest: digestOf(sig.payload),
    createdAt: formatTime(createdAt),
  };
  if (sig.causation !== undefined) t.causation = sig.causation;
  return t;
}

const traceparentPattern = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

function validTraceparent(s: string): boolean {
  return traceparentPattern.test(s) && !/^00-0{32}-/.test(s) && !/^00-[0-9a-f]{32}-0{16}-/.test(s);
}

/** Returns the request headers that carry sig (without its payload, the body). */
export function signalHeaders(sig: Signal): Record<string, string> {
  validateSignal(sig);
  const h: Record<string, string> = {
    [SignalHeaders.token]: sig.id,
    [SignalHeaders.conversation]: sig.conversation,
    [SignalHeaders.type]: sig.type,
    [SignalHeaders.destination]: sig.destination,
    // A Structured Field string (RFC 8941), as the IETF Idempotency-Key draft asks.
    [SignalHeaders.idempotencyKey]: `"${sig.id}"`,
    "Content-Type": "application/octet-stream",
  };
  if (sig.causation !== undefined) h[SignalHeaders.causation] = sig.causation;
  if (sig.traceparent !== undefined && validTraceparent(sig.traceparent)) {
    h[SignalHeaders.traceparent] = sig.traceparent;
    if (sig.tracestate) h[SignalHeaders.tracestate] = sig.tracestate;
  }
  return h;
}

type HeaderBag = Record<string, string | string[] | undefined>;

function single(headers: HeaderBag, name: string): string | undefined {
  const v = headers[name.toLowerCase()];
  if (v === undefined) return undefined;
  if (Array.isArray(v)) {
    if (v.length === 0) return undefined;
    if (v.length > 1) throw new SignalError(`${v.length} ${name} headers, want one`);
    return v[0];
  }
  return v;
}

/**
 * Reads the signal that a request carries. Pass req.headersDistinct (so that
 * a repeated header is refused) or req.headers, and the body. Throws
 * SignalError for a request that is not a well-formed signal.
 */
export function parseSignal(headers: HeaderBag, body: Uint8Array): Signal {
  const id = single(headers, SignalHeaders.token);
  if (id === undefined) throw new SignalError(`missing ${SignalHeaders.token} header`);
  const conversation = single(headers, SignalHeaders.conversation);
  if (conversation === undefined) throw new SignalError(`missing ${SignalHeaders.conversation} header`);
  const type = single(headers, SignalHeaders.type);
  const destination = single(headers, SignalHeaders.destination);
  if (type === undefined || destination === undefined) {
    throw new SignalError(`${SignalHeaders.type} and ${SignalHeaders.destination} headers are required`);
  }
  const sig: Signal = { id, conversation, type, destination, payload: body };
  const causation = single(headers, SignalHeaders.causation);
  if (causation !== undefined) sig.causation = causation;
  const key = single(headers, SignalHeaders.idempotencyKey);
  if (key !== undefined && key.replace(/^"(.*)"$/, "$1") !== id) {
    throw new SignalError(`${SignalHeaders.idempotencyKey} ${JSON.stringify(key)} differs from ${SignalHeaders.token} ${id}`);
  }
  // An invalid trace context is dropped, not refused: the trace restarts.
  try {
    const tp = single(headers, SignalHeaders.traceparent);
    if (tp !== undefined && validTraceparent(tp)) {
      sig.traceparent = tp;
      const ts = single(headers, SignalHeaders.tracestate);
      if (ts !== undefined && ts.length <= 512 && /^[\x20-\x7e]*$/.test(ts)) sig.tracestate = ts;
    }
  } catch {
    // repeated trace headers: drop the trace context
  }
  validateSignal(sig);
  return sig;
}

/** The answer to a signal sent with sendSignal. */
export interface SignalAnswer {
  status: number;
  /** Baton-Outcome of the answer, if the receiver set it. */
  outcome: string | null;
  body: Uint8Array;
}

/** Options of sendSignal and of the client. */
export interface RequestOptions {
  /** Aborts the request after this many milliseconds. Default 30000. */
  timeoutMs?: number;
  /** The fetch to use. Default the global fetch. */
  fetch?: typeof fetch;
}

/**
 * Sends sig to url as an HTTP signal (POST, Baton headers, payload as body).
 * The caller retries until the answer is 2xx, or says the token was already
 * consumed (Baton-Outcome: duplicate): both mean the signal was delivered.
 */
export async function sendSignal(url: string, sig: Signal, options: RequestOptions = {}): Promise<SignalAnswer> {
  const doFetch = options.fetch ?? fetch;
  const res = await doFetch(url, {
    method: "POST",
    headers: signalHeaders(sig),
    body: sig.payload,
    signal: AbortSignal.timeout(options.timeoutMs ?? 30_000),
  });
  const body = new Uint8Array(await res.arrayBuffer());
  return { status: res.status, outcome: res.headers.get(SignalHeaders.outcome), body };
}

/** Reports whether an answer means the signal was delivered. */
export function delivered(answer: SignalAnswer): boolean {
  return (answer.status >= 200 && answer.status < 300) || answer.outcome === Outcomes.duplicate;
}

/** An RFC 9457 problem document. */
export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  token?: string;
}

/** The most items the service takes in one batch request; readTokens and transitionBatch send more in several. */
export const maxBatch = 100;

/** One transition of TokenServiceClient.transitionBatch. */
export interface BatchTransition {
  consume: string;
  create?: Token[];
  /** The consumed token's conversation, where known: a hint, as transition's. */
  conversation?: string;
}

/**
 * Throws a TypeError if a token appears twice in a batch of transitions: to
 * consume, or to create, across all its requests. The service checks this
 * within one request only; checked before any is sent, a bad batch is
 * refused whole, as the Go client refuses it.
 */
function checkDistinctTokens(transitions: BatchTransition[]): void {
  const seen = new Map<string, number>(); // token id: the transition that names it
  const check = (id: string, k: number) => {
    const first = seen.get(id);
    if (first !== undefined) {
      throw new TypeError(`transitionBatch: token ${id} appears twice in the batch (transitions ${first} and ${k}); nothing was sent`);
    }
    seen.set(id, k);
  };
  transitions.forEach((t, k) => {
    check(t.consume, k);
    for (const child of t.create ?? []) check(child.id, k);
  });
}

/**
 * The results of a batch answer, one for each of its n items. An answer
 * without them is unreadable: whatever the request did, its outcome is
 * unknown (notApplied false), as for a body that is not JSON.
 */
function batchResults<R>(answer: { results?: R[] } | null, n: number, path: string): R[] {
  const results: unknown = typeof answer === "object" && answer !== null ? answer.results : undefined;
  if (!Array.isArray(results) || results.length !== n || !results.every((r) => typeof r === "object" && r !== null)) {
    throw new TokenServiceError(`POST ${path}: unreadable answer: no result for each of ${n} items`, { status: 200, notApplied: false });
  }
  return results as R[];
}

/** The error of one item of a batch, from its problem. */
function itemError(path: string, problem: Problem | undefined): TokenServiceError {
  const notApplied = problem?.type !== undefined && notAppliedTypes.has(problem.type);
  return new TokenServiceError(`POST ${path}: ${problem?.status ?? 0} ${problem?.title ?? "no result"}${problem?.detail ? ": " + problem.detail : ""}`, {
    status: problem?.status ?? 0,
    ...(problem === undefined ? {} : { problem }),
    notApplied,
  });
}

/** The error of readTokens for an id that is malformed: the service's answer to get for it, made without asking. */
function malformedIdError(id: unknown): TokenServiceError {
  const detail = `${JSON.stringify(id)} is not a token id (32 lowercase hex digits)`;
  return new TokenServiceError(`POST /v1/tokens/read: 400 invalid request: ${detail}; not sent`, {
    status: 400,
    problem: { type: ProblemTypes.invalid, title: "Bad Request", status: 400, detail },
    notApplied: true,
  });
}

/** A failed request's error as the result of each of its transitions. */
function transitionError(err: unknown): TokenServiceError {
  if (err instanceof TokenServiceError) return err;
  return new TokenServiceError(`POST /v1/transitions/batch: outcome unknown: ${String(err)}`, { status: 0, notApplied: false, cause: err });
}

/** Types whose problem proves nothing was written. */
const notAppliedTypes = new Set<string>([
  ProblemTypes.invalid,
  ProblemTypes.unauthorized,
  ProblemTypes.forbidden,
  ProblemTypes.notYourToken,
  ProblemTypes.notAChild,
  ProblemTypes.notFound,
  ProblemTypes.exists,
  ProblemTypes.expired,
  ProblemTypes.tooLarge,
  ProblemTypes.mediaType,
  ProblemTypes.notApplied,
  // A service without the route (an older one, or a wrong path) ran nothing.
  ProblemTypes.noRoute,
  ProblemTypes.method,
]);

/**
 * A failed call to the token service. notApplied is true when the failure
 * proves nothing was written (a refusal, or no connection); otherwise the
 * outcome is unknown, and retrying the same call is safe.
 */
export class TokenServiceError extends Error {
  override name = "TokenServiceError";
  readonly status: number;
  readonly type: string | undefined;
  readonly detail: string | undefined;
  readonly token: string | undefined;
  readonly notApplied: boolean;

  constructor(message: string, init: { status: number; problem?: Problem; notApplied: boolean; cause?: unknown }) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.status = init.status;
    this.type = init.problem?.type;
    this.detail = init.problem?.detail;
    this.token = init.problem?.token;
    this.notApplied = init.notApplied;
  }
}

interface WireToken {
  id: string;
  conversation: string;
  causation?: string;
  destination: string;
  type: string;
  digest: string;
  created_at?: string;
  expires_at?: string;
}

function toWire(t: Token): WireToken {
  const w: WireToken = { id: t.id, conversation: t.conversation, destination: t.destination, type: t.type, digest: t.digest };
  if (t.causation !== undefined) w.causation = t.causation;
  if (t.createdAt !== undefined) w.created_at = t.createdAt;
  if (t.expiresAt !== undefined) w.expires_at = t.expiresAt;
  return w;
}

function fromWire(w: WireToken): Token {
  const t: Token = { id: w.id, conversation: w.conversation, destination: w.destination, type: w.type, digest: w.digest };
  if (w.causation) t.causation = w.causation;
  if (w.created_at) t.createdAt = w.created_at;
  if (w.expires_at) t.expiresAt = w.expires_at;
  return t;
}

/** Whether a fetch failure proves the request was never sent. */
function connectionNotMade(err: unknown): boolean {
  const code = (err as { cause?: { code?: string } })?.cause?.code;
  return code === "ECONNREFUSED" || code === "ENOTFOUND" || code === "EAI_AGAIN" || code === "EHOSTUNREACH";
}

/**
 * Client of the token service. It authenticates as one registered system
 * with its API key (Authorization: Bearer). Safe to share: it holds no
 * state between calls.
 */
export class TokenServiceClient {
  private readonly base: string;
  private readonly auth: string;
  private readonly timeoutMs: number;
  private readonly doFetch: typeof fetch;

  constructor(baseUrl: string, apiKey: string, options: RequestOptions = {}) {
    const u = new URL(baseUrl);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new TypeError(`base URL ${baseUrl} must be http or https`);
    if (/\s/.test(apiKey) || apiKey === "") throw new TypeError("the API key must be non-empty and contain no whitespace");
    this.base = baseUrl.replace(/\/+$/, "");
    this.auth = `Bearer ${apiKey}`;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.doFetch = options.fetch ?? fetch;
  }

  /**
   * Issues a root token (the system needs issue_roots). Resolves to the
   * stored token, with the id the service chose.
   */
  async issueRoot(root: RootRequest): Promise<Token> {
    const body: Record<string, string> = { destination: root.destination, type: root.type };
    if (root.conversation !== undefined) body.conversation = root.conversation;
    if (root.digest !== undefined) body.digest = root.digest;
    if (root.expiresAt !== undefined) body.expires_at = root.expiresAt;
    return fromWire(await this.call<WireToken>("POST", "/v1/roots", 201, body));
  }

  /**
   * Claims a root so that it no longer expires: a participant does this
   * after admitting a signal whose token has an expiry, before committing
   * its activity (docs/protocol.md 3.2, step 3). Resolves to the token as
   * stored; rejects with type ProblemTypes.expired if it expired, and
   * ProblemTypes.notFound if it is not live (a duplicate).
   */
  async claimRoot(id: string, conversation?: string): Promise<Token> {
    return fromWire(await this.call<WireToken>("POST", `/v1/tokens/${encodeURIComponent(id)}/claim`, 200, undefined, conversation));
  }

  /**
   * Consumes the token `consume` and creates `create` (its children) in one
   * atomic step. Resolves to false if the token was not live: the signal is
   * a duplicate and nothing was created.
   *
   * `conversation`, here and in get and claimRoot, is the conversation of
   * the token named (the signal's), sent as the Baton-Conversation header:
   * a service whose token store is split by conversation then asks one
   * part instead of every part.
   */
  async transition(consume: string, create: Token[] = [], conversation?: string): Promise<boolean> {
    const answer = await this.call<{ consumed: boolean }>("POST", "/v1/transitions", 200, {
      consume,
      create: create.map(toWire),
    }, conversation);
    return answer.consumed === true;
  }

  /**
   * Reads a live token; resolves to undefined if it is not live. The zero
   * id, which no token has, is answered so without asking the service (as
   * the Go client answers it), which would refuse it as malformed.
   */
  async get(id: string, conversation?: string): Promise<Token | undefined> {
    if (id === zeroId) return undefined;
    try {
      return fromWire(await this.call<WireToken>("GET", `/v1/tokens/${encodeURIComponent(id)}`, 200, undefined, conversation));
    } catch (err) {
      if (err instanceof TokenServiceError && err.type === ProblemTypes.notFound) return undefined;
      throw err;
    }
  }

  /**
   * Reads many tokens, up to maxBatch in one request (POST
   * /v1/tokens/read). Resolves, for each id in order, to the live token,
   * undefined when it is not live, or the TokenServiceError that get would
   * reject with for it alone. `conversations`, if given, names each
   * token's conversation ("" where not known), as get's `conversation`
   * does. Rejects with the error of a whole request.
   *
   * Only well-formed ids are sent: the service refuses a whole request
   * that names a malformed one, every other id of it with it. The zero id
   * resolves to undefined, as get's; an id that is not 32 lowercase hex
   * digits to the error get gets for it, 400 invalid-request (notApplied).
   */
  async readTokens(ids: string[], conversations?: string[]): Promise<(Token | undefined | TokenServiceError)[]> {
    if (conversations !== undefined && conversations.length !== ids.length) {
      throw new TypeError(`readTokens: ${conversations.length} conversations for ${ids.length} ids: give one for each ("" where not known)`);
    }
    const out: (Token | undefined | TokenServiceError)[] = ids.map(() => undefined);
    const send: number[] = []; // indexes into ids
    ids.forEach((id, i) => {
      if (isTokenId(id)) send.push(i);
      else if (id !== zeroId) out[i] = malformedIdError(id);
    });
    for (let start = 0; start < send.length; start += maxBatch) {
      const part = send.slice(start, start + maxBatch);
      const hints = conversations === undefined ? undefined : part.map((i) => conversations[i] ?? "");
      const body = { ids: part.map((i) => ids[i]) };
      const answer = await this.call<{ results: { token?: WireToken; problem?: Problem }[] }>("POST", "/v1/tokens/read", 200, body, undefined, hints);
      batchResults(answer, part.length, "/v1/tokens/read").forEach((r, k) => {
        const i = part[k]!;
        if (r.token !== undefined) {
          out[i] = fromWire(r.token);
          return;
        }
        const err = itemError("/v1/tokens/read", r.problem);
        out[i] = err.type === ProblemTypes.notFound ? undefined : err;
      });
    }
    return out;
  }

  /**
   * Runs many transitions, up to maxBatch in one request (POST
   * /v1/transitions/batch), each applied on its own as transition would
   * apply it. Resolves, for each in order, to whether it consumed its
   * token, or the TokenServiceError that transition would reject with for
   * it alone. Rejects with the error of the first request, which is the
   * whole call's (nothing of the call was applied when it is notApplied);
   * the error of a later request, sent after earlier ones were applied,
   * is each of its transitions' result instead, as in the Go client. A
   * request the service finds too large (413: it ran nothing) is sent
   * again in halves, down to single transitions; after such a split, a
   * half's error is each of its transitions' result, and a transition
   * too large alone keeps its 413. Rejects with a TypeError, before any
   * request is sent, if a token appears twice in the batch: consumed
   * twice, or created with the id of a token another transition (or the
   * same) consumes or creates.
   */
  async transitionBatch(transitions: BatchTransition[]): Promise<(boolean | TokenServiceError)[]> {
    checkDistinctTokens(transitions);
    const out: (boolean | TokenServiceError)[] = [];
    for (let start = 0; start < transitions.length; start += maxBatch) {
      const part = transitions.slice(start, start + maxBatch);
      try {
        out.push(...(await this.transitionParts(part)));
      } catch (err) {
        // Rejecting after earlier requests were applied would lose their
        // results, and a notApplied rejection would say none was.
        if (start === 0) throw err;
        const e = transitionError(err);
        for (let k = 0; k < part.length; k++) out.push(e);
      }
    }
    return out;
  }

  /**
   * Runs part in one request, or, when the service finds that request too
   * large (413: it ran nothing), in two halves, each the same way: a batch
   * of transitions with many children can exceed the service's --max-body
   * where each transition alone fits. Rejects with the error of part's
   * request; after a split, a half's error is each of its transitions'
   * result instead, as in the Go client.
   */
  private async transitionParts(part: BatchTransition[]): Promise<(boolean | TokenServiceError)[]> {
    try {
      return await this.transitionRequest(part);
    } catch (err) {
      if (part.length < 2 || !(err instanceof TokenServiceError) || err.status !== 413) throw err;
    }
    const out: (boolean | TokenServiceError)[] = [];
    const middle = Math.floor(part.length / 2);
    for (const half of [part.slice(0, middle), part.slice(middle)]) {
      try {
        out.push(...(await this.transitionParts(half)));
      } catch (err) {
        const e = transitionError(err);
        for (let k = 0; k < half.length; k++) out.push(e);
      }
    }
    return out;
  }

  /** Runs part in one request; rejects with the request's error. */
  private async transitionRequest(part: BatchTransition[]): Promise<(boolean | TokenServiceError)[]> {
    const body = { transitions: part.map((t) => ({ consume: t.consume, create: (t.create ?? []).map(toWire) })) };
    const hints = part.map((t) => t.conversation ?? "");
    const answer = await this.call<{ results: { consumed?: boolean; problem?: Problem }[] }>("POST", "/v1/transitions/batch", 200, body, undefined, hints);
    return batchResults(answer, part.length, "/v1/transitions/batch").map((r) =>
      r.consumed !== undefined ? r.consumed === true : itemError("/v1/transitions/batch", r.problem));
  }

  /** Lists a conversation's live tokens in ascending id order (the system needs observe). */
  async listByConversation(conversation: string, page: { after?: string; limit?: number } = {}): Promise<TokenPage> {
    return this.list(`/v1/conversations/${encodeURIComponent(conversation)}/tokens`, page);
  }

  /** Lists a destination's live tokens in ascending id order. */
  async listByDestination(destination: string, page: { after?: string; limit?: number } = {}): Promise<TokenPage> {
    return this.list(`/v1/destinations/${encodeURIComponent(destination)}/tokens`, page);
  }

  private async list(path: string, page: { after?: string; limit?: number }): Promise<TokenPage> {
    const q = new URLSearchParams();
    if (page.after) q.set("after", page.after);
    if (page.limit !== undefined) q.set("limit", String(page.limit));
    const query = q.toString();
    const answer = await this.call<{ tokens: WireToken[]; next_after?: string }>("GET", query ? `${path}?${query}` : path, 200);
    const out: TokenPage = { tokens: answer.tokens.map(fromWire) };
    if (answer.next_after) out.nextAfter = answer.next_after;
    return out;
  }

  private async call<T>(method: string, path: string, want: number, body?: unknown, conversation?: string, conversations?: string[]): Promise<T> {
    const headers: Record<string, string> = { Authorization: this.auth, Accept: "application/json, application/problem+json" };
    if (conversation !== undefined && conversation !== "") headers["Baton-Conversation"] = conversation;
    if (conversations !== undefined && conversations.some((c) => c !== "")) headers["Baton-Conversations"] = conversations.join(",");
    const init: RequestInit = { method, headers, signal: AbortSignal.timeout(this.timeoutMs) };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res: Response;
    try {
      res = await this.doFetch(this.base + path, init);
    } catch (err) {
      const notApplied = connectionNotMade(err);
      throw new TokenServiceError(`${method} ${path}: ${notApplied ? "no connection" : "outcome unknown"}: ${String(err)}`, {
        status: 0,
        notApplied,
        cause: err,
      });
    }
    const text = await res.text();
    if (res.status !== want) {
      let problem: Problem | undefined;
      if ((res.headers.get("Content-Type") ?? "").startsWith("application/problem+json")) {
        try {
          problem = JSON.parse(text) as Problem;
        } catch {
          problem = undefined;
        }
      }
      const notApplied = problem?.type !== undefined && notAppliedTypes.has(problem.type);
      throw new TokenServiceError(`${method} ${path}: ${res.status} ${problem?.title ?? res.statusText}${problem?.detail ? ": " + problem.detail : ""}`, {
        status: res.status,
        ...(problem === undefined ? {} : { problem }),
        notApplied,
      });
    }
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw new TokenServiceError(`${method} ${path}: unreadable answer`, { status: res.status, notApplied: false, cause: err });
    }
  }
}
