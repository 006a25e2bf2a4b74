// Reads splitinfer detections two ways, without the Python code: gRPC Subscribe (@grpc/grpc-js with the
// .proto files) and the NATS JetStream results bus (the CloudEvents JSON variant, `splitinfer cloud
// --nats URL --nats-json`). Prints one JSON line per result: {"source": "grpc" | "nats", ...}.
//
//   npm ci && node consume.js --grpc localhost:50051 --plaintext --nats nats://localhost:4222 --stream site-a/cam-1
//   node consume.js --grpc cloud.example.com:50051 --tls-ca ca.crt --token-file dashboard.token --stream site-a/cam-1
//
// gRPC is TLS unless --plaintext (--tls-ca: the CA of the cloud's certificate, default the system roots;
// --token-file: a bearer token, sent only over TLS). Either source may be left out. The line {"ready": true} says the gRPC subscription is registered.
//
// gRPC uses SubscribeWithCredits: at most --window results are granted ahead, and one more each time a result has
// been handled (--handle-ms simulates slow handling), so a slow consumer's backlog waits in the cloud, which drops
// what waited longer than its --subscriber-max-lag. Results that waited longer than that in all (in the cloud,
// `queued_seconds`, and here) are dropped here too; `dropped` counts both.
// --tracks reads the track events instead (zone entered / left, line crossed; docs/TRACKS.md): from the bus's
// splitinfer.tracks.<stream>, and from gRPC as events interleaved with the results (SubscribeRequest.events).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import { connect } from "nats";

const here = path.dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    grpc: { type: "string" },
    nats: { type: "string" },
    stream: { type: "string" },
    count: { type: "string", default: "10" },
    window: { type: "string", default: "16" },
    "handle-ms": { type: "string", default: "0" },
    plaintext: { type: "boolean", default: false },
    tracks: { type: "boolean", default: false },
    "tls-ca": { type: "string" },
    "token-file": { type: "string" },
    protos: { type: "string", default: path.join(here, "..", "..", "..", "protos") },
  },
});
const count = Number(args.count);
const print = (record) => process.stdout.write(JSON.stringify(record) + "\n");

// The subject token of a stream id: every byte outside [A-Za-z0-9_-] as %XX (docs/RESULTS_SCHEMA.md).
export function subjectToken(streamId) {
  return Array.from(new TextEncoder().encode(streamId), (b) => {
    const ch = String.fromCharCode(b);
    return /[A-Za-z0-9_-]/.test(ch) ? ch : "%" + b.toString(16).toUpperCase().padStart(2, "0");
  }).join("");
}

// The channel credentials the flags ask for (the same rules as the Python clients' ChannelSecurity).
function credentials() {
  if (args.plaintext) {
    if (args["token-file"] || args["tls-ca"]) throw new Error("--plaintext cannot be combined with --tls-ca or --token-file");
    return grpc.credentials.createInsecure();
  }
  const tls = grpc.credentials.createSsl(args["tls-ca"] ? fs.readFileSync(args["tls-ca"]) : null);
  if (!args["token-file"]) return tls;
  const token = fs.readFileSync(args["token-file"], "utf8").trim();
  const bearer = grpc.credentials.createFromMetadataGenerator((_, done) => {
    const metadata = new grpc.Metadata();
    metadata.add("authorization", `Bearer ${token}`);
    done(null, metadata);
  });
  return grpc.credentials.combineChannelCredentials(tls, bearer);
}

function fromGrpc() {
  // keepCase + longs as strings: the field names and 64-bit values of the JSON form.
  const definition = protoLoader.loadSync("splitinfer/v1/inference.proto", {
    includeDirs: [args.protos], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
  });
  const { splitinfer } = grpc.loadPackageDefinition(definition);
  const client = new splitinfer.v1.InferenceService(args.grpc, credentials());
  const window = Number(args.window);
  const handleMs = Number(args["handle-ms"]);
  const call = client.SubscribeWithCredits();
  call.write({ subscription: { stream_ids: args.stream ? [args.stream] : [], events: args.tracks }, credits: window });
  let maxLagMs = Infinity; // the cloud's --subscriber-max-lag, from its response header
  const queue = []; // [response, arrival time in ms]
  let seen = 0;
  let droppedHere = 0;
  let handling = false;
  let finished = false;
  return new Promise((resolve, reject) => {
    const finish = () => {
      finished = true;
      call.cancel();
      client.close();
      resolve();
    };
    // One result at a time: drop what is stale, print the next, take handleMs, then grant what was freed.
    const handle = async () => {
      if (handling || finished) return;
      handling = true;
      while (queue.length && !finished) {
        let freed = 0;
        const now = Date.now();
        while (queue.length && queue[0][0].queued_seconds * 1000 + now - queue[0][1] > maxLagMs) {
          const [stale] = queue.shift();
          droppedHere += 1 + Number(stale.dropped);
          freed++;
        }
        if (queue.length) {
          const [response] = queue.shift();
          const dropped = Number(response.dropped) + droppedHere;
          droppedHere = 0;
          if (response.event) {
            print({ source: "grpc", sequence: response.sequence, dropped, track_event: response.event });
          } else {
            print({ source: "grpc", sequence: response.sequence, dropped, result: response.result });
          }
          freed++;
          if (++seen === count) return finish();
          if (handleMs > 0) await new Promise((wake) => setTimeout(wake, handleMs));
        }
        if (!finished) call.write({ credits: freed });
      }
      handling = false;
    };
    call.on("metadata", (metadata) => {
      if (metadata.get("splitinfer-subscribed").length) print({ ready: true });
      const lag = Number(metadata.get("splitinfer-max-lag")[0]);
      if (lag > 0) maxLagMs = lag * 1000;
    });
    call.on("data", (response) => {
      queue.push([response.item, Date.now()]);
      handle();
    });
    call.on("error", (err) => (err.code === grpc.status.CANCELLED ? resolve() : reject(err)));
  });
}

async function fromNats() {
  const nc = await connect({ servers: args.nats });
  const js = nc.jetstream();
  const prefix = args.tracks ? "splitinfer.tracks." : "splitinfer.events.";
  const subject = prefix + (args.stream ? subjectToken(args.stream) : ">");
  // An ordered consumer reads from the first retained result (a deliver_policy option makes nats.js 2.29 hang).
  const consumer = await js.consumers.get("SPLITINFER_RESULTS", { filterSubjects: subject });
  for (let seen = 0; seen < count; seen++) {
    const msg = await consumer.next({ expires: 30000 });
    if (msg === null) throw new Error(`no result on ${subject} within 30 s`);
    print({ source: "nats", sequence: msg.seq, contentType: msg.headers?.get("Content-Type"), event: msg.json() });
  }
  await nc.close();
}

const jobs = [];
if (args.grpc) jobs.push(fromGrpc());
if (args.nats) jobs.push(fromNats());
if (!jobs.length) {
  console.error("give --grpc HOST:PORT and/or --nats URL");
  process.exit(2);
}
try {
  await Promise.all(jobs);
} catch (err) {
  console.error(`splitinfer consumer: ${err.message}`);
  process.exit(1);
}
