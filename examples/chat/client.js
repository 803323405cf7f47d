// The chat page's script, on the client generated for the route (websocket-client.ts, its
// types in websocket-types.ts): typed sends and requests, reconnection, recovery.
//
// Regenerate both after changing app.py, then compile this file (and the client) to JS:
//
//   trio-wsroutes typegen examples.chat.app:server -o examples/chat/websocket-types.ts \
//     --client examples/chat/websocket-client.ts --client examples/chat/websocket-client.js
//   (cd tests/ts && npm ci) && node tests/ts/node_modules/typescript/bin/tsc -p examples/chat
import { chatWebSocketPath, connectChatWebSocket, WebSocketClientError, WebSocketClosedError, WebSocketServerError, } from "./websocket-client.js";
function element(id, kind) {
    const found = document.getElementById(id);
    if (!(found instanceof kind)) {
        throw new Error(`the page has no ${kind.name} #${id}`);
    }
    return found;
}
const log = element("log", HTMLDivElement);
const status = element("status", HTMLSpanElement);
const latency = element("latency", HTMLSpanElement);
const textInput = element("text", HTMLInputElement);
const nameInput = element("name", HTMLInputElement);
const peopleList = element("people", HTMLSpanElement);
function line(text, cls) {
    const p = document.createElement("div");
    p.textContent = text;
    if (cls)
        p.className = cls;
    log.append(p);
    log.scrollTop = log.scrollHeight;
}
const room = new URLSearchParams(location.search).get("room") || "general";
element("room", HTMLElement).textContent = "#" + room;
// A path on this page's host: the client makes it ws:// (wss:// under https).
const chat = connectChatWebSocket(chatWebSocketPath({ room }));
function describe(error) {
    if (error instanceof WebSocketServerError) {
        const where = error.details.map((d) => `${d.path}: ${d.message}`).join("; ");
        return `Error ${error.code}: ${error.message}${where ? ` (${where})` : ""}`;
    }
    return `Error: ${error instanceof Error ? error.message : String(error)}`;
}
/** Show what went wrong with a request, unless the connection went away meanwhile. */
function report(error) {
    if (!(error instanceof WebSocketClosedError))
        line(describe(error), "error");
}
// Who is in the room, by name (a name may be there twice: two tabs, two guests).
let people = [];
function showPeople() {
    peopleList.textContent = `${people.length}: ${people.join(", ")}`;
}
// Each handler gets the message's data, typed by its `type`.
chat.on("message", (data) => line(`${data.user}: ${data.text}`));
chat.on("joined", (data) => {
    people = [...data.people];
    showPeople();
    line(`You are ${data.you}; ${data.user_count} here`, "info");
});
// Presence events: their info is the room's `Member` (its name), typed from app.py.
chat.on("presence_join", (data) => {
    const name = data.info?.name ?? "someone";
    people = [...people, name].sort();
    showPeople();
    line(`${name} joined`, "info");
});
chat.on("presence_leave", (data) => {
    const name = data.info?.name ?? "someone";
    const at = people.indexOf(name);
    if (at >= 0)
        people.splice(at, 1);
    showPeople();
    line(`${name} left`, "info");
});
chat.onError((error) => line(describe(error), "error"));
/** A request: the promise resolves with the reply, typed as the handler declares (`pong`). */
async function ping() {
    const pong = await chat.request("ping", { timestamp: Date.now() }, { timeout: 5000 });
    latency.textContent = String(Math.round(Date.now() - pong.data.timestamp));
}
let name = null;
chat.onOpen(() => {
    status.textContent = "connected";
    ping().catch(report);
});
chat.onClose((info) => {
    status.textContent = info.reconnecting ? "reconnecting…" : `closed (${info.code})`;
    latency.textContent = "?";
    // Queued now, so sent first on the next connection, before anything typed meanwhile.
    if (info.reconnecting && name !== null)
        chat.send("set_name", { name });
});
chat.onReconnect(() => line("Reconnected", "info"));
// The client resumed the room where it was; its first message says whether nothing was lost.
chat.onRecovery((info) => {
    if (info.recovered) {
        line(`Caught up with #${room}`, "info");
    }
    else {
        line(`Some messages in #${room} were lost while you were away`, "error");
    }
});
setInterval(() => {
    if (chat.connected)
        ping().catch(report);
}, 5000);
element("chat-form", HTMLFormElement).onsubmit = (event) => {
    event.preventDefault();
    const text = textInput.value;
    textInput.value = "";
    // The handler returns nothing: the request resolves on the server's ack.
    chat.request("chat", { text }).catch(report);
};
element("name-form", HTMLFormElement).onsubmit = (event) => {
    event.preventDefault();
    const wanted = nameInput.value;
    chat.request("set_name", { name: wanted }).then(() => {
        name = wanted;
        line(`You are now ${wanted}`, "info");
    }, report);
};
