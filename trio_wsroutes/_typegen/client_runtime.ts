import type { MessageId, WebSocketErrorCode, WebSocketErrorDetail } from "./websocket-types.js";

// -- The client runtime: the same for every route ------------------------------------------

/**
 * The types of one route, for {@link WebSocketClient}; generated per route
 * (`ChatWebSocketRoute`).
 */
export interface RouteTypes {
  /** The `data` of each client message, by `type`. */
  client: object;
  /** The `data` of each server message, by `type`. */
  server: object;
  /**
   * What answers each client message sent with `request()`: the server message types
   * its handler returns, and `"ack"` when it may return nothing.
   */
  replies: object;
}

/** The wire type of a client message of route `R`. */
export type ClientType<R extends RouteTypes> = Extract<keyof R["client"], string>;

/** The wire type of a server message of route `R`. */
export type ServerType<R extends RouteTypes> = Extract<keyof R["server"], string>;

/**
 * A server message of route `R` (of type `K`, by default any of them), as the handlers of
 * {@link WebSocketClient.on} and the replies of {@link WebSocketClient.request} get it.
 * A publication on a topic with history also carries its `topic`, `offset` and `epoch`;
 * a presence event (`presence_join`, `presence_leave`) carries its `topic`.
 */
export type ServerMessageOf<R extends RouteTypes, K extends ServerType<R> = ServerType<R>> =
  K extends unknown
    ? {
        type: K;
        data: R["server"][K];
        id?: MessageId;
        topic?: string;
        offset?: number;
        epoch?: string;
      }
    : never;

type Answer<R extends RouteTypes, K> = K extends keyof R["replies"]
  ? R["replies"][K]
  : "ack" | ServerType<R>;

type ReplyTo<R extends RouteTypes, A> = A extends "ack"
  ? undefined
  : A extends ServerType<R>
    ? ServerMessageOf<R, A>
    : never;

/**
 * What `request(type, ...)` resolves with: the reply message, narrowed to the types the
 * handler is declared to return, or `undefined` for an `ack` (a handler that returns
 * nothing).
 */
export type ReplyOf<R extends RouteTypes, K extends ClientType<R>> = ReplyTo<R, Answer<R, K>>;

/** What the client checks at run time, for one route; generated per route. */
export interface RouteInfo {
  /** The route's path, for messages. */
  readonly path: string;
  /** The client message types. */
  readonly client: readonly string[];
  /** The server message types. */
  readonly server: readonly string[];
  /**
   * The types that may answer each client message (`"ack"`: nothing returned); a
   * message not listed may be answered by any server message or an `ack`.
   */
  readonly replies: { readonly [type: string]: readonly string[] | undefined };
  /** The query parameter that carries `token` (the route's `create_token_auth`'s). */
  readonly tokenParam: string;
}

/** Where the client is in a topic with history: the last publication it received. */
export interface Position {
  readonly epoch: string;
  readonly offset: number;
}

/**
 * How the client waits between reconnection attempts: exponential backoff with full
 * jitter. Attempt `n` waits a random time between 0 and
 * `min(maximum, initial * factor ** (n - 1))` milliseconds. The count starts again from 1
 * only after a connection stayed open `resetAfter` milliseconds: a connection the server
 * accepts and closes at once counts as a failed attempt, so the waits go on growing.
 */
export interface Backoff {
  /** Milliseconds: the ceiling of the first wait (default 500). */
  initial?: number | undefined;
  /** Milliseconds: the largest ceiling (default 30000). */
  maximum?: number | undefined;
  /** How much the ceiling grows per failed attempt (default 2). */
  factor?: number | undefined;
  /** Give up after this many failed attempts in a row (default: never). */
  maxAttempts?: number | undefined;
  /**
   * Milliseconds a connection must stay open for the next loss to start again from
   * attempt 1 (default 10000).
   */
  resetAfter?: number | undefined;
}

/**
 * A token, or a function that gives a current one (its promise, or the token itself):
 * called before each connection and reconnection, and when the server asks for a new
 * token before the current one expires.
 */
export type TokenSource = string | (() => string | Promise<string>);

/** The options of `connect...(url, options)`. */
export interface ConnectOptions {
  /**
   * A token for the route's `create_token_auth`, sent in the query (browsers cannot set
   * headers on a WebSocket), as `tokenParam`; or a function giving one (or its promise),
   * called before each connection attempt. When the server asks for a new token (its
   * `refresh` request, for credentials that expire), the client answers with the token,
   * calling the function again: a function can fetch a fresh one, so the connection goes
   * on without a reconnection, and after a close with 3000 (token expired) the client
   * reconnects with a fresh one.
   */
  token?: TokenSource | undefined;
  /** The query parameter for `token` (default: the route's, else `"token"`). */
  tokenParam?: string | undefined;
  /** Subprotocols to offer. */
  protocols?: string | string[] | undefined;
  /**
   * Reconnect after a lost connection or a close with 1001, 1011, 1012, 1013 or 1014, or
   * with 3000 (the token expired) when `token` is a function (default `true`; a
   * {@link Backoff} tunes the waits, `false` never reconnects). Never after 1000, 1008
   * (policy), 3003 (disconnected by the server) or another code.
   */
  reconnect?: boolean | Backoff | undefined;
  /**
   * What `send()` and `request()` do while the client is not connected (connecting or
   * reconnecting): `"queue"` (default) keeps the messages, in order, and sends them as
   * soon as a connection opens; `"refuse"` throws a {@link WebSocketClosedError}.
   */
  whileDisconnected?: "queue" | "refuse" | undefined;
  /** At most this many messages wait in the queue (default 1024); more are refused. */
  maxQueued?: number | undefined;
  /** Milliseconds `request()` waits for its answer by default (30000; `Infinity`: forever). */
  requestTimeout?: number | undefined;
  /**
   * Positions to resume from on the first connection already (saved `positions`; the
   * last ones count as the most recently seen).
   */
  since?: Readonly<Record<string, Position>> | undefined;
}

