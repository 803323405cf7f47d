// The chat page's client, typed by the generated websocket-types.ts.
//
// Regenerate the types after changing app.py, then compile this file to client.js:
//
//   trio-wsroutes typegen examples.chat.app:server -o examples/chat/websocket-types.ts
//   (cd tests/ts && npm ci) && node tests/ts/node_modules/typescript/bin/tsc -p examples/chat
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
const scheme = location.protocol === "https:" ? "wss" : "ws";
const ws = new WebSocket(`${scheme}://${location.host}/chat/${encodeURIComponent(room)}`);
let nextId = 1;
/** Send a message; tsc checks its `type` and its `data` against the server's classes. */
function send(message) {
    ws.send(JSON.stringify({ ...message, id: nextId++ }));
}
function describeError(error) {
    const where = (error.details ?? []).map((d) => `${d.path}: ${d.message}`).join("; ");
    return `Error ${error.code}: ${error.error}${where ? ` (${where})` : ""}`;
}
ws.onopen = () => {
    status.textContent = "connected";
    setInterval(() => send({ type: "ping", data: { timestamp: Date.now() } }), 5000);
};
ws.onclose = (event) => {
    status.textContent = `closed (${event.code})`;
};
ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    switch (msg.type) {
        case "message":
            line(`${msg.data.user}: ${msg.data.text}`);
            break;
        case "joined":
            line(`You are ${msg.data.you}; ${msg.data.user_count} here`, "info");
            break;
        case "left":
            line(`${msg.data.user} left; ${msg.data.user_count} here`, "info");
            break;
        case "pong":
            latency.textContent = String(Date.now() - msg.data.timestamp);
            break;
        case "error":
            line(describeError(msg), "error");
            break;
        default: {
            // Every server message is handled above: tsc fails here when app.py adds one.
            const unhandled = msg;
            console.warn("unexpected message", unhandled);
        }
    }
};
element("chat-form", HTMLFormElement).onsubmit = (event) => {
    event.preventDefault();
    send({ type: "chat", data: { text: textInput.value } });
    textInput.value = "";
};
element("name-form", HTMLFormElement).onsubmit = (event) => {
    event.preventDefault();
    send({ type: "set_name", data: { name: nameInput.value } });
};
export {};
