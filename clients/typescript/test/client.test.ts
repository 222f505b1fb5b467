import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";

import {
  childSignal,
  digestOf,
  formatTime,
  isTokenId,
  maxBatch,
  newTokenId,
  parseSignal,
  ProblemTypes,
  rootSignal,
  SignalError,
  signalHeaders,
  tokenFor,
  TokenServiceClient,
  TokenServiceError,
  type Token,
} from "../src/index.js";

describe("token ids and digests", () => {
  it("makes 128-bit lowercase hex ids that differ", () => {
    const ids = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const id = newTokenId();
      assert.match(id, /^[0-9a-f]{32}$/);
      ids.add(id);
    }
    assert.equal(ids.size, 1000);
  });
  it("digests payloads with SHA-256", () => {
    assert.equal(digestOf(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert.equal(digestOf(Buffer.from("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });
  it("refuses ids that are not 32 lowercase hex digits", () => {
    assert.equal(isTokenId("0".repeat(32)), false);
    assert.equal(isTokenId("A".repeat(32)), false);
    assert.equal(isTokenId("a".repeat(31)), false);
    assert.equal(isTokenId("a".repeat(32)), true);
  });
  it("writes times with microseconds in UTC", () => {
    assert.equal(formatTime(new Date(Date.UTC(2025, 0, 31, 12, 0, 0, 123))), "2025-01-31T12:00:00.123000Z");
  });
});

describe("signal headers", () => {
  const parent = rootSignal({ destination: "billing", type: "invoice.request", payload: '{"order":"o-1"}' });
  parent.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

  it("round-trips a signal through its headers", () => {
    const child = childSignal(parent, { destination: "shipping", type: "invoice.issued", payload: "x" });
    const headers = Object.fromEntries(Object.entries(signalHeaders(child)).map(([k, v]) => [k.toLowerCase(), v]));
    assert.equal(headers["baton-token"], child.id);
    assert.equal(headers["baton-causation"], parent.id);
    assert.equal(headers["idempotency-key"], `"${child.id}"`);
    assert.equal(headers["traceparent"], parent.traceparent);
    const back = parseSignal(headers, child.payload);
    assert.deepEqual(back, child);
  });

  it("makes children in the parent's conversation", () => {
    const child = childSignal(parent, { destination: "shipping", type: "t" });
    assert.equal(child.conversation, parent.conversation);
    assert.equal(child.causation, parent.id);
    assert.notEqual(child.id, parent.id);
    const token = tokenFor(child);
    assert.equal(token.digest, digestOf(child.payload));
    assert.equal(token.causation, parent.id);
  });

  it("refuses malformed signals", () => {
    const good = Object.fromEntries(Object.entries(signalHeaders(parent)).map(([k, v]) => [k.toLowerCase(), v]));
    const cases: Record<string, Record<string, string | string[] | undefined>> = {
      "no token": { ...good, "baton-token": undefined },
      "uppercase token": { ...good, "baton-token": parent.id.toUpperCase(), "idempotency-key": undefined },
      "two tokens": { ...good, "baton-token": [parent.id, newTokenId()] },
      "no type": { ...good, "baton-type": undefined },
      "destination with a space": { ...good, "baton-destination": "a b" },
      "idempotency key of another token": { ...good, "idempotency-key": `"${newTokenId()}"` },
      "zero conversation": { ...good, "baton-conversation": "0".repeat(32) },
    };
    for (const [name, headers] of Object.entries(cases)) {
      assert.throws(() => parseSignal(headers, parent.payload), SignalError, name);
    }
    assert.throws(() => parseSignal(good, new Uint8Array((1 << 20) + 1)), SignalError, "payload too large");
  });

  it("drops an invalid trace context instead of refusing the signal", () => {
    const headers = Object.fromEntries(Object.entries(signalHeaders(parent)).map(([k, v]) => [k.toLowerCase(), v]));
    headers["traceparent"] = "00-zz";
    assert.equal(parseSignal(headers, parent.payload).traceparent, undefined);
  });
});

/** A distinct token id for each i, starting with prefix (one hex digit). */
const idOf = (prefix: string, i: number) => prefix + i.toString(16).padStart(31, "0");

describe("TokenServiceClient", () => {
  let server: Server;
  let base: string;
  const seen: { method: string; url: string; auth: string | undefined; type: string | undefined; conversation: string | undefined; conversations: string | undefined; body: string }[] = [];
  const problem = (type: string, status: number) => ({ type, title: "t", status, detail: "d" });

  before(async () => {
    server = createServer(async (req: IncomingMessage, res) => {
      let body = "";
      for await (const chunk of req) body += chunk;
      seen.push({ method: req.method!, url: req.url!, auth: req.headers.authorization, type: req.headers["content-type"], conversation: req.headers["baton-conversation"] as string | undefined, conversations: req.headers["baton-conversations"] as string | undefined, body });
      const reply = (status: number, doc: unknown, ct = "application/json") =>
        res.writeHead(status, { "Content-Type": ct }).end(JSON.stringify(doc));
      if (req.url === "/v1/transitions") {
        const parsed = JSON.parse(body) as { consume: string };
        if (parsed.consume === "f".repeat(32)) return reply(403, problem(ProblemTypes.notYourToken, 403), "application/problem+json");
        if (parsed.consume === "e".repeat(32)) return reply(500, problem(ProblemTypes.outcomeUnknown, 500), "application/problem+json");
        if (parsed.consume === "9".repeat(32)) return reply(404, problem(ProblemTypes.noRoute, 404), "application/problem+json");
        return reply(200, { consumed: parsed.consume === "a".repeat(32) });
      }
      if (req.url === "/v1/tokens/read") {
        const { ids } = JSON.parse(body) as { ids: string[] };
        // As the service: a malformed id fails the whole request.
        if (!ids.every(isTokenId)) return reply(400, problem(ProblemTypes.invalid, 400), "application/problem+json");
        return reply(200, {
          results: ids.map((id) => {
            if (id === "a".repeat(32)) return { token: { id, conversation: id, destination: "billing", type: "t", digest: "0".repeat(64), created_at: "2025-01-31T12:00:00.123456Z" } };
            if (id === "f".repeat(32)) return { problem: problem(ProblemTypes.notYourToken, 403) };
            return { problem: problem(ProblemTypes.notFound, 404) };
          }),
        });
      }
      if (req.url === "/v1/transitions/batch") {
        const { transitions } = JSON.parse(body) as { transitions: { consume: string }[] };
        if (transitions.some((t) => t.consume === "e".repeat(32))) return reply(503, problem(ProblemTypes.notApplied, 503), "application/problem+json");
        return reply(200, {
          results: transitions.map((t) =>
            t.consume === "f".repeat(32) ? { problem: problem(ProblemTypes.notYourToken, 403) } : { consumed: t.consume.startsWith("a") }),
        });
      }
      if (req.url?.startsWith("/v1/tokens/")) return reply(404, problem(ProblemTypes.notFound, 404), "application/problem+json");
      if (req.url?.startsWith("/v1/destinations/")) {
        return reply(200, { tokens: [{ id: "b".repeat(32), conversation: "b".repeat(32), destination: "a/b", type: "t", digest: "0".repeat(64), created_at: "2025-01-31T12:00:00.123456Z" }], next_after: "b".repeat(32) });
      }
      reply(404, problem(ProblemTypes.noRoute, 404), "application/problem+json");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  it("sends snake_case JSON with the bearer key", async () => {
    const client = new TokenServiceClient(base, "bk_test");
    const parent = rootSignal({ destination: "billing", type: "t" });
    const child = tokenFor(childSignal(parent, { destination: "shipping", type: "u" }), new Date(Date.UTC(2025, 0, 1)));
    assert.equal(await client.transition("a".repeat(32), [child], parent.conversation), true);
    assert.equal(await client.transition("c".repeat(32)), false);
    const req = seen.find((s) => s.url === "/v1/transitions")!;
    assert.equal(req.auth, "Bearer bk_test");
    assert.equal(req.conversation, parent.conversation, "the conversation named goes as Baton-Conversation");
    assert.equal(seen.filter((s) => s.url === "/v1/transitions")[1]?.conversation, undefined);
    assert.equal(req.type, "application/json");
    assert.deepEqual(JSON.parse(req.body), {
      consume: "a".repeat(32),
      create: [{ id: child.id, conversation: parent.conversation, causation: parent.id, destination: "shipping", type: "u", digest: child.digest, created_at: "2025-01-01T00:00:00.000000Z" }],
    });
  });

  it("maps problems to errors that say whether anything was applied", async () => {
    const client = new TokenServiceClient(base, "bk_test");
    await assert.rejects(client.transition("f".repeat(32)), (err: unknown) => {
      assert.ok(err instanceof TokenServiceError);
      assert.equal(err.status, 403);
      assert.equal(err.type, ProblemTypes.notYourToken);
      assert.equal(err.notApplied, true);
      return true;
    });
    await assert.rejects(client.transition("e".repeat(32)), (err: unknown) => err instanceof TokenServiceError && !err.notApplied);
    // A service without the route ran nothing.
    await assert.rejects(client.transition("9".repeat(32)), (err: unknown) => err instanceof TokenServiceError && err.status === 404 && err.notApplied);
    assert.equal(await client.get("d".repeat(32)), undefined);
  });

  it("reads and transitions in batches, each item answered on its own", async () => {
    const client = new TokenServiceClient(base, "bk_test");
    const conv = "c".repeat(32);
    const read = await client.readTokens(["a".repeat(32), "b".repeat(32), "f".repeat(32)], [conv, "", ""]);
    assert.equal((read[0] as { id: string }).id, "a".repeat(32));
    assert.equal(read[1], undefined, "a token not live reads as undefined, as get's");
    assert.ok(read[2] instanceof TokenServiceError && read[2].status === 403 && read[2].notApplied);
    assert.equal(seen.at(-1)!.conversations, `${conv},,`, "the conversations go as Baton-Conversations, an entry for each id");

    const done = await client.transitionBatch([
      { consume: "a".repeat(32), conversation: conv },
      { consume: "b".repeat(32) },
      { consume: "f".repeat(32) },
    ]);
    assert.deepEqual(done.slice(0, 2), [true, false]);
    assert.ok(done[2] instanceof TokenServiceError && done[2].type === ProblemTypes.notYourToken && done[2].notApplied);
    assert.deepEqual(JSON.parse(seen.at(-1)!.body), { transitions: [{ consume: "a".repeat(32), create: [] }, { consume: "b".repeat(32), create: [] }, { consume: "f".repeat(32), create: [] }] });

    await assert.rejects(client.readTokens(["a".repeat(32), "b".repeat(32)], [conv]), TypeError);

    const before = seen.length;
    const many = Array.from({ length: maxBatch * 2 + 1 }, () => "b".repeat(32));
    assert.deepEqual(await client.readTokens(many), many.map(() => undefined));
    assert.equal(seen.length - before, 3, "more than maxBatch ids go in several requests");
    assert.equal(seen.at(-1)!.conversations, undefined, "no hints, no header");
  });

  it("reads a zero or malformed id as get does, without sending it", async () => {
    const client = new TokenServiceClient(base, "bk_test");
    const conv = "c".repeat(32);
    const before = seen.length;
    assert.equal(await client.get("0".repeat(32)), undefined, "the zero id is no token's");
    assert.equal(seen.length, before, "get sent nothing for the zero id");

    const read = await client.readTokens(["a".repeat(32), "0".repeat(32), "A".repeat(32), "b".repeat(32)], [conv, conv, conv, ""]);
    assert.equal((read[0] as { id: string }).id, "a".repeat(32));
    assert.equal(read[1], undefined, "the zero id reads as a token not live");
    assert.ok(read[2] instanceof TokenServiceError && read[2].status === 400 && read[2].type === ProblemTypes.invalid && read[2].notApplied,
      "a malformed id is its own error, as get's 400");
    assert.equal(read[3], undefined);
    assert.equal(seen.length - before, 1);
    assert.deepEqual(JSON.parse(seen.at(-1)!.body), { ids: ["a".repeat(32), "b".repeat(32)] }, "only the well-formed ids are sent");
    assert.equal(seen.at(-1)!.conversations, `${conv},`, "with their conversations");
  });

  it("answers a later request's error of a batch for each of its transitions, keeping the earlier requests' results", async () => {
    const client = new TokenServiceClient(base, "bk_test");
    const applied = Array.from({ length: maxBatch }, (_, i) => ({ consume: idOf("a", i) }));
    const done = await client.transitionBatch([...applied, { consume: "e".repeat(32) }]);
    assert.deepEqual(done.slice(0, maxBatch), applied.map(() => true), "the first request was applied: its results stay");
    assert.ok(done[maxBatch] instanceof TokenServiceError && done[maxBatch].type === ProblemTypes.notApplied && done[maxBatch].notApplied);
    await assert.rejects(client.transitionBatch([{ consume: "e".repeat(32) }, ...applied]), (err) => err instanceof TokenServiceError && err.notApplied,
      "the first request's error is the whole call's: nothing was applied");
  });

  it("escapes destinations and reads pages", async () => {
    const client = new TokenServiceClient(base, "bk_test");
    const page = await client.listByDestination("a/b", { limit: 1 });
    assert.equal(seen.at(-1)!.url, "/v1/destinations/a%2Fb/tokens?limit=1");
    assert.equal(page.tokens[0]!.createdAt, "2025-01-31T12:00:00.123456Z");
    assert.equal(page.nextAfter, "b".repeat(32));
  });

  it("reports a refused connection as not applied", async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const client = new TokenServiceClient(`http://127.0.0.1:${port}`, "bk_test");
    await assert.rejects(client.transition("a".repeat(32)), (err: unknown) => err instanceof TokenServiceError && err.notApplied);
  });
});

describe("transitionBatch", () => {
  let server: Server;
  let base: string;
  const requests: { consume: string; create: unknown[] }[][] = [];
  const tooLarge = { type: ProblemTypes.tooLarge, title: "Payload Too Large", status: 413, detail: "the body exceeds --max-body" };
  const child = (id: string): Token => ({ id, conversation: "c".repeat(32), causation: "c".repeat(32), destination: "shipping", type: "t", digest: "0".repeat(64) });

  before(async () => {
    // Takes at most two transitions in a request, and at most three
    // children in a transition, as a service whose --max-body they exceed.
    server = createServer(async (req, res) => {
      let body = "";
      for await (const chunk of req) body += chunk;
      const { transitions } = JSON.parse(body) as { transitions: { consume: string; create: unknown[] }[] };
      requests.push(transitions);
      if (transitions.length > 2 || transitions.some((t) => t.create.length > 3)) {
        return res.writeHead(413, { "Content-Type": "application/problem+json" }).end(JSON.stringify(tooLarge));
      }
      res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({ results: transitions.map((t) => ({ consumed: t.consume.startsWith("a") })) }));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  it("sends a request the service finds too large again in halves", async () => {
    const client = new TokenServiceClient(base, "bk_test");
    requests.length = 0;
    const done = await client.transitionBatch([{ consume: idOf("a", 1) }, { consume: idOf("b", 2) }, { consume: idOf("a", 3) }, { consume: idOf("a", 4) }]);
    assert.deepEqual(done, [true, false, true, true]);
    assert.deepEqual(requests.map((r) => r.map((t) => t.consume)), [
      [idOf("a", 1), idOf("b", 2), idOf("a", 3), idOf("a", 4)],
      [idOf("a", 1), idOf("b", 2)],
      [idOf("a", 3), idOf("a", 4)],
    ]);
  });

  it("answers a transition too large alone with its 413, and runs the others", async () => {
    const client = new TokenServiceClient(base, "bk_test");
    requests.length = 0;
    const big = { consume: idOf("a", 1), create: [1, 2, 3, 4].map((i) => child(idOf("d", i))) };
    const done = await client.transitionBatch([big, { consume: idOf("a", 2) }]);
    assert.ok(done[0] instanceof TokenServiceError && done[0].status === 413 && done[0].type === ProblemTypes.tooLarge && done[0].notApplied,
      "after a split, the 413 of a transition alone is its own result");
    assert.equal(done[1], true);
    assert.deepEqual(requests.map((r) => r.length), [2, 1, 1]);

    // Unsplit, the first request's error is the whole call's, as any other.
    await assert.rejects(client.transitionBatch([big]), (err) => err instanceof TokenServiceError && err.status === 413 && err.notApplied);
  });

  it("refuses a batch that names a token twice across its requests before sending any", async () => {
    const client = new TokenServiceClient(base, "bk_test");
    requests.length = 0;
    const many = Array.from({ length: 150 }, (_, i) => ({ consume: idOf("a", i) }));
    many[120] = { consume: idOf("a", 3) };
    await assert.rejects(client.transitionBatch(many), TypeError, "a token consumed twice, at 3 and 120");
    assert.equal(requests.length, 0, "nothing was sent");
  });

  it("refuses a batch that creates a token another transition consumes", async () => {
    const client = new TokenServiceClient(base, "bk_test");
    requests.length = 0;
    const batch = [{ consume: idOf("a", 1) }, { consume: idOf("a", 2), create: [child(idOf("a", 1))] }];
    await assert.rejects(client.transitionBatch(batch), TypeError);
    assert.equal(requests.length, 0, "nothing was sent");
  });
});

describe("unreadable batch answers", () => {
  let server: Server;
  let base: string;
  let answer = "";

  before(async () => {
    server = createServer(async (req, res) => {
      for await (const _ of req);
      res.writeHead(200, { "Content-Type": "application/json" }).end(answer);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  it("rejects with a TokenServiceError of unknown outcome for a 200 that is no batch answer", async () => {
    const client = new TokenServiceClient(base, "bk_test");
    for (answer of ["<html>", "null", "[]", '{"results":[null]}']) {
      await assert.rejects(client.transitionBatch([{ consume: "a".repeat(32) }]), (err) => err instanceof TokenServiceError && !err.notApplied, `transitionBatch, answered ${answer}`);
      await assert.rejects(client.readTokens(["a".repeat(32)]), (err) => err instanceof TokenServiceError && !err.notApplied, `readTokens, answered ${answer}`);
    }
  });
});