/** The options of `request()`. */
export interface RequestOptions {
  /** Milliseconds to wait for the answer, queueing included (default: `requestTimeout`). */
  timeout?: number | undefined;
  /** Gives up waiting (rejecting with the signal's reason) when aborted. */
  signal?: AbortSignal | undefined;
}

/** A connection closed: the client's `onClose` handlers get this. */
export interface CloseInfo {
  /** The close code (1006: lost, or the connection never opened). */
  code: number;
  reason: string;
  /** Whether the client will try to connect again. */
  reconnecting: boolean;
}

/** A reconnection opened: the client's `onReconnect` handlers get this. */
export interface ReconnectInfo {
  /** How many times the client has reconnected, this time included. */
  reconnects: number;
  /**
   * The topics the client asked to resume (`since`), with the position it resumed from.
   * Whether each one recovered is known with its first publication: see `onRecovery`.
   */
  resumed: Readonly<Record<string, Position>>;
}

/**
 * The verdict on a topic the client resumed: the client's `onRecovery` handlers get this
 * when the topic's first publication arrives, before the message's own handlers; or, with
 * `position: null`, when a connection opened without naming the topic's position.
 */
export interface RecoveryInfo {
  topic: string;
  /**
   * Whether nothing was lost: the publication follows the resumed position in the same
   * epoch (what was missed, if anything, came from the server's history, in order).
   * `false`: the history was lost (new epoch) or no longer reached back, or the position
   * was not sent; reload the topic's state.
   */
  recovered: boolean;
  /** The position the client resumed from (or meant to). */
  since: Position;
  /**
   * The position of the publication that arrived; `null` when the position could not be
   * sent: a connection attempt naming it failed and the next one, without it, opened (the
   * server may have refused the URL), or it was over the caps ({@link MAX_RESUME_POSITIONS}).
   */
  position: Position | null;
}

/** Base class of the errors the client raises or reports. */
export class WebSocketClientError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/**
 * The server answered with an error envelope: `request()` rejects with it (the envelope
 * carried the request's `id`), or `onError` handlers get it (an error that answers no
 * request, such as one for a `send()`). The connection stays open.
 */
export class WebSocketServerError extends WebSocketClientError {
  /** `VALIDATION_ERROR`, `UNKNOWN_TYPE`, a handler's `MessageError` code, ... */
  readonly code: WebSocketErrorCode;
  /** One entry per problem, with its JSON path (`$.data.text`). */
  readonly details: readonly WebSocketErrorDetail[];
  /** The request's `id`, if the error answers one. */
  readonly id: MessageId | undefined;

  constructor(
    code: WebSocketErrorCode,
    message: string,
    details: readonly WebSocketErrorDetail[] = [],
    id?: MessageId,
  ) {
    super(message);
    this.code = code;
    this.details = details;
    this.id = id;
  }
}

/** No answer to request `id` within `timeout` milliseconds; a late answer is dropped. */
export class WebSocketTimeoutError extends WebSocketClientError {
  readonly id: MessageId;
  readonly timeout: number;

  constructor(id: MessageId, timeout: number) {
    super(`no answer to request ${JSON.stringify(id)} within ${timeout} ms`);
    this.id = id;
    this.timeout = timeout;
  }
}

/**
 * The message could not be sent or answered: the connection closed before the answer to
 * request `id` came (the server may or may not have handled it), the client is closed,
 * or it is not connected and does not queue (`whileDisconnected: "refuse"`, or the queue
 * is full).
 */
export class WebSocketClosedError extends WebSocketClientError {
  /** The close code of the connection (1006 if it was lost or never opened). */
  readonly code: number;
  readonly reason: string;
  /** The request's `id`, for a request. */
  readonly id: MessageId | undefined;
  /** Whether the client is reconnecting (sending again later may succeed). */
  readonly reconnecting: boolean;

  constructor(
    message: string,
    code: number,
    reason: string,
    reconnecting: boolean,
    id?: MessageId,
  ) {
    super(message);
    this.code = code;
    this.reason = reason;
    this.reconnecting = reconnecting;
    this.id = id;
  }
}

/**
 * The server sent something the client cannot hand to the app: not JSON, not an
 * envelope, a binary frame, a type the route does not declare, a malformed position,
 * or an answer of another type than the request's declared reply.
 */
export class WebSocketProtocolError extends WebSocketClientError {
  /** The frame as received (`null` for a binary frame). */
  readonly raw: string | null;
  /** The frame's `type`, when it had one. */
  readonly type: string | undefined;

