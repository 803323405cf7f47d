/** Base class of the errors the client raises or reports. */
export class WebSocketClientError extends Error {
    constructor(message) {
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
    code;
    /** One entry per problem, with its JSON path (`$.data.text`). */
    details;
    /** The request's `id`, if the error answers one. */
    id;
    constructor(code, message, details = [], id) {
        super(message);
        this.code = code;
        this.details = details;
        this.id = id;
    }
}
/** No answer to request `id` within `timeout` milliseconds; a late answer is dropped. */
export class WebSocketTimeoutError extends WebSocketClientError {
    id;
    timeout;
    constructor(id, timeout) {
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
    code;
    reason;
    /** The request's `id`, for a request. */
    id;
    /** Whether the client is reconnecting (sending again later may succeed). */
    reconnecting;
    constructor(message, code, reason, reconnecting, id) {
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
    raw;
    /** The frame's `type`, when it had one. */
    type;
    constructor(message, raw, type) {
        super(message);
        this.raw = raw;
        this.type = type;
    }
}
/** Close codes after which the client reconnects: going away, lost, internal error,
 * service restart, try again later, bad gateway. */
const RECONNECT_CODES = new Set([1001, 1006, 1011, 1012, 1013, 1014]);
const ABANDONED_LIMIT = 4096;
const MAX_TIMER = 2147483647;
function isRecord(value) {
    return typeof value === "object" && value !== null && !Array.isArray(value);
}
function isMessageId(value) {
    return typeof value === "string" || (typeof value === "number" && Number.isInteger(value));
}
function call(listeners, ...args) {
    for (const listener of [...listeners]) {
        try {
            listener(...args);
        }
        catch (error) {
            // A handler's exception surfaces as uncaught, as an event listener's would, without
            // stopping the other handlers or the client.
            queueMicrotask(() => {
                throw error;
            });
        }
    }
}
function listen(listeners, listener) {
    listeners.add(listener);
    return () => {
        listeners.delete(listener);
    };
}
function resolveUrl(url) {
    const base = typeof location === "undefined" ? undefined : location.href;
    const resolved = new URL(url, base);
    if (resolved.protocol === "http:")
        resolved.protocol = "ws:";
    if (resolved.protocol === "https:")
        resolved.protocol = "wss:";
    if (resolved.protocol !== "ws:" && resolved.protocol !== "wss:") {
        const scheme = resolved.protocol;
        throw new SyntaxError(`a WebSocket URL is ws://, wss://, http:// or https://, not ${scheme}`);
    }
    return resolved;
}
/** A route's path (`/chat/{room}`) with its parameters in place, URL-encoded. */
export function routePath(path, params) {
    const values = new Map(Object.entries(params));
    return path.replace(/\{([^{}]+)\}/g, (_match, name) => {
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
export class WebSocketClient {
    /** The URL connected to (without the `token` and `since` parameters). */
    url;
    /** Settles when the first connection opens; rejects if it fails (the client is then closed). */
    opened;
    /** Settles when the client has stopped for good: the last close. */
    closed;
    #route;
    #base;
    #token;
    #tokenParam;
    #protocols;
    #backoff;
    #refuse;
    #maxQueued;
    #requestTimeout;
    #handlers = new Map();
    #onError = new Set();
    #onClose = new Set();
    #onOpen = new Set();
    #onReconnect = new Set();
    #onRecovery = new Set();
    #pending = new Map();
    #abandoned = new Set();
    #seen = new Map();
    #resuming = new Map();
    #queue = [];
    #ws = null;
    #generation = 0;
    #openGeneration = -1;
    #nextId = 1;
    #attempts = 0;
    #reconnects = 0;
    #everOpened = false;
    #closing = false;
    #ended = null;
    #timer;
    #settleOpened;
    #settleClosed;
    constructor(route, url, options = {}) {
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
                };
        this.#refuse = options.whileDisconnected === "refuse";
        this.#maxQueued = options.maxQueued ?? 1024;
        this.#requestTimeout = options.requestTimeout ?? 30000;
        for (const [topic, position] of Object.entries(options.since ?? {})) {
            this.#seen.set(topic, { epoch: position.epoch, offset: position.offset });
        }
        let settleOpened = [() => { }, () => { }];
        this.opened = new Promise((resolve, reject) => {
            settleOpened = [resolve, reject];
        });
        this.opened.catch(() => { }); // a failure the app does not await is reported by onClose
        this.#settleOpened = settleOpened;
        let settleClosed = () => { };
        this.closed = new Promise((resolve) => {
            settleClosed = resolve;
        });
        this.#settleClosed = settleClosed;
        this.#open();
    }
    /** Whether a connection is open now (`false` while connecting or reconnecting). */
    get connected() {
        return this.#ws !== null && this.#ws.readyState === WebSocket.OPEN;
    }
    /** How many times the client has reconnected. */
    get reconnects() {
        return this.#reconnects;
    }
    /** Messages waiting for a connection. */
    get queued() {
        return this.#queue.length;
    }
    /**
     * The position of the last publication received, per topic with history. The client
     * resumes from them when it reconnects; save them and pass them as `since` to resume
     * in a later `connect`.
     */
    get positions() {
        return Object.fromEntries(this.#seen);
    }
    /**
     * Send a message; nothing answers it (errors the server finds go to `onError`).
     * While not connected it is queued or refused (`whileDisconnected`); throws
     * {@link WebSocketClosedError} when refused or after `close()`.
     */
    send(type, data) {
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
    request(type, data, options = {}) {
        return new Promise((resolve, reject) => {
            this.#checkType(type);
            const signal = options.signal;
            signal?.throwIfAborted();
            const id = this.#nextId++;
            const timeout = options.timeout ?? this.#requestTimeout;
            let timer;
            const onAbort = () => {
                this.#giveUp(pending);
                reject(signal?.reason);
            };
            const pending = {
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
            }
            catch (error) {
                pending.done();
                throw error;
            }
        });
    }
    /**
     * Call `handler` for each server message of `type`, with its `data` and the whole
     * message. Returns a function that removes the handler.
     */
    on(type, handler) {
        if (!this.#route.server.includes(type)) {
            const path = this.#route.path;
            throw new TypeError(`route ${path} has no server message ${JSON.stringify(type)}`);
        }
        let listeners = this.#handlers.get(type);
        if (listeners === undefined) {
            listeners = new Set();
            this.#handlers.set(type, listeners);
        }
        return listen(listeners, handler);
    }
    /**
     * Errors that answer no request: {@link WebSocketServerError} (the server refused a
     * `send()`), {@link WebSocketProtocolError} (a frame the client cannot use). Without
     * a handler they go to `console.error`.
     */
    onError(handler) {
        return listen(this.#onError, handler);
    }
    /** Each time an open connection closes, and when the client stops for good. */
    onClose(handler) {
        return listen(this.#onClose, handler);
    }
    /** Each time a connection opens (the first one and every reconnection). */
    onOpen(handler) {
        return listen(this.#onOpen, handler);
    }
    /** Each time a reconnection opens (after the queued messages were sent). */
    onReconnect(handler) {
        return listen(this.#onReconnect, handler);
    }
    /**
     * When the first publication on a resumed topic arrives: whether the client recovered
     * what it missed (see {@link RecoveryInfo}).
     */
    onRecovery(handler) {
        return listen(this.#onRecovery, handler);
    }
    /**
     * Close the connection and stop reconnecting; requests still waiting and queued
     * messages fail with {@link WebSocketClosedError}. `code` is 1000 or 3000-4999 (what
     * browsers allow). Resolves when the connection has closed.
     */
    close(code = 1000, reason = "") {
        if (this.#ended === null && !this.#closing) {
            this.#closing = true;
            clearTimeout(this.#timer);
            const ws = this.#ws;
            if (ws !== null && ws.readyState !== WebSocket.CLOSED) {
                ws.close(code, reason);
                // The close event ends the client; a socket still connecting may never send one.
                if (ws.readyState === WebSocket.CONNECTING)
                    this.#end(code, reason);
            }
            else {
                this.#end(code, reason);
            }
        }
        return this.closed;
    }
    // -- internals -------------------------------------------------------------------------
    #checkType(type) {
        if (!this.#route.client.includes(type)) {
            const path = this.#route.path;
            throw new TypeError(`route ${path} has no client message ${JSON.stringify(type)}`);
        }
    }
    #connectUrl() {
        const url = new URL(this.#base.href);
        if (this.#token !== undefined)
            url.searchParams.set(this.#tokenParam, this.#token);
        url.searchParams.delete("since");
        for (const [topic, position] of this.#seen) {
            url.searchParams.append("since", `${topic}@${position.epoch}:${position.offset}`);
        }
        return url.href;
    }
    #open() {
        const generation = ++this.#generation;
        const ws = this.#protocols === undefined
            ? new WebSocket(this.#connectUrl())
            : new WebSocket(this.#connectUrl(), this.#protocols);
        const resuming = new Map(this.#seen);
        this.#ws = ws;
        ws.addEventListener("open", () => {
            if (this.#generation === generation)
                this.#opened(ws, generation, resuming);
        });
        ws.addEventListener("message", (event) => {
            if (this.#generation === generation)
                this.#receive(ws, event.data);
        });
        ws.addEventListener("close", (event) => {
            if (this.#generation === generation)
                this.#lost(event.code, event.reason);
        });
    }
    #opened(ws, generation, resuming) {
        const reconnection = this.#everOpened;
        this.#everOpened = true;
        this.#openGeneration = generation;
        this.#attempts = 0;
        this.#resuming = resuming;
        const queue = this.#queue;
        this.#queue = [];
        for (const item of queue) {
            ws.send(item.text);
            if (item.pending !== null)
                item.pending.sentOn = generation;
        }
        this.#settleOpened[0]();
        call(this.#onOpen);
        if (reconnection) {
            this.#reconnects += 1;
            const resumed = Object.fromEntries(resuming);
            call(this.#onReconnect, { reconnects: this.#reconnects, resumed });
        }
    }
    #transmit(item) {
        const ended = this.#ended;
        if (ended !== null || this.#closing) {
            const info = ended ?? { code: 1000, reason: "closed by the client" };
            const id = item.pending?.id;
            throw new WebSocketClosedError("the client is closed", info.code, info.reason, false, id);
        }
        const ws = this.#ws;
        if (ws !== null && ws.readyState === WebSocket.OPEN) {
            ws.send(item.text);
            if (item.pending !== null)
                item.pending.sentOn = this.#generation;
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
    #giveUp(pending) {
        pending.done();
        if (pending.sentOn !== 0) {
            this.#abandoned.add(pending.id);
            if (this.#abandoned.size > ABANDONED_LIMIT) {
                for (const id of this.#abandoned) {
                    this.#abandoned.delete(id);
                    break;
                }
            }
        }
        else {
            this.#queue = this.#queue.filter((item) => item.pending !== pending);
        }
    }
    #report(error) {
        if (this.#onError.size === 0) {
            console.error(`WebSocket ${this.#route.path}:`, error);
        }
        else {
            call(this.#onError, error);
        }
    }
    #receive(ws, frame) {
        if (typeof frame !== "string") {
            const text = "the server sent a binary frame; this client reads JSON";
            this.#report(new WebSocketProtocolError(text, null));
            return;
        }
        let body;
        try {
            body = JSON.parse(frame);
        }
        catch {
            this.#report(new WebSocketProtocolError("the server sent invalid JSON", frame));
            return;
        }
        if (!isRecord(body) ||
            typeof body["type"] !== "string" ||
            (body["id"] !== undefined && !isMessageId(body["id"]))) {
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
            }
            else {
                this.#report(error);
            }
            return;
        }
        if (type === "ack") {
            if (answers !== undefined)
                this.#answer(answers, "ack", undefined, frame);
            return; // an ack answers nothing that waits: nothing to tell anyone
        }
        const known = this.#route.server.includes(type);
        if (type === "ping" && !known) {
            // The route's envelope heartbeat: answer at once.
            ws.send(JSON.stringify(id === undefined ? { type: "pong" } : { type: "pong", id }));
            return;
        }
        if (!known) {
            const error = new WebSocketProtocolError(`unknown message type ${JSON.stringify(type)} for route ${this.#route.path}`, frame, type);
            if (answers !== undefined) {
                answers.done();
                answers.reject(error);
            }
            else {
                this.#report(error);
            }
            return;
        }
        if (!isRecord(body["data"])) {
            const text = `message ${JSON.stringify(type)} has no 'data' object`;
            this.#report(new WebSocketProtocolError(text, frame, type));
            return;
        }
        const message = body;
        if (answers !== undefined) {
            this.#answer(answers, type, message, frame);
            return;
        }
        const { topic, offset, epoch } = body;
        if (topic !== undefined || offset !== undefined || epoch !== undefined) {
            if (typeof topic !== "string" ||
                typeof epoch !== "string" ||
                typeof offset !== "number" ||
                !Number.isSafeInteger(offset) ||
                offset < 0) {
                const text = "malformed position: expected string 'topic' and 'epoch', integer 'offset'";
                this.#report(new WebSocketProtocolError(text, frame, type));
                return;
            }
            const position = { epoch, offset };
            this.#seen.set(topic, position);
            const since = this.#resuming.get(topic);
            if (since !== undefined) {
                this.#resuming.delete(topic);
                const recovered = since.epoch === epoch && offset === since.offset + 1;
                call(this.#onRecovery, { topic, recovered, since, position });
            }
        }
        const listeners = this.#handlers.get(type);
        if (listeners !== undefined)
            call(listeners, message.data, message);
    }
    #answer(pending, type, message, frame) {
        pending.done();
        const allowed = this.#route.replies[pending.type];
        if (allowed !== undefined && !allowed.includes(type)) {
            const expected = allowed.map((t) => JSON.stringify(t)).join(" or ");
            const request = `request ${pending.id} (${JSON.stringify(pending.type)})`;
            const text = `${request} was answered with ${JSON.stringify(type)}, not ${expected}`;
            pending.reject(new WebSocketProtocolError(text, frame, type));
            return;
        }
        pending.resolve(message);
    }
    #serverError(body, frame) {
        const { code, error, details, id } = body;
        const entries = [];
        let ok = typeof code === "string" && typeof error === "string";
        if (details !== undefined) {
            if (Array.isArray(details)) {
                for (const entry of details) {
                    const path = isRecord(entry) ? entry["path"] : undefined;
                    const message = isRecord(entry) ? entry["message"] : undefined;
                    if (typeof path === "string" && typeof message === "string") {
                        entries.push({ path, message });
                    }
                    else {
                        ok = false;
                    }
                }
            }
            else {
                ok = false;
            }
        }
        if (!ok || typeof code !== "string" || typeof error !== "string") {
            return new WebSocketProtocolError("malformed error envelope", frame, "error");
        }
        return new WebSocketServerError(code, error, entries, isMessageId(id) ? id : undefined);
    }
    #lost(code, reason) {
        const wasOpen = this.#openGeneration === this.#generation;
        this.#ws = null;
        const backoff = this.#backoff;
        // The first connection must open (as with the Python client): a failure there is
        // more likely a wrong URL or a denial (which browsers report as 1006) than a loss.
        const retry = backoff !== null &&
            !this.#closing &&
            this.#everOpened &&
            RECONNECT_CODES.has(code) &&
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
        if (wasOpen)
            call(this.#onClose, { code, reason, reconnecting: true });
        this.#attempts += 1;
        const ceiling = Math.min(backoff.maximum, backoff.initial * backoff.factor ** (this.#attempts - 1));
        this.#timer = setTimeout(() => {
            this.#timer = undefined;
            if (this.#ended !== null || this.#closing)
                return;
            try {
                this.#open();
            }
            catch (error) {
                this.#end(1006, String(error));
            }
        }, Math.random() * ceiling);
    }
    #end(code, reason) {
        if (this.#ended !== null)
            return;
        const info = { code, reason, reconnecting: false };
        this.#ended = info;
        clearTimeout(this.#timer);
        const ws = this.#ws;
        this.#ws = null;
        this.#generation += 1; // events of the last socket no longer count
        if (ws !== null && ws.readyState !== WebSocket.CLOSED && ws.readyState !== WebSocket.CLOSING) {
            ws.close(code, reason);
        }
        const error = (id) => new WebSocketClosedError(`the client is closed (${code})`, code, reason, false, id);
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
