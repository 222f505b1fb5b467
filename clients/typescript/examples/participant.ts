/**
 * A participant in Node built on the client's participant core: billing's
 * "charge" and the conformance kit's counting activity, with an outbox
 * kept in JSON files (docs/protocol.md section 3.2).
 *
 * Configuration (environment), as `baton conformance --run` and the
 * cross-language e2e start it:
 *   BATON_TOKEN_SERVICE  base URL of the token service (required)
 *   BATON_API_KEY        this system's key there (required)
 *   BATON_DESTINATION    the destination served (default billing)
 *   BATON_ADDR           host:port to serve signals on (default 127.0.0.1:7490)
 *   BATON_DATA           directory of the entity files (default ./baton-node-data)
 *   BATON_FORWARD        DESTINATION=URL: the counting activity passes each signal on there
 */
import { createServer } from "node:http";

import { FileEntityStore } from "../src/entities.js";
import { TokenServiceClient } from "../src/index.js";
import { nodeListener, Participant, Permanent, type Effects } from "../src/participant.js";
import { Sender } from "../src/sender.js";

const count = "conformance.count";

function required(name: string): string {
  const v = process.env[name];
  if (!v) {
    console.error(`participant: ${name} is required`);
    process.exit(2);
  }
  return v;
}

const destination = process.env.BATON_DESTINATION || "billing";
const [forwardTo, forwardURL] = (process.env.BATON_FORWARD ?? "").split(/=(.*)/s);
const participant = new Participant(
  destination,
  new TokenServiceClient(required("BATON_TOKEN_SERVICE"), required("BATON_API_KEY")),
  new FileEntityStore(process.env.BATON_DATA || "baton-node-data"),
  forwardTo && forwardURL ? { sender: new Sender({ [forwardTo]: forwardURL }) } : {},
);

function json(payload: Uint8Array): Record<string, unknown> {
  return JSON.parse(Buffer.from(payload).toString("utf8")) as Record<string, unknown>;
}

participant.activity(
  count,
  (sig) => {
    const entity = json(sig.payload).entity;
    if (typeof entity !== "string" || entity === "") throw new Error('payload is not {"entity": name}');
    return "count/" + entity;
  },
  (sig, state): Effects => {
    state.count = ((state.count as number | undefined) ?? 0) + 1;
    return {
      emit: forwardTo && forwardURL ? [{ destination: forwardTo, type: count, payload: sig.payload }] : [],
      reply: JSON.stringify({ count: state.count }),
    };
  },
);

participant.activity(
  "charge",
  (sig) => "account/" + String(json(sig.payload).account),
  (sig, state): Effects => {
    const charge = json(sig.payload);
    if (typeof charge.amount !== "number") throw new Permanent('payload is not {"account", "amount"}');
    state.balance = ((state.balance as number | undefined) ?? 0) + charge.amount;
    state.charges = ((state.charges as number | undefined) ?? 0) + 1;
    return { reply: JSON.stringify({ account: charge.account, balance: state.balance, charges: state.charges }) };
  },
);

const stopSweeping = participant.startSweeper();
const [host, port] = (process.env.BATON_ADDR || "127.0.0.1:7490").split(/:(?=[^:]*$)/);
const server = createServer(nodeListener(participant));
server.listen(Number(port), host, () => {
  console.log(`participant ${JSON.stringify(destination)} serves signals at http://${host}:${port}/signals`);
});
process.on("SIGTERM", () => {
  stopSweeping();
  server.close(() => process.exit(0));
});
