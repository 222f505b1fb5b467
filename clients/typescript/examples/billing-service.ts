/**
 * A billing service in Node that takes part in a baton conversation.
 *
 * It receives "invoice.request" signals over HTTP (POST /signals), consumes
 * each signal's token through the token service in the same transition that
 * creates the token of the signal it emits ("invoice.issued" to shipping),
 * and then sends that signal to the shipping service. A copy of a signal
 * that was already processed finds its token consumed and is answered
 * 409 "already processed" (Baton-Outcome: duplicate), without doing
 * anything. Every answer other than a reply is an RFC 9457 problem document
 * with the status and type of docs/protocol.md section 5.2.
 *
 * Configuration (environment):
 *   BATON_TOKEN_SERVICE_URL  the token service, e.g. http://127.0.0.1:7451
 *   BATON_API_KEY            this system's API key (system "billing")
 *   BATON_DESTINATION        this service's destination name (default billing)
 *   SHIPPING_URL             where "invoice.issued" signals go
 *   PORT                     port to listen on, 0 for a free one (default 0)
 *
 * It prints "listening on http://127.0.0.1:PORT" once it accepts requests.
 *
 * This example keeps no data of its own. A service with its own database
 * records the signals it emits with its state before the transition (the
 * outbox of docs/protocol.md), so that a crash between the transition and
 * the send loses nothing; here such a crash would leave the shipping token
 * live without its signal, visible as stuck work in listByDestination.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

import {
  childSignal,
  delivered,
  digestOf,
  isTokenId,
  MAX_PAYLOAD_BYTES,
  Outcomes,
  parseSignal,
  sendSignal,
  SignalError,
  SignalHeaders,
  tokenFor,
  TokenServiceClient,
  TokenServiceError,
} from "../src/index.js";

function env(name: string, fallback?: string): string {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === "") {
    console.error(`billing-service: ${name} is required`);
    process.exit(2);
  }
  return v;
}

const tokens = new TokenServiceClient(env("BATON_TOKEN_SERVICE_URL"), env("BATON_API_KEY"));
const destination = env("BATON_DESTINATION", "billing");
const shippingUrl = env("SHIPPING_URL");
const port = Number(env("PORT", "0"));

function log(msg: string): void {
  console.log(`billing-service: ${msg}`);
}

function answer(res: ServerResponse, status: number, outcome: string | null, body: unknown, token?: string): void {
  const headers: Record<string, string> = { "Content-Type": "application/json", "Cache-Control": "no-store" };
  if (outcome !== null) headers[SignalHeaders.outcome] = outcome;
  if (token !== undefined) headers[SignalHeaders.token] = token;
  res.writeHead(status, headers).end(JSON.stringify(body) + "\n");
}

/** Problem types of signal answers: docs/protocol.md section 5.2. */
const signalProblemBase = "https://github.com/batonhq/baton/blob/main/docs/protocol.md#problem-";

/**
 * Answers with an RFC 9457 problem document, as docs/protocol.md section
 * 5.2 specifies for every answer that is not a reply.
 */
function problem(
  res: ServerResponse,
  status: number,
  name: string,
  title: string,
  detail: string,
  opts: { token?: string; outcome?: string; retryAfter?: number } = {},
): void {
  const headers: Record<string, string> = { "Content-Type": "application/problem+json", "Cache-Control": "no-store" };
  if (opts.token !== undefined) headers[SignalHeaders.token] = opts.token;
  if (opts.outcome !== undefined) headers[SignalHeaders.outcome] = opts.outcome;
  if (opts.retryAfter !== undefined) headers["Retry-After"] = String(opts.retryAfter);
  const doc: Record<string, unknown> = { type: signalProblemBase + name, title, status, detail };
  if (opts.token !== undefined) doc.token = opts.token;
  res.writeHead(status, headers).end(JSON.stringify(doc) + "\n");
}

