/**
 * A billing service in Node that takes part in a baton conversation.
 *
 * It receives "invoice.request" signals over HTTP (POST /signals), consumes
 * each signal's token through the token service in the same transition that
 * creates the token of the signal it emits ("invoice.issued" to shipping),
 * and then sends that signal to the shipping service. A copy of a signal
 * that was already processed finds its token consumed and is answered
 * "already processed" (Baton-Outcome: duplicate), without doing anything.
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

function answer(res: ServerResponse, status: number, outcome: string | null, body: unknown): void {
  const headers: Record<string, string> = { "Content-Type": "application/json" };
  if (outcome !== null) headers[SignalHeaders.outcome] = outcome;
  res.writeHead(status, headers).end(JSON.stringify(body) + "\n");
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
  if (req.method !== "POST" || req.url !== "/signals") {
    answer(res, 404, null, { error: "POST /signals only" });
    return;
  }
  const sig = parseSignal(req.headersDistinct, await readBody(req));
  if (sig.destination !== destination) {
    answer(res, 421, null, { error: `signal for ${sig.destination} arrived at ${destination}` });
    return;
  }
  // Read the token: absent means this signal was processed already (or never issued).
  const token = await tokens.get(sig.id);
  if (token === undefined) {
    log(`${sig.type} ${sig.id}: already processed`);
    answer(res, 200, Outcomes.duplicate, { outcome: Outcomes.duplicate, detail: "already processed" });
    return;
  }
  if (token.digest !== digestOf(sig.payload)) {
    answer(res, 422, null, { error: `payload does not match token ${sig.id}` });
    return;
  }
  // The activity: issue an invoice for the order.
  const order = JSON.parse(Buffer.from(sig.payload).toString("utf8")) as { order: string; amount: number };
  const invoice = { invoice: `INV-${sig.conversation.slice(0, 8)}`, order: order.order, amount: order.amount };
  const next = childSignal(sig, { destination: "shipping", type: "invoice.issued", payload: JSON.stringify(invoice) });
  // Consume our token and create the next signal's, atomically.
  const consumed = await tokens.transition(sig.id, [tokenFor(next)]);
  if (!consumed) {
    log(`${sig.type} ${sig.id}: already processed (another copy consumed it first)`);
    answer(res, 200, Outcomes.duplicate, { outcome: Outcomes.duplicate, detail: "already processed" });
    return;
  }
  await dispatch(shippingUrl, next);
  log(`${sig.type} ${sig.id}: applied; sent ${next.type} ${next.id} to shipping`);
  answer(res, 200, Outcomes.applied, invoice);
}

const server = createServer((req, res) => {
  handle(req, res).catch((err: unknown) => {
    if (err instanceof SignalError) {
      answer(res, 400, null, { error: err.message });
    } else if (err instanceof TokenServiceError && err.status === 403) {
      answer(res, 403, null, { error: err.message });
    } else {
      log(`error: ${String(err)}`);
      // Retryable: the sender tries again; every step is safe to repeat.
      answer(res, 503, null, { error: String(err) });
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
