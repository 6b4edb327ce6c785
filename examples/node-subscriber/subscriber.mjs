// A subscriber to apikeys key events in JavaScript (Node.js 18 or later), written from
// docs/events.md alone: it verifies every event's Ed25519 signature against the keys key_service
// publishes, applies each event once and in sequence order, and fills gaps from the subscriber
// feed. Needs only amqplib and Node's own crypto. See README.md beside it.
//
//   KEY_SERVICE_URL=http://127.0.0.1:8081 APIKEYS_TOKEN=ksmt_... node subscriber.mjs
//
// One JSON line per applied event on stdout; what it does and why on stderr.
import { createHash, createPublicKey, verify } from "node:crypto";
import amqp from "amqplib";

function setting(name, fallback) {
  const value = (process.env[name] ?? "").trim();
  if (value) return value;
  if (fallback !== undefined) return fallback;
  console.error(`configuration: ${name} is required`);
  process.exit(2);
}

const config = {
  rabbitmqUrl: setting("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"),
  exchange: setting("APIKEYS_EXCHANGE", "apikeys.events"),
  queue: setting("APIKEYS_SUBSCRIBER_QUEUE", "node-subscriber"),
  keyService: setting("KEY_SERVICE_URL").replace(/\/+$/, ""),
  token: setting("APIKEYS_TOKEN"),
  // Sequences go up to 2^63 - 1: BigInt, never a Number (exact only up to 2^53).
  after: BigInt(setting("APIKEYS_SUBSCRIBER_AFTER", "0")),
};
const ROUTING_KEYS = ["key.issued", "key.rolled", "key.revoked"];
const KEYS_REFRESH_MS = 5000; // re-read the verify keys for an unknown signer at most this often
const log = (...parts) => console.error(new Date().toISOString(), ...parts);
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

// -- trust: the verify keys key_service publishes ---------------------------------------------
const SPKI_ED25519 = Buffer.from("302a300506032b6570032100", "hex");
let trusted = new Map(); // fingerprint -> KeyObject
let refreshedAt = -Infinity;

async function loadKeys() {
  const response = await fetch(`${config.keyService}/api/v1/verify-keys`);
  if (response.status !== 200) throw new Error(`verify keys answered ${response.status}`);
  const keys = new Map();
  for (const { fingerprint, public_key: publicKey } of (await response.json()).keys) {
    const raw = Buffer.from(publicKey, "base64");
    const named = createHash("sha256").update(raw).digest("hex").slice(0, 16);
    if (raw.length !== 32 || named !== fingerprint) throw new Error("not an Ed25519 verify key");
    keys.set(fingerprint, createPublicKey({
      key: Buffer.concat([SPKI_ED25519, raw]), format: "der", type: "spki",
    }));
  }
  trusted = keys;
}

// The event in `body` (a Buffer, exactly as received) if its signature verifies, else null.
async function verified(body, signature, signingKey) {
  signingKey = String(signingKey ?? "");
  if (!trusted.has(signingKey) && Date.now() - refreshedAt >= KEYS_REFRESH_MS) {
    refreshedAt = Date.now(); // a rotation of the signing key: read the published keys again
    log(`an event names signing key ${signingKey.slice(0, 16)}: reading the verify keys again`);
    await loadKeys().catch((error) => log(`cannot read the verify keys: ${error.message}`));
  }
  const key = trusted.get(signingKey);
  const raw = Buffer.from(String(signature ?? ""), "base64");
  if (key === undefined || raw.length !== 64 || !verify(null, body, key, raw)) return null;
  return parse(body); // parsed only once the exact bytes verified
}

// -- the event: strict about what this subscriber relies on -----------------------------------
const SCHEMAS = new Set([
  "urn:apikeys:key-record:1", "urn:apikeys:key-record:2",
  "urn:apikeys:key-record-public:1", "urn:apikeys:key-record-public:2",
]);
const TYPES = new Set(["apikey.issued", "apikey.rolled", "apikey.revoked"]);

function parse(body) {
  let event;
  try {
    event = JSON.parse(body.toString("utf8"));
  } catch {
    return null;
  }
  const data = event?.data;
  if (event?.specversion !== "1.0" || !SCHEMAS.has(event.dataschema) || !TYPES.has(event.type)
      || typeof event.id !== "string" || !/^[0-9]{1,20}$/.test(event.sequence ?? "")
      || typeof data !== "object" || data === null || typeof data.key_id !== "string"
      || !["active", "revoked"].includes(data.status)) {
    return null;
  }
  const expected = data.status === "revoked" ? "apikey.revoked"
    : (data.revokes_at ? "apikey.rolled" : "apikey.issued");
  if (event.type !== expected) return null;
  return { ...event, sequence: BigInt(event.sequence) };
}

