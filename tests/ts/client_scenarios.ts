// The generated client at run time, under Node.js (its global WebSocket), against a real
// server (tests/ts/rpc_app.py). tests/test_client_ts.py compiles this file with tsc next to
// the generated websocket-types.ts and websocket-client.ts, puts the generated
// websocket-client.js beside the output, and runs:
//
//   node client_scenarios.js ws://127.0.0.1:PORT [scenario ...]
//
// Each scenario prints one JSON line: {"name": ..., "ok": true} or {"ok": false, "error"}.
// Every wait is bounded; nothing asserts on timing.

import type { RpcWebSocket } from "./websocket-types.js";
import {
  connectBeatWebSocket,
  connectExpiringWebSocket,
  connectFlapWebSocket,
  connectManyWebSocket,
  connectNosinceWebSocket,
  connectProtoWebSocket,
  manyWebSocketPath,
  MAX_RESUME_POSITIONS,
  MAX_RESUME_QUERY_BYTES,
  WebSocketClosedError,
  WebSocketProtocolError,
  WebSocketServerError,
  WebSocketTimeoutError,
  connectRpcWebSocket,
  rpcWebSocketPath,
  type CloseInfo,
  type ConnectOptions,
  type ReconnectInfo,
  type RecoveryInfo,
  type RpcWebSocketClient,
  type ServerMessageOf,
  type ServerType,
  type RpcWebSocketRoute,
  type WebSocketClientError,
} from "./websocket-client.js";

declare const process: { argv: string[]; exitCode: number | undefined };

const base = process.argv[2] ?? "";
const WAIT = 10000;

function url(room: string): string {
  return new URL(rpcWebSocketPath({ room }), base).href;
}

function check(condition: boolean, what: string): asserts condition {
  if (!condition) throw new Error(`check failed: ${what}`);
}

function within<T>(promise: Promise<T>, what: string, ms = WAIT): Promise<T> {
  const bounded = new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
  bounded.catch(() => {}); // a scenario that fails first may never await it
  return bounded;
}

async function rejection(promise: Promise<unknown>, what: string): Promise<unknown> {
  try {
    await within(promise, what);
  } catch (error) {
    return error;
  }
  throw new Error(`${what} resolved; it should have rejected`);
}

/** Resolves with the next value `subscribe` hands to its callback. */
function next<T>(subscribe: (callback: (value: T) => void) => () => void, what: string): Promise<T> {
  return within(
    new Promise<T>((resolve) => {
      const off = subscribe((value) => {
        off();
        resolve(value);
      });
    }),
    what,
  );
}

type Said = ServerMessageOf<RpcWebSocketRoute, "said">;
type Data<K extends ServerType<RpcWebSocketRoute>> = RpcWebSocketRoute["server"][K];

/** Resolves with the `data` of the next message of `type`. */
function nextData<K extends ServerType<RpcWebSocketRoute>>(
  client: RpcWebSocketClient,
  type: K,
): Promise<Data<K>> {
  return next<Data<K>>((f) => client.on(type, f), `a ${type} message`);
}

/** Collects the `said` messages a client receives. */
function said(client: RpcWebSocketClient): Said[] {
  const seen: Said[] = [];
  client.on("said", (_data, message) => {
    seen.push(message);
  });
  return seen;
}

/**
 * Connect, and wait until the server has run its `on_connect` (its `hello`): a server
 * closing a connection in the first instant after the upgrade can reach Node.js's
 * WebSocket as a 1006 instead of its close code.
 */
