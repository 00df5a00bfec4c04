// A gopherq producer in Node.js, written from docs/protocol.md and docs/messages.md
// alone: it sends tasks by writing to the broker as the protocol says (Redis: the
// known-queue set and the shipped enqueue script; SQLite: one INSERT transaction),
// then reads the job records and the results back itself.
//
//   node producer.mjs send    enqueue (no worker runs yet): every kind of argument,
//                             a batch of priorities, idempotency keys
//   node producer.mjs check   (a worker runs) enqueue a countdown, wait for every
//                             record, and check each result
//
// Environment: GQ_BROKER (redis | sqlite); for Redis GQ_REDIS_URL (no query),
// GQ_PREFIX and GQ_ENQUEUE_SCRIPT (the file `gopherq protocol redis-enqueue-script`
// wrote); for SQLite GQ_SQLITE_PATH; GQ_STATE, a JSON file the two phases share.
// Exits 0 when every check holds; otherwise prints what differs and exits 1.

import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { decode, encode, ExtensionCodec } from "@msgpack/msgpack";

const env = process.env;
const BROKER = env.GQ_BROKER;
const TIMEOUT_MS = 90_000;

// --- values gopherq carries as extension types (docs/messages.md, "The codec") ---

class Uuid {
  constructor(hex) { this.hex = hex.replaceAll("-", ""); }
}
class Decimal {
  constructor(text) { this.text = text; }
}
class AwareDateTime { // what gopherq sends back for an aware datetime (code 1)
  constructor(iso) { this.iso = iso; }
}

const codec = new ExtensionCodec();
codec.register({
  type: 1,
  encode: () => null,
  decode: (data) => new AwareDateTime(new TextDecoder().decode(data)),
});
codec.register({
  type: 4,
  encode: (v) => (v instanceof Uuid ? Buffer.from(v.hex, "hex") : null),
  decode: (data) => new Uuid(Buffer.from(data).toString("hex")),
});
codec.register({
  type: 5,
  encode: (v) => (v instanceof Decimal ? new TextEncoder().encode(v.text) : null),
  decode: (data) => new Decimal(new TextDecoder().decode(data)),
});
const OPTIONS = { extensionCodec: codec, useBigInt64: true };
const pack = (value) => encode(value, OPTIONS);
// A plain Uint8Array first: from a Node Buffer, bin values would come back as Buffers.
const unpack = (bytes) => decode(new Uint8Array(bytes), OPTIONS);

// --- the envelope (docs/messages.md, "The envelope"; docs/protocol.md, "The body") ---

function message(task, args, kwargs, options = {}) {
  const { queue = "default", priority = 2, eta = null, key = null } = options;
  const envelope = { v: 1, id: randomUUID(), task, created: Date.now() / 1000 };
  if (args.length) envelope.args = args;
  if (Object.keys(kwargs).length) envelope.kwargs = kwargs;
  if (queue !== "default") envelope.queue = queue;
  if (priority !== 2) envelope.priority = priority;
  if (eta !== null) envelope.eta = eta;
  if (key !== null) envelope.key = key;
  // The routing fields, copies of the body's (docs/protocol.md, "Routing fields").
  return { id: envelope.id, queue, priority, eta, key, body: pack(envelope) };
}

// --- brokers: enqueue a batch of one queue, read a job record ---

