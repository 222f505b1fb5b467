/**
 * Entity stores for the participant: an entity's state, version and
 * outbox, with compare-and-set commits.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";

/** A committed outbox entry: the signal it records, what it emitted and its reply. */
export interface OutboxEntry {
  id: string;
  conversation: string;
  causation: string;
  destination: string;
  type: string;
  digest: string;
  /** The emitted signals, payloads in base64. */
  signals: { id: string; destination: string; type: string; payload: string }[];
  /** The reply, in base64. */
  reply: string;
  replyType: string;
  /** Milliseconds since the epoch. */
  createdAt: number;
}

/** An entity: its key, version (0: never committed), state and outbox. */
export interface Entity {
  key: string;
  version: number;
  state: Record<string, unknown>;
  outbox: OutboxEntry[];
}

/** The version is not the one the commit expected: reload and try again. */
export class VersionConflict extends Error {
  override name = "VersionConflict";
}

/** Where a participant keeps its entities. */
export interface EntityStore {
  load(key: string): Promise<Entity>;
  /** Writes entity as version expected + 1, if its version is still expected; else throws VersionConflict. */
  commit(entity: Entity, expected: number): Promise<void>;
  /** The entities whose outbox holds entries, for the sweeper. */
  withOutbox(): Promise<Entity[]>;
}

const clone = <T>(v: T): T => structuredClone(v);

/** Entities in memory, for tests: nothing survives the process. */
export class MemoryEntityStore implements EntityStore {
  private readonly entities = new Map<string, Entity>();

  async load(key: string): Promise<Entity> {
    const e = this.entities.get(key);
    return e ? clone(e) : { key, version: 0, state: {}, outbox: [] };
  }

  async commit(entity: Entity, expected: number): Promise<void> {
    if ((this.entities.get(entity.key)?.version ?? 0) !== expected) throw new VersionConflict(entity.key);
    this.entities.set(entity.key, { ...clone(entity), version: expected + 1 });
  }

  async withOutbox(): Promise<Entity[]> {
    return [...this.entities.values()].filter((e) => e.outbox.length > 0).map(clone);
  }
}

/**
 * Entities as JSON files in one directory, one file per entity. A commit
 * writes a new file, fsyncs it and renames it over the old one, then
 * fsyncs the directory: a commit that resolved survives a crash, and a
 * crash never leaves half a file. One process per directory: commits are
 * serialised in this process only.
 */
export class FileEntityStore implements EntityStore {
  private queue: Promise<unknown> = Promise.resolve();
  private readonly ready: Promise<unknown>;

  constructor(private readonly dir: string) {
    this.ready = mkdir(dir, { recursive: true, mode: 0o700 });
  }

  private path(key: string): string {
    return join(this.dir, createHash("sha256").update(key).digest("hex") + ".json");
  }

  private async read(path: string): Promise<Entity | undefined> {
    try {
      return JSON.parse(await readFile(path, "utf8")) as Entity;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }

  /** Runs fn after every earlier call has finished: one commit at a time. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(() => this.ready).then(fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  load(key: string): Promise<Entity> {
    return this.serial(async () => (await this.read(this.path(key))) ?? { key, version: 0, state: {}, outbox: [] });
  }

  commit(entity: Entity, expected: number): Promise<void> {
    return this.serial(async () => {
      const path = this.path(entity.key);
      if (((await this.read(path))?.version ?? 0) !== expected) throw new VersionConflict(entity.key);
      const tmp = join(this.dir, randomBytes(8).toString("hex") + ".tmp");
      const file = await open(tmp, "w", 0o600);
      try {
        await file.writeFile(JSON.stringify({ ...entity, version: expected + 1 }));
        await file.sync();
      } finally {
        await file.close();
      }
      try {
        await rename(tmp, path);
      } catch (err) {
        await rm(tmp, { force: true });
        throw err;
      }
      const dir = await open(this.dir, "r");
      try {
        await dir.sync();
      } finally {
        await dir.close();
      }
    });
  }

  withOutbox(): Promise<Entity[]> {
    return this.serial(async () => {
      const found: Entity[] = [];
      for (const name of await readdir(this.dir)) {
        if (!name.endsWith(".json")) continue;
        const e = await this.read(join(this.dir, name));
        if (e && e.outbox.length > 0) found.push(e);
      }
      return found;
    });
  }
}