async function join(
  room: string,
  token: string,
  options: ConnectOptions = {},
): Promise<RpcWebSocketClient> {
  const client = connectRpcWebSocket(url(room), { ...options, token });
  const hello = nextData(client, "hello");
  await within(client.opened, `the connection to ${room}`);
  await hello;
  return client;
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + WAIT;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const scenarios: Record<string, () => Promise<void>> = {
  async requests_replies_acks_and_errors() {
    const client = connectRpcWebSocket(url("requests"), { token: "user-ada" });
    const hello = nextData(client, "hello");
    await within(client.opened, "the connection");
    const greeting = await hello;
    check(greeting.user === "ada" && greeting.room === "requests", "hello from the token's user");

    const pong = await within(client.request("ping", { timestamp: 5 }), "the pong");
    check(pong.type === "pong" && pong.data.timestamp === 5, "the typed reply");
    check(typeof pong.id === "number", "the reply carries the request's id");

    const acked: undefined = await within(client.request("note", { text: "hi" }), "the ack");
    check(acked === undefined, "an ack resolves with undefined");

    const echoed = await within(client.request("echo", { text: "e" }), "the echo");
    check(echoed !== undefined && echoed.type === "echoed" && echoed.data.text === "e", "any reply");
    const quiet = await within(client.request("echo", { text: "e", reply: false }), "the ack");
    check(quiet === undefined, "or an ack");

    const refused = await rejection(client.request("fail", { code: "NOPE" }), "fail");
    check(refused instanceof WebSocketServerError, "an error envelope rejects the request");
    check(refused.code === "NOPE" && refused.message === "refused on purpose", "code, message");
    check(typeof refused.id === "number", "the error names the request");

    // What a JavaScript page could send: the server's validation answers.
    const invalid = { timestamp: "soon" } as unknown as RpcWebSocket.ClientData["ping"];
    const validation = await rejection(client.request("ping", invalid), "validation");
    check(validation instanceof WebSocketServerError, "a validation error");
    check(validation.code === "VALIDATION_ERROR", "VALIDATION_ERROR");
    check(validation.details[0]?.path === "$.data.timestamp", "details name the field");

    const errors: WebSocketClientError[] = [];
    client.onError((error) => errors.push(error));
    client.send("fail", { code: "LOUD" }); // no id: the error goes to onError
    client.send("weird", {}); // the server answers with a type the route does not declare
    await until(() => errors.length >= 2, "two errors");
    const [loud, weird] = errors;
    check(loud instanceof WebSocketServerError && loud.code === "LOUD", "send's error");
    check(loud.id === undefined, "answers no request");
    check(weird instanceof WebSocketProtocolError && weird.type === "surprise", "unknown type");

    let unknownType: unknown;
    try {
      client.send("nope" as "note", { text: "x" });
    } catch (error) {
      unknownType = error;
    }
    check(unknownType instanceof TypeError, "a type the route does not take throws");

    let pongs = 0;
    client.on("pong", () => {
      pongs += 1;
    });
    const late = await rejection(client.request("slow", { seconds: 0.3 }, { timeout: 20 }), "slow");
    check(late instanceof WebSocketTimeoutError, "a request times out");
    check(late.message.includes(String(late.id)), "the timeout names the id");
    // Handled in order: this answer comes after the late one, which is dropped.
    const after = await within(client.request("ping", { timestamp: 6 }), "the next pong");
    check(after.data.timestamp === 6 && pongs === 0, "the late reply reached no handler");

    const controller = new AbortController();
    const aborted = client.request("slow", { seconds: 0.3 }, { signal: controller.signal });
    controller.abort(new Error("not needed"));
    const reason = await rejection(aborted, "the aborted request");
    check(reason instanceof Error && reason.message === "not needed", "abort rejects with reason");

    const waiting = client.request("slow", { seconds: 5 });
    const info = await within(client.close(), "the close");
    check(info.code === 1000 && !info.reconnecting, "closed by the client");
    const lost = await rejection(waiting, "the request cut off");
    check(lost instanceof WebSocketClosedError && lost.id !== undefined, "a waiting request fails");
    let after_close: unknown;
    try {
      client.send("note", { text: "late" });
    } catch (error) {
      after_close = error;
    }
    check(after_close instanceof WebSocketClosedError, "send after close throws");
    const refused_after = await rejection(client.request("note", { text: "late" }), "request");
    check(refused_after instanceof WebSocketClosedError, "request after close rejects");
  },

  async a_first_connection_that_fails_closes_the_client() {
    const denied = connectRpcWebSocket(url("denied"), { token: "bad" });
    const error = await rejection(denied.opened, "the denied connection");
    check(error instanceof WebSocketClosedError && error.code === 1006, "opened rejects");
    const info = await within(denied.closed, "closed");
    check(!info.reconnecting && info.code === 1006, "closed for good");
  },

  async refuse_or_queue_while_disconnected() {
    const refusing = connectRpcWebSocket(url("refuse"), {
      token: "user-r",
      whileDisconnected: "refuse",
    });
    let thrown: unknown;
    try {
      refusing.send("note", { text: "too early" });
    } catch (error) {
      thrown = error;
    }
    check(thrown instanceof WebSocketClosedError && thrown.reconnecting, "refused before open");
    await within(refusing.opened, "open");
    await within(refusing.request("note", { text: "now" }), "the ack");
    await refusing.close();

    const queueing = connectRpcWebSocket(url("queue"), { token: "user-q" });
    const early = queueing.request("ping", { timestamp: 1 }); // before the connection opens
    check(queueing.queued === 1, "queued");
    const pong = await within(early, "the queued request's reply");
    const left: number = queueing.queued; // (tsc narrowed `queued` to 1 above)
    check(pong.data.timestamp === 1 && left === 0, "sent once open");
    await queueing.close();
  },

  async reconnects_resumes_and_recovers_what_it_missed() {
    const reconnect = { initial: 50, maximum: 200 };
    const ada = await join("resume", "user-ada", { reconnect });
    const bob = await join("resume", "user-bob");
    const heard = said(ada);
    await within(bob.request("shout", { text: "one" }), "the ack");
    await until(() => heard.length === 1, "the first publication");
    const first = heard[0];
    check(first !== undefined && first.topic === "room:resume", "publications carry the topic");
    check(typeof first.offset === "number" && typeof first.epoch === "string", "and a position");
    const position = ada.positions["room:resume"];
    check(position !== undefined && position.offset === first.offset, "positions follow");

    const closes: CloseInfo[] = [];
    ada.onClose((info) => {
      closes.push(info);
      // While disconnected, messages wait in the queue.
      if (info.reconnecting) ada.send("shout", { text: "queued" });
    });
    const reconnected = next<ReconnectInfo>((f) => ada.onReconnect(f), "the reconnection");
    const recovery = next<RecoveryInfo>((f) => ada.onRecovery(f), "the recovery");
    // The server makes ada miss two publications, then closes with 1012 (restart).
    ada.send("drop", { code: 1012, missed: 2 });
    const info = await reconnected;
    check(closes.length === 1 && closes[0]?.code === 1012, "closed with 1012");
    check(closes[0]?.reconnecting === true, "and reconnecting");
    check(info.reconnects === 1 && ada.reconnects === 1, "reconnected once");
    check(info.resumed["room:resume"]?.offset === first.offset, "resumed from its position");
    const recovered = await recovery;
    check(recovered.topic === "room:resume" && recovered.recovered, "recovered");
    await until(() => heard.length === 4, "the missed and the queued publications");
    const texts = heard.map((m) => m.data.text);
    check(texts.join() === "one,missed 0,missed 1,queued", `in order, once: ${texts.join()}`);
    const offsets = heard.map((m) => m.offset ?? -1);
    check(offsets.every((o, i) => i === 0 || o === (offsets[i - 1] ?? 0) + 1), "no gap");

    const pong = await within(ada.request("ping", { timestamp: 7 }), "a request after");
    check(pong.data.timestamp === 7, "requests work after the reconnection");
    await Promise.all([ada.close(), bob.close()]);
  },

  async a_stale_position_is_not_recovered() {
    const since = { "room:stale": { epoch: "gone", offset: 3 } };
    const ada = await join("stale", "user-ada", { since });
    const recovery = next<RecoveryInfo>((f) => ada.onRecovery(f), "the recovery");
    const bob = await join("stale", "user-bob");
    await within(bob.request("shout", { text: "new" }), "the ack");
    const info = await recovery;
    check(info.topic === "room:stale" && !info.recovered, "not recovered: another epoch");
    check(info.since.epoch === "gone" && info.position?.epoch !== "gone", "both positions");
    check(info.position !== null, "the position of the publication");
    await Promise.all([ada.close(), bob.close()]);
  },

  async a_close_code_that_does_not_reconnect_ends_the_client() {
    const ada = await join("ended", "user-ada");
    const closes: CloseInfo[] = [];
    ada.onClose((info) => closes.push(info));
    ada.send("drop", { code: 4000 }); // an application's code: not one to reconnect after
    const info = await within(ada.closed, "the end");
    check(info.code === 4000 && !info.reconnecting, "not reconnecting after 4000");
    check(closes.length === 1 && ada.reconnects === 0, "closed once, for good");
  },

  async answers_the_routes_heartbeat() {
    // The route's server pings with {"type": "ping"}; its pong handler answers with "beat".
    const client = connectBeatWebSocket(new URL("/beat", base).href);
    const beat = next<unknown>((f) => client.on("beat", f), "a beat");
    await within(client.opened, "the connection");
    await beat;
    await client.close();
  },

  async route_paths_are_encoded() {
    check(rpcWebSocketPath({ room: "a b/c" }) === "/rpc/a%20b%2Fc", "encoded parameters");
  },

  async wire_types_named_like_object_members_are_answered() {
    // Before: the reply's declared types were looked up in a plain object, and
    // "toString" found Object.prototype.toString: the listener threw, the request hung.
    const client = connectProtoWebSocket(new URL("/proto", base).href);
    await within(client.opened, "the connection");
    const a = await within(client.request("toString", { text: "a" }), "toString's answer");
    check(a?.type === "answer" && a.data.text === "a", "toString is answered");
    const b = await within(client.request("constructor", { text: "b" }), "constructor's");
    check(b.type === "answer" && b.data.text === "b", "constructor is answered");
    const c = await within(client.request("__proto__", { text: "c" }), "__proto__'s answer");
    check(c.type === "answer" && c.data.text === "c", "__proto__ is answered");
    const d = await within(client.request("hasOwnProperty", { text: "d" }), "the ack");
    check(d === undefined, "hasOwnProperty is acknowledged");
    await client.close();
  },

  async positions_are_capped_and_the_newest_resumed() {
    // Before: every topic ever seen went into the URL of every reconnection: 101 topics
    // were refused (400), and the client retried forever without getting back in.
    const reconnect = { initial: 20, maximum: 100 };
    const client = connectManyWebSocket(new URL(manyWebSocketPath({ key: "cap" }), base).href, {
      reconnect,
    });
    const resumedSince = (): Promise<string[]> =>
      next<{ since: string[] }>((f) => client.on("resumed", f), "resumed").then((d) => d.since);
    const first = resumedSince();
    await within(client.opened, "the connection");
    check((await first).length === 0, "nothing to resume at first");
    const topic = (n: number, length: number): string => `many:cap:${n}:`.padEnd(length, "x");
    const keys = (): string[] => Object.keys(client.positions);

    await within(client.request("spread", { count: 101, length: 8 }), "101 topics");
    await until(() => client.positions[topic(100, 8)] !== undefined, "the last publication");
    const resumed = resumedSince();
    client.send("restart", {});
    const named = (await resumed).map((value) => value.slice(0, value.lastIndexOf("@")));
    check(client.reconnects === 1, "back in at once");
    const newest = Array.from({ length: 101 }, (_, n) => topic(n, 8)).slice(-MAX_RESUME_POSITIONS);
    check(named.join() === newest.join(), `resumed the newest: ${named.join()}`);
    check(keys().join() === newest.join(), `kept the newest ${MAX_RESUME_POSITIONS}`);

    await within(client.request("spread", { count: 60, length: 256 }), "60 long topics");
    await until(() => client.positions[topic(59, 256)] !== undefined, "the last publication");
    const kept = keys();
    check(kept.length < 60 && kept.at(-1) === topic(59, 256), `the newest: ${kept.length}`);
    const again = resumedSince();
    client.send("restart", {});
    const since = await again;
    const bytes = since.reduce((sum, v) => sum + new URLSearchParams({ since: v }).toString().length + 1, 0);
    check(since.length === kept.length && bytes <= MAX_RESUME_QUERY_BYTES, `${bytes} bytes`);
    const reconnects: number = client.reconnects; // (tsc narrowed it to 1 above)
    check(reconnects === 2, "back in again");
    client.forget(topic(59, 256));
    check(client.positions[topic(59, 256)] === undefined, "forgotten");
    await client.close();
  },

  async an_attempt_with_positions_that_fails_is_retried_without_them() {
    // The server refuses (400) any upgrade that names positions: a browser only sees a
    // connection that never opened, so the client tries once more at once without them.
    const since = { "many:gone": { epoch: "e1", offset: 3 } };
    const url = new URL("/nosince", base).href;
    const client = connectNosinceWebSocket(url, { since, reconnect: { initial: 20 } });
    const verdicts: RecoveryInfo[] = [];
    client.onRecovery((info) => verdicts.push(info));
    await within(client.opened, "the connection without positions");
    await until(() => verdicts.length === 1, "the verdict");
    const [given] = verdicts;
    check(given?.topic === "many:gone" && !given.recovered, "not recovered");
    check(given.position === null && given.since.offset === 3, "never sent");
    check(Object.keys(client.positions).length === 0, "dropped");

    const tally = next<unknown>((f) => client.on("tally", f), "the publication");
    client.send("shout", { text: "hi" });
    await tally;
    check(client.positions["many:nosince"] !== undefined, "a position to resume from");
    const reconnected = next<ReconnectInfo>((f) => client.onReconnect(f), "the reconnection");
    client.send("restart", {});
    const info = await reconnected;
    check(Object.keys(info.resumed).length === 0, "reconnected without positions");
    await until(() => verdicts.length === 2, "the second verdict");
    const lost = verdicts[1];
    check(lost?.topic === "many:nosince" && !lost.recovered && lost.position === null, "lost");
    await client.close();
  },

  async refreshes_through_a_promise_returning_token_function() {
    // Tokens live 1.5 s; the server asks for a new one halfway through each.
    let calls = 0;
    const token = async (): Promise<string> => {
      calls += 1;
      await new Promise((resolve) => setTimeout(resolve, 10));
      return `ada:${calls}:${Date.now() / 1000 + 1.5}`;
    };
    const client = connectExpiringWebSocket(new URL("/expiring", base).href, {
      token,
      reconnect: { initial: 20 },
    });
    try {
      await within(client.opened, "the connection");
      const deadline = Date.now() + WAIT;
      let generation = 0;
      while (generation < 3) {
        if (Date.now() > deadline) throw new Error(`timed out at generation ${generation}`);
        generation = (await within(client.request("whoami", {}), "whoami")).data.generation;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      check(client.reconnects === 0, `two refreshes, ${client.reconnects} reconnections`);
      check(calls >= 3, `the function gave every token: ${calls}`);
    } finally {
      await client.close();
    }
  },

  async a_fixed_token_that_expires_ends_the_client_with_3000() {
    // The refresh sends the same token again, which the server refuses (no later expiry):
    // without a function to fetch a fresh one, the client does not reconnect.
    const fixed = `ada:1:${Date.now() / 1000 + 1.5}`;
    const client = connectExpiringWebSocket(new URL("/expiring", base).href, {
      token: fixed,
      reconnect: { initial: 20 },
    });
    try {
      const info = await within(client.closed, "the end");
      check(info.code === 3000 && !info.reconnecting, `closed with ${info.code}`);
      check(client.reconnects === 0, "not reconnected");
    } finally {
      await client.close();
    }
  },

  async does_not_reconnect_after_3003() {
    const ada = await join("kick", "user-ada", { reconnect: { initial: 20 } });
    const bob = await join("kick", "user-bob");
    try {
      await within(bob.request("kick", { user: "ada" }), "the kick");
      const info = await within(ada.closed, "ada's end");
      check(info.code === 3003 && info.reason === "kicked", `closed with ${info.code}`);
      check(!info.reconnecting && ada.reconnects === 0, "for good");
      await within(bob.request("ping", { timestamp: 1 }), "bob is still served");
    } finally {
      await Promise.all([ada.close(), bob.close()]);
    }
  },

  async a_server_that_accepts_and_closes_at_once_sees_the_delays_grow() {
    // Before: every upgrade reset the backoff: about 60 connections in 3 s here.
    const client = connectFlapWebSocket(new URL("/flap", base).href, {
      reconnect: { initial: 50, maximum: 400 },
    });
    let opens = 0;
    client.onOpen(() => {
      opens += 1;
    });
    await new Promise((resolve) => setTimeout(resolve, 3000));
    await client.close();
    // The waits grow to 400 ms ceilings (200 ms on average): about 17 connections.
    check(opens >= 3 && opens <= 30, `${opens} connections in 3 s`);
  },
};

async function main(): Promise<void> {
  const wanted = process.argv.slice(3);
  const names = wanted.length > 0 ? wanted : Object.keys(scenarios);
  let failed = 0;
  for (const name of names) {
    const scenario = scenarios[name];
    try {
      if (scenario === undefined) throw new Error(`no scenario ${name}`);
      await scenario();
      console.log(JSON.stringify({ name, ok: true }));
    } catch (error) {
      failed += 1;
      const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      console.log(JSON.stringify({ name, ok: false, error: text }));
    }
  }
  process.exitCode = failed === 0 ? 0 : 1;
}

await main();