async function redisBroker() {
  const { default: Redis } = await import("ioredis");
  const client = new Redis(env.GQ_REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await client.connect();
  const P = env.GQ_PREFIX;
  const script = readFileSync(env.GQ_ENQUEUE_SCRIPT);
  const sha = createHash("sha1").update(script).digest("hex");

  async function evalsha(keys, argv) {
    try {
      return await client.evalshaBuffer(sha, keys.length, ...keys, ...argv);
    } catch (error) {
      if (!String(error.message).startsWith("NOSCRIPT")) throw error;
      await client.script("LOAD", script);
      return client.evalshaBuffer(sha, keys.length, ...keys, ...argv);
    }
  }

  return {
    async enqueue(queue, messages) {
      await client.sadd(`${P}:{_}:queues`, queue);
      const argv = messages.flatMap((m) => [
        m.id, String(m.priority), m.eta === null ? "" : String(m.eta), m.key ?? "", Buffer.from(m.body),
      ]);
      const reply = await evalsha([`${P}:{${queue}}`], argv);
      if (messages.length === 1) return [reply.toString()];
      // Only the exceptions: [position, id, ...] as msgpack (or a plain array).
      const pairs = Buffer.isBuffer(reply) ? decode(reply) : reply;
      const ids = messages.map((m) => m.id);
      for (let i = 0; i < pairs.length; i += 2) ids[Number(pairs[i]) - 1] = String(pairs[i + 1]);
      return ids;
    },
    async record(id) {
      const blob = await client.getBuffer(`${P}:result:{${id}}`);
      return blob === null ? null : decode(blob);
    },
    close: () => client.quit(),
  };
}

async function sqliteBroker() {
  const { default: Database } = await import("better-sqlite3");
  const db = new Database(env.GQ_SQLITE_PATH, { fileMustExist: true, timeout: 5000 });
  const table = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?");
  if (!table.get("messages")) {
    throw new Error(`${env.GQ_SQLITE_PATH} has no gopherq tables: start a worker on it first`);
  }
  const addQueue = db.prepare("INSERT OR IGNORE INTO queues (name) VALUES (?)");
  const insert = db.prepare(`INSERT INTO messages (id, queue, priority, state, run_at, key, body)
      VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`);
  const holder = db.prepare(
    "SELECT id FROM messages WHERE queue = ? AND key = ? AND state != 'dead'",
  );
  const enqueue = db.transaction((queue, messages) => {
    addQueue.run(queue);
    const now = Date.now() / 1000;
    return messages.map((m) => {
      const later = m.eta !== null && m.eta > now;
      const { changes } = insert.run(
        m.id, queue, m.priority, later ? "scheduled" : "ready", later ? m.eta : now, m.key,
        Buffer.from(m.body),
      );
      const held = changes === 0 && m.key !== null ? holder.get(queue, m.key) : undefined;
      return held === undefined ? m.id : held.id;
    });
  });
  return {
    async enqueue(queue, messages) {
      return enqueue.immediate(queue, messages); // BEGIN IMMEDIATE ... COMMIT
    },
    async record(id) {
      let row;
      try {
        row = db.prepare(`SELECT record FROM results
            WHERE id = ? AND (expires_at IS NULL OR expires_at > ?)`).get(id, Date.now() / 1000);
      } catch (error) {
        if (String(error.message).includes("no such table")) return null; // no record yet
        throw error;
      }
      return row === undefined ? null : decode(row.record);
    },
    async close() { db.close(); },
  };
}

// --- what the tasks get, and what they should see ---

const WHEN = new Date(Date.UTC(2025, 0, 7, 10, 12, 3, 120));
const ID = new Uuid("6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e");
const BYTES = new Uint8Array([0, 1, 127, 128, 255]);
// [sent, what describe() returns, its Python type]
const ARGUMENTS = [
  [42, 42, "int"],
  [-7, -7, "int"],
  [2n ** 62n, 2n ** 62n, "int"],
  [1.5, 1.5, "float"],
  [-0.25, -0.25, "float"],
  ["héllo ✓", "héllo ✓", "str"],
  ["", "", "str"],
  [BYTES, BYTES, "bytes"],
  [[1, "two", [3, null]], [1, "two", [3, null]], "list"],
  [{ a: 1, b: [true, false], c: { d: "e" } }, { a: 1, b: [true, false], c: { d: "e" } }, "dict"],
  [null, null, "NoneType"],
  [true, true, "bool"],
  [false, false, "bool"],
  [WHEN, new AwareDateTime("2025-01-07T10:12:03.120000+00:00"), "datetime+0000"],
  [ID, ID, "UUID"],
  [new Decimal("12.50"), new Decimal("12.50"), "Decimal"],
];
const KWARGS = { when: WHEN, amount: new Decimal("-0.001"), note: "kw" };
const KWARGS_BACK = {
  when: new AwareDateTime("2025-01-07T10:12:03.120000+00:00"),
  amount: new Decimal("-0.001"),
  note: "kw",
};
const KWTYPES = { when: "datetime+0000", amount: "Decimal", note: "str" };
const PRIORITIES = [4, 3, 2, 1, 0];
const FINISHED = new Set(["SUCCEEDED", "FAILED", "DEAD", "CANCELLED", "EXPIRED"]);

async function send(broker) {
  const typed = message("tasks.describe", ARGUMENTS.map((a) => a[0]), KWARGS);
  const [typedId] = await broker.enqueue("default", [typed]);
  assert.equal(typedId, typed.id);
  // One batch, least urgent first: the worker must start them most urgent first.
  const ranked = PRIORITIES.map((p) => message("tasks.describe", [`p${p}`], {}, { priority: p }));
  assert.deepEqual(await broker.enqueue("default", ranked), ranked.map((m) => m.id));
  // Idempotency keys are per queue: the second message in "default" stands for the
  // first; the same key in another queue is another key.
  const first = message("tasks.describe", ["keyed"], {}, { key: "order-1" });
  const again = message("tasks.describe", ["keyed again"], {}, { key: "order-1" });
  const elsewhere = message("tasks.describe", ["other"], {}, { queue: "other", key: "order-1" });
  assert.deepEqual(await broker.enqueue("default", [first]), [first.id]);
  assert.deepEqual(await broker.enqueue("default", [again]), [first.id], "a held key");
  const mixed = message("tasks.describe", ["mixed"], {}, { key: "order-1" });
  const fresh = message("tasks.describe", ["fresh"], {});
  assert.deepEqual(await broker.enqueue("default", [fresh, mixed]), [fresh.id, first.id]);
  assert.deepEqual(await broker.enqueue("other", [elsewhere]), [elsewhere.id]);
  return {
    typed: typed.id,
    ranked: ranked.map((m, i) => [m.id, PRIORITIES[i]]),
    keyed: first.id,
    fresh: fresh.id,
    dropped: [again.id, mixed.id],
  };
}

async function waitFor(broker, id) {
  const deadline = Date.now() + TIMEOUT_MS;
  for (;;) {
    const record = await broker.record(id);
    if (record !== null && FINISHED.has(record.state)) return record;
    if (Date.now() > deadline) throw new Error(`no finished record for ${id}: ${JSON.stringify(record)}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function succeeded(broker, id) {
  const record = await waitFor(broker, id);
  assert.equal(record.state, "SUCCEEDED", `${id}: ${JSON.stringify(record.error)}`);
  assert.equal(record.id, id);
  assert.equal(record.task, "tasks.describe");
  assert.equal(record.attempts, 1);
  return { record, result: unpack(record.result) };
}

async function check(broker, sent) {
  // A countdown of 2 s and an immediate task, sent while the worker runs.
  const eta = Date.now() / 1000 + 2;
  const later = message("tasks.describe", ["later"], {}, { eta });
  const now = message("tasks.describe", ["now"], {});
  await broker.enqueue("default", [later]);
  await broker.enqueue("default", [now]);

  const typed = await succeeded(broker, sent.typed);
  assert.deepEqual(typed.result.types, ARGUMENTS.map((a) => a[2]));
  assert.deepEqual(typed.result.args, ARGUMENTS.map((a) => a[1]));
  assert.deepEqual(typed.result.kwtypes, KWTYPES);
  assert.deepEqual(typed.result.kwargs, KWARGS_BACK);
  assert.equal(typed.record.queue, "default");
  assert.ok(typed.record.started >= typed.record.created && typed.record.finished >= typed.record.started);

  const ranked = [];
  for (const [id, priority] of sent.ranked) {
    const { record, result } = await succeeded(broker, id);
    assert.deepEqual(result.args, [`p${priority}`]);
    ranked.push([record.started, priority]);
  }
  ranked.sort((a, b) => a[0] - b[0]);
  assert.deepEqual(ranked.map((r) => r[1]), [0, 1, 2, 3, 4], "started most urgent first");

  assert.deepEqual((await succeeded(broker, sent.keyed)).result.args, ["keyed"]);
  assert.deepEqual((await succeeded(broker, sent.fresh)).result.args, ["fresh"]);
  for (const id of sent.dropped) assert.equal(await broker.record(id), null, `${id} was stored`);

  const first = await succeeded(broker, now.id);
  const delayed = await succeeded(broker, later.id);
  assert.ok(delayed.record.started >= eta, `started ${delayed.record.started}, before its eta ${eta}`);
  assert.ok(first.record.started < delayed.record.started, "the countdown held its task back");
  return { countdown: delayed.record.started - eta };
}

const broker = BROKER === "redis" ? await redisBroker() : await sqliteBroker();
try {
  const phase = process.argv[2];
  if (phase === "send") {
    writeFileSync(env.GQ_STATE, JSON.stringify(await send(broker)));
  } else if (phase === "check") {
    const report = await check(broker, JSON.parse(readFileSync(env.GQ_STATE, "utf8")));
    console.log(`ok ${BROKER}: ${JSON.stringify(report)}`);
  } else {
    throw new Error(`unknown phase ${phase}: use send or check`);
  }
} finally {
  await broker.close();
}
