/**
 * Sends signals with the retry rules of docs/protocol.md section 5.6.
 */
import { Outcomes, signalHeaders, type Signal } from "./index.js";

const signalProblemBase = "https://github.com/batonhq/baton/blob/main/docs/protocol.md#problem-";

/** The receiver refused the signal for good (any other 4xx, or a redirect). */
export class Refused extends Error {
  override name = "Refused";
  constructor(readonly status: number, detail: string) {
    super(`signal refused with ${status}${detail ? ": " + detail : ""}`);
  }
}

/** Not delivered before the deadline: the sender, or its sweeper, tries again later. */
export class NotDelivered extends Error {
  override name = "NotDelivered";
}

export interface SenderOptions {
  /** Bound of each attempt, in milliseconds. Default 10000. */
  timeoutMs?: number;
  /** Bound of all attempts, in milliseconds. Default 30000. */
  deadlineMs?: number;
  /** First backoff, doubled up to maxDelayMs, with jitter. Default 100 and 5000. */
  baseDelayMs?: number;
  maxDelayMs?: number;
}

/** A delivered signal: 200 with the reply, or 409 duplicate. */
export interface Delivery {
  status: number;
  outcome: string;
  reply: Uint8Array;
}

/** Sends signals to the URL of their destination, retrying network errors, 5xx, 408, 429 and 409 in-progress. */
export class Sender {
  constructor(private readonly endpoints: Record<string, string>, private readonly options: SenderOptions = {}) {}

  async send(sig: Signal): Promise<Delivery> {
    const url = this.endpoints[sig.destination];
    if (url === undefined) throw new Refused(0, `no endpoint for destination ${JSON.stringify(sig.destination)}`);
    const giveUp = Date.now() + (this.options.deadlineMs ?? 30_000);
    for (let attempt = 1; ; attempt++) {
      let retryAfter: string | null = null;
      let failure: string;
      try {
        const res = await fetch(url, {
          method: "POST",
          headers: signalHeaders(sig),
          body: sig.payload,
          redirect: "manual",
          signal: AbortSignal.timeout(this.options.timeoutMs ?? 10_000),
        });
        const body = new Uint8Array(await res.arrayBuffer());
        const outcome = res.headers.get("Baton-Outcome") ?? "";
        const problemType = problemName(res, body);
        if (res.status >= 200 && res.status < 300) return { status: res.status, outcome: outcome || Outcomes.applied, reply: body };
        if (res.status === 409 && (outcome === Outcomes.duplicate || problemType === "already-processed")) {
          return { status: 409, outcome: Outcomes.duplicate, reply: new Uint8Array() };
        }
        const inProgress = res.status === 409 && (outcome === Outcomes.inProgress || problemType === "in-progress");
        if (!(res.status >= 500 || res.status === 408 || res.status === 429 || inProgress)) {
          throw new Refused(res.status, problemType);
        }
        retryAfter = res.headers.get("Retry-After");
        failure = `${res.status} ${problemType}`;
      } catch (err) {
        if (err instanceof Refused) throw err;
        failure = `no answer: ${String(err)}`;
      }
      const delay = this.delay(attempt, retryAfter);
      if (Date.now() + delay > giveUp) {
        throw new NotDelivered(`signal ${sig.id} to ${sig.destination}: not delivered after ${attempt} attempts: ${failure}`);
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  private delay(attempt: number, retryAfter: string | null): number {
    if (retryAfter) {
      if (/^\d+$/.test(retryAfter)) return Number(retryAfter) * 1000;
      const at = Date.parse(retryAfter);
      if (!Number.isNaN(at)) return Math.max(0, at - Date.now());
    }
    const limit = Math.min(this.options.maxDelayMs ?? 5000, (this.options.baseDelayMs ?? 100) * 2 ** Math.min(attempt - 1, 10));
    return limit / 2 + Math.random() * (limit / 2);
  }
}

function problemName(res: Response, body: Uint8Array): string {
  if (!(res.headers.get("Content-Type") ?? "").startsWith("application/problem+json")) return "";
  try {
    const type = (JSON.parse(Buffer.from(body).toString("utf8")) as { type?: string }).type ?? "";
    return type.startsWith(signalProblemBase) ? type.slice(signalProblemBase.length) : "";
  } catch {
    return "";
  }
}