  constructor(message: string, raw: string | null, type?: string) {
    super(message);
    this.raw = raw;
    this.type = type;
  }
}

/**
 * At most this many topics are resumed by one client: the most recently seen ones (a
 * publication moves its topic to the front). Servers refuse upgrade requests with more
 * than 100 query parameters or 100 `since` values by default; 64 leaves room for the
 * URL's own parameters.
 */
export const MAX_RESUME_POSITIONS = 64;

/**
 * At most this many bytes of URL-encoded `&since=...` parameters in one upgrade request.
 * Common servers refuse a request line over 8 KiB (414) and a request head over 16 KiB
 * (431); 6 KiB of positions leaves 2 KiB for the rest of the URL. When the URL's own path
 * and query (the token among them) are longer, fewer positions are sent.
 */
export const MAX_RESUME_QUERY_BYTES = 6144;

/** The path and query a client with positions stays under (a request line under 8 KiB). */
const MAX_REQUEST_TARGET_BYTES = 8000;
/** The query parameters a server accepts on an upgrade by default (`max_query_params`). */
const SERVER_MAX_QUERY_PARAMS = 100;
/** The longest `since` value a server accepts. */
const MAX_SINCE_LENGTH = 512;

/** Close codes after which the client reconnects: going away, lost, internal error,
 * service restart, try again later, bad gateway. */
const RECONNECT_CODES: ReadonlySet<number> = new Set([1001, 1006, 1011, 1012, 1013, 1014]);
/** The token expired or was refused: reconnect only with a token function (a fresh one). */
const UNAUTHORIZED = 3000;
const ABANDONED_LIMIT = 4096;
const MAX_TIMER = 2147483647;

interface Pending {
  readonly id: number;
  readonly type: string;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
  /** The connection it was sent on; 0 while it waits in the queue. */
  sentOn: number;
  done: () => void;
}

interface Retry {
  readonly initial: number;
  readonly maximum: number;
  readonly factor: number;
  readonly maxAttempts: number;
  readonly resetAfter: number;
}

/** The URL of one connection attempt, and which positions it names. */
interface Attempt {
  readonly url: string;
  /** The positions named in the URL, least recently seen first. */
  readonly sent: ReadonlyMap<string, Position>;
  /** The positions kept that are not in the URL. */
  readonly leftOut: ReadonlyMap<string, Position>;
}

/** The attempt of a connection that never started (its token function failed). */
const NO_ATTEMPT: Attempt = { url: "", sent: new Map(), leftOut: new Map() };

interface Outgoing {
  readonly text: string;
  readonly pending: Pending | null;
}

type Listeners<A extends unknown[]> = Set<(...args: A) => void>;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isMessageId(value: unknown): value is MessageId {
  return typeof value === "string" || (typeof value === "number" && Number.isInteger(value));
}

function call<A extends unknown[]>(listeners: Listeners<A>, ...args: A): void {
  for (const listener of [...listeners]) {
    try {
      listener(...args);
    } catch (error) {
      // A handler's exception surfaces as uncaught, as an event listener's would, without
      // stopping the other handlers or the client.
      queueMicrotask(() => {
        throw error;
      });
    }
  }
}

function listen<A extends unknown[]>(
  listeners: Listeners<A>,
  listener: (...args: A) => void,
): () => void {
  listeners.add(listener);
  return () => {
    listeners.delete(listener);
  };
}

/** An object without a prototype: no key (`toString`, `__proto__`) means anything else. */
function record<V>(entries: Iterable<readonly [string, V]>): Record<string, V> {
  const out = Object.create(null) as Record<string, V>;
  for (const [key, value] of entries) out[key] = value;
  return out;
}

function sinceValue(topic: string, position: Position): string {
  return `${topic}@${position.epoch}:${position.offset}`;
}

/**
 * Positions per topic, least recently seen first: seeing a topic's position moves it to
 * the end, and past {@link MAX_RESUME_POSITIONS} positions or
 * {@link MAX_RESUME_QUERY_BYTES} of `since` parameters the least recently seen are dropped.
 */
class PositionBook {
  readonly #entries = new Map<string, { readonly position: Position; readonly size: number }>();
  #bytes = 0;

  /** Keep `position` as `topic`'s; what was dropped for it (`topic` itself if too long). */
  see(topic: string, position: Position): Map<string, Position> {
    this.forget(topic);
    const dropped = new Map<string, Position>();
    const value = sinceValue(topic, position);
    if (topic === "" || value.length > MAX_SINCE_LENGTH) {
      dropped.set(topic, position);
      return dropped;
    }
    const size = new URLSearchParams([["since", value]]).toString().length + 1;
    this.#entries.set(topic, { position, size });
    this.#bytes += size;
    for (const [old, entry] of this.#entries) {
      if (this.#entries.size <= MAX_RESUME_POSITIONS && this.#bytes <= MAX_RESUME_QUERY_BYTES) {
        break;
      }
      this.#entries.delete(old);
      this.#bytes -= entry.size;
      dropped.set(old, entry.position);
    }
    return dropped;
  }

  forget(topic: string): void {
    const entry = this.#entries.get(topic);
    if (entry !== undefined) {
      this.#entries.delete(topic);
      this.#bytes -= entry.size;
    }
  }