/** The 409 answer to a signal whose token is not live: delivered, nothing done. */
function alreadyProcessed(res: ServerResponse, token: string): void {
  problem(res, 409, "already-processed", "Already Processed",
    "this signal's token is not live: the signal was already processed (or never issued); it counts as delivered",
    { token, outcome: Outcomes.duplicate });
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_PAYLOAD_BYTES) throw new SignalError("payload too large");
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Sends a signal until the receiver takes it or answers it was already processed. */
async function dispatch(url: string, sig: Parameters<typeof sendSignal>[1]): Promise<void> {
  let delay = 50;
  for (let attempt = 1; ; attempt++) {
    try {
      const a = await sendSignal(url, sig);
      if (delivered(a)) return;
      if (a.status >= 400 && a.status < 500 && a.status !== 429) {
        throw new Error(`shipping refused signal ${sig.id}: ${a.status} ${Buffer.from(a.body).toString()}`);
      }
    } catch (err) {
      if (attempt >= 8) throw err;
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 2000);
  }
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.url !== "/signals") {
    answer(res, 404, null, { error: "POST /signals only" });
    return;
  }
  if (req.method !== "POST") {
    res.setHeader("Allow", "POST");
    problem(res, 405, "method-not-allowed", "Method Not Allowed", "a signal is sent with POST");
    return;
  }
  const sig = parseSignal(req.headersDistinct, await readBody(req));
  if (sig.destination !== destination) {
    problem(res, 403, "misaddressed", "Misaddressed", `signal for ${sig.destination} arrived at ${destination}`, { token: sig.id });
    return;
  }
  // Read the token: absent means this signal was processed already (or never issued).
  const token = await tokens.get(sig.id);
  if (token === undefined) {
    log(`${sig.type} ${sig.id}: already processed`);
    alreadyProcessed(res, sig.id);
    return;
  }
  if (token.destination !== destination) {
    problem(res, 403, "misaddressed", "Misaddressed", `token ${sig.id} is addressed to ${token.destination}`, { token: sig.id });
    return;
  }
  if (token.expiresAt !== undefined && Date.parse(token.expiresAt) <= Date.now()) {
    problem(res, 410, "expired", "Expired", `root token ${sig.id} expired unused`, { token: sig.id });
    return;
  }
  if (token.digest !== digestOf(sig.payload)) {
    problem(res, 422, "digest-mismatch", "Digest Mismatch", `payload does not match token ${sig.id}`, { token: sig.id });
    return;
  }
  if (token.type !== sig.type || token.conversation !== sig.conversation || token.causation !== sig.causation) {
    problem(res, 422, "rejected", "Rejected", `the signal's type, conversation or causation differ from token ${sig.id}`, { token: sig.id });
    return;
  }
  if (sig.type !== "invoice.request") {
    problem(res, 404, "unknown-type", "Unknown Type", `no activity for ${sig.type} here`, { token: sig.id });
    return;
  }
  // The activity: issue an invoice for the order.
  let order: { order: string; amount: number };
  try {
    order = JSON.parse(Buffer.from(sig.payload).toString("utf8")) as { order: string; amount: number };
  } catch {
    problem(res, 422, "rejected", "Rejected", `the payload of ${sig.id} is not a JSON order`, { token: sig.id });
    return;
  }
  const invoice = { invoice: `INV-${sig.conversation.slice(0, 8)}`, order: order.order, amount: order.amount };
  const next = childSignal(sig, { destination: "shipping", type: "invoice.issued", payload: JSON.stringify(invoice) });
  // Consume our token and create the next signal's, atomically.
  const consumed = await tokens.transition(sig.id, [tokenFor(next)]);
  if (!consumed) {
    log(`${sig.type} ${sig.id}: already processed (another copy consumed it first)`);
    alreadyProcessed(res, sig.id);
    return;
  }
  await dispatch(shippingUrl, next);
  log(`${sig.type} ${sig.id}: applied; sent ${next.type} ${next.id} to shipping`);
  answer(res, 200, Outcomes.applied, invoice, sig.id);
}

const server = createServer((req, res) => {
  handle(req, res).catch((err: unknown) => {
    const token = req.headers[SignalHeaders.token.toLowerCase()];
    const id = typeof token === "string" && isTokenId(token) ? token : undefined;
    if (err instanceof SignalError) {
      if (err.message === "payload too large") {
        problem(res, 413, "payload-too-large", "Payload Too Large", err.message, id === undefined ? {} : { token: id });
      } else {
        problem(res, 400, "malformed-signal", "Malformed Signal", err.message);
      }
    } else if (err instanceof TokenServiceError && err.status === 403) {
      problem(res, 403, "misaddressed", "Misaddressed", err.message, id === undefined ? {} : { token: id });
    } else {
      log(`error: ${String(err)}`);
      // Retryable: the sender tries again; every step is safe to repeat.
      problem(res, 503, "unavailable", "Service Unavailable", String(err), { ...(id === undefined ? {} : { token: id }), retryAfter: 1 });
    }
  });
});

server.listen(port, "127.0.0.1", () => {
  const addr = server.address() as AddressInfo;
  console.log(`listening on http://127.0.0.1:${addr.port}`);
});

for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