// -- the feed: every event after a sequence --------------------------------------------------
async function feedAfter(after) {
  const events = [];
  for (;;) {
    const url = `${config.keyService}/api/v1/events?after=${after}&limit=500`;
    const response = await fetch(url, { headers: { Authorization: `Bearer ${config.token}` } });
    if (response.status !== 200) throw new Error(`the feed answered ${response.status}`);
    const page = await response.json();
    for (const entry of page.events) {
      const event = await verified(Buffer.from(entry.body, "utf8"), entry.signature,
        entry.signing_key);
      if (event === null) throw new Error("a feed entry does not verify");
      events.push(event);
      after = event.sequence;
    }
    if (page.events.length === 0 || after >= BigInt(page.last_sequence)) return events;
  }
}

// -- applying: once each, in order; revoked is terminal ---------------------------------------
let applied = config.after;
const status = new Map();

function apply(event) {
  if (event.sequence <= applied) return false; // a duplicate or a replay
  applied = event.sequence;
  if (status.get(event.data.key_id) !== "revoked") status.set(event.data.key_id, event.data.status);
  process.stdout.write(JSON.stringify({
    event_id: event.id, type: event.type, sequence: event.sequence.toString(),
    key_id: event.data.key_id, name: event.data.name, status: event.data.status,
    issued_at: event.data.issued_at, revoked_at: event.data.revoked_at,
    revokes_at: event.data.revokes_at ?? null,
  }) + "\n");
  return true;
}

// Apply the feed's events up to `through` - 1 (all of them without it), waiting out failures.
async function catchUp(through) {
  for (let pause = 500; ; pause = Math.min(pause * 2, 10000)) {
    try {
      for (const event of await feedAfter(applied)) {
        if (through === undefined || event.sequence < through) apply(event);
      }
      if (through === undefined || applied >= through - 1n) return;
      log(`the feed does not hold events ${applied + 1n} to ${through - 1n} yet`);
    } catch (error) {
      log(`cannot read key_service's feed (${error.message}); trying again`);
    }
    await sleep(pause);
  }
}

async function handle(channel, message) {
  const headers = message.properties.headers ?? {};
  const event = await verified(message.content, headers["x-signature"], headers["x-signing-key"]);
  if (event === null) {
    log(`rejected message ${message.properties.messageId}: it does not verify`);
    channel.reject(message, false); // never requeued, never applied
    return;
  }
  if (event.sequence > applied + 1n) {
    log(`events ${applied + 1n} to ${event.sequence - 1n} were missed: reading the feed`);
    await catchUp(event.sequence);
  }
  if (!apply(event)) log(`ignored duplicate event ${event.id} (sequence ${event.sequence})`);
  channel.ack(message);
}

// -- RabbitMQ: every node of RABBITMQ_URL in turn ----------------------------------------------
function brokerUrls(url) {
  const [, scheme, user = "", hosts, rest] = /^(amqps?:\/\/)([^@/]*@)?([^/?]*)(.*)$/.exec(url);
  return hosts.split(",").map((host) => `${scheme}${user}${host}${rest}`);
}

let stopping = false;
let connection = null;

async function run() {
  const urls = brokerUrls(config.rabbitmqUrl);
  let caughtUp = false;
  for (let attempt = 0, pause = 500; !stopping; attempt += 1) {
    try {
      connection = await amqp.connect(urls[attempt % urls.length]);
      const closed = new Promise((done) => connection.once("close", done));
      connection.on("error", (error) => log(`RabbitMQ: ${error.message}`));
      const channel = await connection.createChannel();
      await channel.prefetch(50);
      await channel.assertExchange(config.exchange, "topic", { durable: true });
      await channel.assertQueue(config.queue, {
        durable: true, arguments: { "x-queue-type": "quorum" },
      });
      for (const key of ROUTING_KEYS) await channel.bindQueue(config.queue, config.exchange, key);
      if (!caughtUp) { // bound first: an event is in the catch-up, in the queue, or in both
        await catchUp();
        caughtUp = true;
      }
      let chain = Promise.resolve(); // one message at a time, in the order they arrive
      await channel.consume(config.queue, (message) => {
        if (message !== null) chain = chain.then(() => handle(channel, message));
      });
      log(`listening on queue ${config.queue} (after sequence ${applied})`);
      pause = 500;
      await closed;
      if (!stopping) log("lost RabbitMQ; connecting again");
    } catch (error) {
      if (!stopping) log(`cannot use RabbitMQ (${error.message}); trying again`);
    }
    if (!stopping) await sleep(pause);
    pause = Math.min(pause * 2, 10000);
  }
}

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, async () => {
    stopping = true;
    await connection?.close().catch(() => {});
    process.exit(0);
  });
}

await run();