  get(topic: string): Position | undefined {
    return this.#entries.get(topic)?.position;
  }

  /** `[topic, position]`, least recently seen first. */
  *positions(): Generator<[string, Position]> {
    for (const [topic, entry] of this.#entries) yield [topic, entry.position];
  }

  /** `[topic, position, bytes of its since parameter]`, most recently seen first. */
  newestFirst(): [string, Position, number][] {
    return [...this.#entries].reverse().map(([topic, e]) => [topic, e.position, e.size]);
  }
}

function resolveUrl(url: string | URL): URL {
  const base = typeof location === "undefined" ? undefined : location.href;
  const resolved = new URL(url, base);
  if (resolved.protocol === "http:") resolved.protocol = "ws:";
  if (resolved.protocol === "https:") resolved.protocol = "wss:";
  if (resolved.protocol !== "ws:" && resolved.protocol !== "wss:") {
    const scheme = resolved.protocol;
    throw new SyntaxError(`a WebSocket URL is ws://, wss://, http:// or https://, not ${scheme}`);
  }
  return resolved;
}

/** A route's path (`/chat/{room}`) with its parameters in place, URL-encoded. */
export function routePath(path: string, params: object): string {
  const values = new Map<string, unknown>(Object.entries(params));
  return path.replace(/\{([^{}]+)\}/g, (_match, name: string) => {
    const value = values.get(name);
    if (typeof value !== "string") {
      throw new TypeError(`path parameter ${JSON.stringify(name)} must be a string`);
    }
    return encodeURIComponent(value);
  });
}

/**
 * A connection to one route, typed by it: made by the generated `connect...()` function
 * of that route. It reconnects by itself (see {@link ConnectOptions}).
 */
export class WebSocketClient<R extends RouteTypes> {
  /** The URL connected to (without the `token` and `since` parameters). */
  readonly url: string;
  /** Settles when the first connection opens; rejects if it fails (the client is then closed). */
  readonly opened: Promise<void>;
  /** Settles when the client has stopped for good: the last close. */
  readonly closed: Promise<CloseInfo>;

  readonly #route: RouteInfo;
  readonly #base: URL;
  readonly #token: TokenSource | undefined;
  readonly #tokenParam: string;
  readonly #protocols: string | string[] | undefined;
  readonly #backoff: Retry | null;
  readonly #refuse: boolean;
  readonly #maxQueued: number;
  readonly #requestTimeout: number;
  readonly #handlers = new Map<string, Listeners<[unknown, ServerMessageOf<R>]>>();
  readonly #onError: Listeners<[WebSocketClientError]> = new Set();
  readonly #onClose: Listeners<[CloseInfo]> = new Set();
  readonly #onOpen: Listeners<[]> = new Set();
  readonly #onReconnect: Listeners<[ReconnectInfo]> = new Set();
  readonly #onRecovery: Listeners<[RecoveryInfo]> = new Set();
  readonly #pending = new Map<number, Pending>();
  readonly #abandoned = new Set<MessageId>();
  readonly #seen = new PositionBook();
  /** Positions named by the open connection whose first publication has not come yet. */
  #resuming = new Map<string, Position>();
  /** Positions given as `since` but over the caps: reported when a connection opens. */
  readonly #unresumed = new Map<string, Position>();
  #queue: Outgoing[] = [];
  #ws: WebSocket | null = null;
  #generation = 0;
  #openGeneration = -1;
  #nextId = 1;
  #attempts = 0;
  #openedAt = 0;
  #reconnects = 0;
  #everOpened = false;
  #closing = false;
  #ended: CloseInfo | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #settleOpened: [() => void, (error: unknown) => void];
  #settleClosed: (info: CloseInfo) => void;

  constructor(route: RouteInfo, url: string | URL, options: ConnectOptions = {}) {
    this.#route = route;
    this.#base = resolveUrl(url);
    this.url = this.#base.href;
    this.#token = options.token;
    this.#tokenParam = options.tokenParam ?? route.tokenParam;
    this.#protocols = options.protocols;
    const reconnect = options.reconnect ?? true;
    const backoff = reconnect === true ? {} : reconnect === false ? null : reconnect;
    this.#backoff =
      backoff === null
        ? null
        : {
            initial: backoff.initial ?? 500,
            maximum: backoff.maximum ?? 30000,
            factor: backoff.factor ?? 2,
            maxAttempts: backoff.maxAttempts ?? Infinity,
            resetAfter: backoff.resetAfter ?? 10000,
          };
    this.#refuse = options.whileDisconnected === "refuse";
    this.#maxQueued = options.maxQueued ?? 1024;
    this.#requestTimeout = options.requestTimeout ?? 30000;
    for (const [topic, position] of Object.entries(options.since ?? {})) {
      const copy = { epoch: position.epoch, offset: position.offset };
      for (const [old, kept] of this.#seen.see(topic, copy)) this.#unresumed.set(old, kept);
    }
    let settleOpened: [() => void, (error: unknown) => void] = [() => {}, () => {}];
    this.opened = new Promise<void>((resolve, reject) => {
      settleOpened = [resolve, reject];
    });
    this.opened.catch(() => {}); // a failure the app does not await is reported by onClose
    this.#settleOpened = settleOpened;
    let settleClosed: (info: CloseInfo) => void = () => {};
    this.closed = new Promise<CloseInfo>((resolve) => {
      settleClosed = resolve;
    });
    this.#settleClosed = settleClosed;
    this.#open();
  }

  /** Whether a connection is open now (`false` while connecting or reconnecting). */
  get connected(): boolean {
    return this.#ws !== null && this.#ws.readyState === WebSocket.OPEN;
  }

  /** How many times the client has reconnected. */
  get reconnects(): number {
    return this.#reconnects;
  }

  /** Messages waiting for a connection. */
  get queued(): number {
    return this.#queue.length;
  }

  /**
   * The position of the last publication received, per topic with history, least
   * recently seen first. The client resumes from them when it reconnects; save them and
   * pass them as `since` to resume in a later `connect`. At most
   * {@link MAX_RESUME_POSITIONS} topics, and {@link MAX_RESUME_QUERY_BYTES} of `since`
   * parameters, are kept: the most recently seen.
   */
  get positions(): Readonly<Record<string, Position>> {
    return record(this.#seen.positions());
  }

  /**
   * Stop resuming `topic`: drop its position, so reconnections no longer name it. A later
   * publication on it is kept again. Call it when the page no longer shows the topic.
   */
  forget(topic: string): void {
    this.#seen.forget(topic);
    this.#resuming.delete(topic);
    this.#unresumed.delete(topic);
  }

  /**
   * Send a message; nothing answers it (errors the server finds go to `onError`).
   * While not connected it is queued or refused (`whileDisconnected`); throws
   * {@link WebSocketClosedError} when refused or after `close()`.
   */
  send<K extends ClientType<R>>(type: K, data: R["client"][K]): void {
    this.#checkType(type);
    this.#transmit({ text: JSON.stringify({ type, data }), pending: null });
  }

  /**
   * Send a message with a fresh `id` and wait for its answer: the handler's reply, or
   * `undefined` when the server acknowledges it (`ack`: the handler returned nothing).
   * Rejects with {@link WebSocketServerError} for an error envelope,
   * {@link WebSocketTimeoutError}, {@link WebSocketClosedError} when the connection ends
   * first (or the message is refused), {@link WebSocketProtocolError} for an answer the
   * route does not declare.
   */
  request<K extends ClientType<R>>(
    type: K,
    data: R["client"][K],
    options: RequestOptions = {},
  ): Promise<ReplyOf<R, K>> {
    return new Promise<unknown>((resolve, reject) => {
      this.#checkType(type);
      const signal = options.signal;
      signal?.throwIfAborted();
      const id = this.#nextId++;
      const timeout = options.timeout ?? this.#requestTimeout;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const onAbort = (): void => {
        this.#giveUp(pending);
        reject(signal?.reason);
      };
      const pending: Pending = {
        id,
        type,
        resolve,
        reject,
        sentOn: 0,
        done: () => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          this.#pending.delete(id);
        },
      };
      this.#pending.set(id, pending);
      if (timeout < MAX_TIMER) {
        timer = setTimeout(() => {
          this.#giveUp(pending);
          reject(new WebSocketTimeoutError(id, timeout));
        }, timeout);
      }
      signal?.addEventListener("abort", onAbort, { once: true });
      try {
        this.#transmit({ text: JSON.stringify({ type, data, id }), pending });
      } catch (error) {
        pending.done();
        throw error;
      }
    }) as Promise<ReplyOf<R, K>>;
  }

  /**
   * Call `handler` for each server message of `type`, with its `data` and the whole
   * message. Returns a function that removes the handler.
   */
  on<K extends ServerType<R>>(
    type: K,
    handler: (data: R["server"][K], message: ServerMessageOf<R, K>) => void,
  ): () => void {
    if (!this.#route.server.includes(type)) {
      const path = this.#route.path;
      throw new TypeError(`route ${path} has no server message ${JSON.stringify(type)}`);
    }
    let listeners = this.#handlers.get(type);
    if (listeners === undefined) {
      listeners = new Set();
      this.#handlers.set(type, listeners);
    }
    return listen(listeners, handler as (data: unknown, message: ServerMessageOf<R>) => void);
  }

  /**
   * Errors that answer no request: {@link WebSocketServerError} (the server refused a
   * `send()`), {@link WebSocketProtocolError} (a frame the client cannot use). Without
   * a handler they go to `console.error`.
   */
  onError(handler: (error: WebSocketClientError) => void): () => void {
    return listen(this.#onError, handler);
  }

  /** Each time an open connection closes, and when the client stops for good. */
  onClose(handler: (info: CloseInfo) => void): () => void {
    return listen(this.#onClose, handler);
  }

  /** Each time a connection opens (the first one and every reconnection). */
  onOpen(handler: () => void): () => void {
    return listen(this.#onOpen, handler);
  }

  /** Each time a reconnection opens (after the queued messages were sent). */
  onReconnect(handler: (info: ReconnectInfo) => void): () => void {
    return listen(this.#onReconnect, handler);
  }

  /**
   * When the first publication on a resumed topic arrives: whether the client recovered
   * what it missed (see {@link RecoveryInfo}).
   */
  onRecovery(handler: (info: RecoveryInfo) => void): () => void {
    return listen(this.#onRecovery, handler);
  }

  /**
   * Close the connection and stop reconnecting; requests still waiting and queued
   * messages fail with {@link WebSocketClosedError}. `code` is 1000 or 3000-4999 (what
   * browsers allow). Resolves when the connection has closed.
   */
  close(code = 1000, reason = ""): Promise<CloseInfo> {
    if (this.#ended === null && !this.#closing) {
      this.#closing = true;
      clearTimeout(this.#timer);
      const ws = this.#ws;
      if (ws !== null && ws.readyState !== WebSocket.CLOSED) {
        ws.close(code, reason);
        // The close event ends the client; a socket still connecting may never send one.
        if (ws.readyState === WebSocket.CONNECTING) this.#end(code, reason);
      } else {
        this.#end(code, reason);
      }
    }
    return this.closed;
  }

  // -- internals -------------------------------------------------------------------------

  #checkType(type: string): void {
    if (!this.#route.client.includes(type)) {
      const path = this.#route.path;
      throw new TypeError(`route ${path} has no client message ${JSON.stringify(type)}`);
    }
  }

  /**
   * The URL of the next attempt: with `token`, and a `since` parameter for each kept
   * position that fits (the most recently seen first) unless `withPositions` is false.
   */
  #attempt(withPositions: boolean, token: string | undefined): Attempt {
    const url = new URL(this.#base.href);
    if (token !== undefined) url.searchParams.set(this.#tokenParam, token);
    url.searchParams.delete("since");
    let params = 0;
    url.searchParams.forEach(() => {
      params += 1;
    });
    let count = withPositions
      ? Math.min(MAX_RESUME_POSITIONS, SERVER_MAX_QUERY_PARAMS - params)
      : 0;
    let room = Math.min(
      MAX_RESUME_QUERY_BYTES,
      MAX_REQUEST_TARGET_BYTES - url.pathname.length - url.search.length - 1,
    );
    const newest: [string, Position][] = [];
    const leftOut = new Map<string, Position>();
    for (const [topic, position, size] of this.#seen.newestFirst()) {
      if (leftOut.size === 0 && count > 0 && size <= room) {
        newest.push([topic, position]);
        count -= 1;
        room -= size;
      } else {
        leftOut.set(topic, position); // and every less recently seen one after it
      }
    }
    const sent = new Map(newest.reverse());
    for (const [topic, position] of sent) {
      url.searchParams.append("since", sinceValue(topic, position));
    }
    return { url: url.href, sent, leftOut };
  }

  #open(withPositions = true): void {
    const generation = ++this.#generation;
    const token = this.#token;
    if (typeof token !== "function") {
      this.#connect(generation, this.#attempt(withPositions, token));
      return;
    }
    // A token function: the socket opens once it has given a token.
    Promise.resolve()
      .then(token)
      .then((value: unknown) => {
        if (this.#generation !== generation) return; // closed (or superseded) meanwhile
        if (typeof value !== "string") throw new TypeError("the token function gave no string");
        this.#connect(generation, this.#attempt(withPositions, value));
      })
      .catch((error: unknown) => {
        if (this.#generation !== generation) return;
        // As a connection that failed: the first ends the client, a reconnection retries.
        this.#lost(1006, `no token: ${String(error)}`, NO_ATTEMPT);
      });
  }

  #connect(generation: number, attempt: Attempt): void {
    const ws =
      this.#protocols === undefined
        ? new WebSocket(attempt.url)
        : new WebSocket(attempt.url, this.#protocols);
    this.#ws = ws;
    ws.addEventListener("open", () => {
      if (this.#generation === generation) this.#opened(ws, generation, attempt);
    });
    ws.addEventListener("message", (event: MessageEvent<unknown>) => {
      if (this.#generation === generation) this.#receive(ws, event.data);
    });
    ws.addEventListener("close", (event: CloseEvent) => {
      if (this.#generation === generation) this.#lost(event.code, event.reason, attempt);
    });
  }

  /** Open a connection now; a URL the WebSocket constructor refuses ends the client. */
  #reopen(withPositions: boolean): void {
    try {
      this.#open(withPositions);
    } catch (error) {
      this.#end(1006, String(error));
    }
  }

  #opened(ws: WebSocket, generation: number, attempt: Attempt): void {
    const reconnection = this.#everOpened;
    this.#everOpened = true;
    this.#openGeneration = generation;
    this.#openedAt = Date.now();
    this.#resuming = new Map(attempt.sent);
    // Positions this connection did not name: what was published meanwhile is lost for
    // good, and resuming from them later would replay what came after the gap.
    const unresumed = new Map([...this.#unresumed, ...attempt.leftOut]);
    this.#unresumed.clear();
    for (const [topic, since] of unresumed) {
      if (this.#seen.get(topic) === since) this.#seen.forget(topic);
    }
    const queue = this.#queue;
    this.#queue = [];
    for (const item of queue) {
      ws.send(item.text);
      if (item.pending !== null) item.pending.sentOn = generation;
    }
    this.#settleOpened[0]();
    call(this.#onOpen);
    if (reconnection) {
      this.#reconnects += 1;
      const resumed = record(attempt.sent);
      call(this.#onReconnect, { reconnects: this.#reconnects, resumed });
    }
    for (const [topic, since] of unresumed) {
      call(this.#onRecovery, { topic, recovered: false, since, position: null });
    }
  }

  #transmit(item: Outgoing): void {
    const ended = this.#ended;
    if (ended !== null || this.#closing) {
      const info = ended ?? { code: 1000, reason: "closed by the client" };
      const id = item.pending?.id;
      throw new WebSocketClosedError("the client is closed", info.code, info.reason, false, id);
    }
    const ws = this.#ws;
    if (ws !== null && ws.readyState === WebSocket.OPEN) {
      ws.send(item.text);
      if (item.pending !== null) item.pending.sentOn = this.#generation;
      return;
    }
    if (this.#refuse || this.#queue.length >= this.#maxQueued) {
      const why = this.#refuse
        ? "not connected"
        : `not connected, and ${this.#maxQueued} messages are queued already`;
      throw new WebSocketClosedError(why, 1006, "", true, item.pending?.id);
    }
    this.#queue.push(item);
  }

  #giveUp(pending: Pending): void {
    pending.done();
    if (pending.sentOn !== 0) {
      this.#abandoned.add(pending.id);
      if (this.#abandoned.size > ABANDONED_LIMIT) {
        for (const id of this.#abandoned) {
          this.#abandoned.delete(id);
          break;
        }
      }
    } else {
      this.#queue = this.#queue.filter((item) => item.pending !== pending);
    }
  }

  #report(error: WebSocketClientError): void {
    if (this.#onError.size === 0) {
      console.error(`WebSocket ${this.#route.path}:`, error);
    } else {
      call(this.#onError, error);
    }
  }

  #receive(ws: WebSocket, frame: unknown): void {
    if (typeof frame !== "string") {
      const text = "the server sent a binary frame; this client reads JSON";
      this.#report(new WebSocketProtocolError(text, null));
      return;
    }
    let body: unknown;
    try {
      body = JSON.parse(frame);
    } catch {
      this.#report(new WebSocketProtocolError("the server sent invalid JSON", frame));
      return;
    }
    if (
      !isRecord(body) ||
      typeof body["type"] !== "string" ||
      (body["id"] !== undefined && !isMessageId(body["id"]))
    ) {
      const text = "not an envelope: no string 'type', or a bad 'id'";
      this.#report(new WebSocketProtocolError(text, frame));
      return;
    }
    const type = body["type"];
    const id = body["id"];
    const pending = typeof id === "number" ? this.#pending.get(id) : undefined;
    // The answer to a request sent on this connection (one sent on an earlier one failed).
    const answers = pending?.sentOn === this.#generation ? pending : undefined;
    if (id !== undefined && answers === undefined && this.#abandoned.delete(id)) {
      return; // the late answer of a request that gave up
    }
    if (type === "error") {
      const error = this.#serverError(body, frame);
      if (answers !== undefined) {
        answers.done();
        answers.reject(error);
      } else {
        this.#report(error);
      }
      return;
    }
    if (type === "ack") {
      if (answers !== undefined) this.#answer(answers, "ack", undefined, frame);
      return; // an ack answers nothing that waits: nothing to tell anyone
    }
    if (type === "refresh") {
      // Reserved: the server asks for a new token before the current one expires.
      if (id !== undefined) this.#refresh(ws, id);
      return;
    }
    const known = this.#route.server.includes(type);
    if (type === "ping" && !known) {
      // The route's envelope heartbeat: answer at once.
      ws.send(JSON.stringify(id === undefined ? { type: "pong" } : { type: "pong", id }));
      return;
    }
    if (!known) {
      const error = new WebSocketProtocolError(
        `unknown message type ${JSON.stringify(type)} for route ${this.#route.path}`,
        frame,
        type,
      );
      if (answers !== undefined) {
        answers.done();
        answers.reject(error);
      } else {
        this.#report(error);
      }
      return;
    }
    if (!isRecord(body["data"])) {
      const text = `message ${JSON.stringify(type)} has no 'data' object`;
      this.#report(new WebSocketProtocolError(text, frame, type));
      return;
    }
    const message = body as ServerMessageOf<R>;
    if (answers !== undefined) {
      this.#answer(answers, type, message, frame);
      return;
    }
    const { topic, offset, epoch } = body;
    // A position is an offset and an epoch (a presence event names its topic alone).
    if (offset !== undefined || epoch !== undefined) {
      if (
        typeof topic !== "string" ||
        typeof epoch !== "string" ||
        typeof offset !== "number" ||
        !Number.isSafeInteger(offset) ||
        offset < 0
      ) {
        const text = "malformed position: expected string 'topic' and 'epoch', integer 'offset'";
        this.#report(new WebSocketProtocolError(text, frame, type));
        return;
      }
      const position = { epoch, offset };
      this.#seen.see(topic, position);
      const since = this.#resuming.get(topic);
      if (since !== undefined) {
        this.#resuming.delete(topic);
        const recovered = since.epoch === epoch && offset === since.offset + 1;
        call(this.#onRecovery, { topic, recovered, since, position });
      }
    }
    const listeners = this.#handlers.get(type);
    if (listeners !== undefined) call(listeners, message.data, message);
  }

  /** Answer the server's `refresh` request `id` on `ws` with a current token. */
  #refresh(ws: WebSocket, id: MessageId): void {
    const token = this.#token;
    if (token === undefined) return; // the server closes with 3000 when the old one expires
    Promise.resolve()
      .then(() => (typeof token === "function" ? token() : token))
      .then((value: unknown) => {
        if (typeof value !== "string") throw new TypeError("the token function gave no string");
        if (ws.readyState === WebSocket.OPEN) {
          ws.send(JSON.stringify({ type: "refresh", id, data: { token: value } }));
        }
      })
      .catch((error: unknown) => {
        this.#report(new WebSocketClientError(`no token for the refresh: ${String(error)}`));
      });
  }

  #answer(
    pending: Pending,
    type: string,
    message: ServerMessageOf<R> | undefined,
    frame: string,
  ): void {
    pending.done();
    // A wire type may be named like an Object.prototype member (toString, constructor).
    const replies = this.#route.replies;
    const allowed = Object.hasOwn(replies, pending.type) ? replies[pending.type] : undefined;
    if (allowed !== undefined && !allowed.includes(type)) {
      const expected = allowed.map((t) => JSON.stringify(t)).join(" or ");
      const request = `request ${pending.id} (${JSON.stringify(pending.type)})`;
      const text = `${request} was answered with ${JSON.stringify(type)}, not ${expected}`;
      pending.reject(new WebSocketProtocolError(text, frame, type));
      return;
    }
    pending.resolve(message);
  }

  #serverError(body: Record<string, unknown>, frame: string): WebSocketClientError {
    const { code, error, details, id } = body;
    const entries: WebSocketErrorDetail[] = [];
    let ok = typeof code === "string" && typeof error === "string";
    if (details !== undefined) {
      if (Array.isArray(details)) {
        for (const entry of details) {
          const path = isRecord(entry) ? entry["path"] : undefined;
          const message = isRecord(entry) ? entry["message"] : undefined;
          if (typeof path === "string" && typeof message === "string") {
            entries.push({ path, message });
          } else {
            ok = false;
          }
        }
      } else {
        ok = false;
      }
    }
    if (!ok || typeof code !== "string" || typeof error !== "string") {
      return new WebSocketProtocolError("malformed error envelope", frame, "error");
    }
    return new WebSocketServerError(code, error, entries, isMessageId(id) ? id : undefined);
  }

  #lost(code: number, reason: string, attempt: Attempt): void {
    const wasOpen = this.#openGeneration === this.#generation;
    this.#ws = null;
    if (!wasOpen && attempt.sent.size > 0 && !this.#closing) {
      // An attempt naming positions never opened. Browsers do not tell why: the server
      // may have refused its URL (400, 414, 431). Once more at once, without them; the
      // positions are dropped only if that one opens.
      this.#reopen(false);
      return;
    }
    const backoff = this.#backoff;
    if (backoff !== null && wasOpen && Date.now() - this.#openedAt >= backoff.resetAfter) {
      this.#attempts = 0; // it stayed up: this loss starts a new count
    }
    // The first connection must open (as with the Python client): a failure there is
    // more likely a wrong URL or a denial (which browsers report as 1006) than a loss.
    // After 3000 (token expired), only a token function can bring a fresh token.
    const renewable = code === UNAUTHORIZED && typeof this.#token === "function";
    const retry =
      backoff !== null &&
      !this.#closing &&
      this.#everOpened &&
      (RECONNECT_CODES.has(code) || renewable) &&
      this.#attempts < backoff.maxAttempts;
    for (const pending of [...this.#pending.values()]) {
      if (pending.sentOn === this.#generation) {
        pending.done();
        const text = `the connection closed (${code}) before the answer to request ${pending.id}`;
        pending.reject(new WebSocketClosedError(text, code, reason, retry, pending.id));
      }
    }
    if (backoff === null || !retry) {
      this.#end(code, reason);
      return;
    }
    if (wasOpen) call(this.#onClose, { code, reason, reconnecting: true });
    this.#attempts += 1;
    const ceiling = Math.min(
      backoff.maximum,
      backoff.initial * backoff.factor ** (this.#attempts - 1),
    );
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#ended !== null || this.#closing) return;
      this.#reopen(true);
    }, Math.random() * ceiling);
  }

  #end(code: number, reason: string): void {
    if (this.#ended !== null) return;
    const info: CloseInfo = { code, reason, reconnecting: false };
    this.#ended = info;
    clearTimeout(this.#timer);
    const ws = this.#ws;
    this.#ws = null;
    this.#generation += 1; // events of the last socket no longer count
    if (ws !== null && ws.readyState !== WebSocket.CLOSED && ws.readyState !== WebSocket.CLOSING) {
      ws.close(code, reason);
    }
    const error = (id?: MessageId): WebSocketClosedError =>
      new WebSocketClosedError(`the client is closed (${code})`, code, reason, false, id);
    for (const pending of [...this.#pending.values()]) {
      pending.done();
      pending.reject(error(pending.id));
    }
    this.#queue = [];
    this.#settleOpened[1](error());
    call(this.#onClose, info);
    this.#settleClosed(info);
  }
}
