// The Bun peer of bench/servers.py: the same three routes, validated with Zod (the seed's
// runtime and schema library), Bun.serve's built-in pub/sub for the fan-out.
//
//   bench/bun/node_modules/.bin/bun bench/bun/server.ts PORT
//
// /echo  {"type":"echo","data":{"text":...},"id"?} -> {"type":"echo","data":{"text":...},"id"?}
// /sub   subscribed to "feed" on open
// /pub   {"type":"publish","data":{"n":...,"user":...,"text":...}} -> "tick" to every subscriber
// Invalid input gets {"type":"error","code":"VALIDATION_ERROR",...}; the connection stays open.
// permessage-deflate is accepted when the client offers it (Bun's default is off).
import { z } from "zod";

const port = Number(process.argv[2] ?? "8000");

const Echo = z.object({
  type: z.literal("echo"),
  data: z.object({ text: z.string().min(1).max(500) }),
  id: z.union([z.string(), z.number().int()]).optional(),
});

const Publish = z.object({
  type: z.literal("publish"),
  data: z.object({
    n: z.number().int(),
    user: z.string().min(1).max(50),
    text: z.string().min(1).max(500),
  }),
});

type Path = "/echo" | "/sub" | "/pub";

function error(message: string, code: string): string {
  return JSON.stringify({ type: "error", error: message, code });
}

const server = Bun.serve<{ path: Path }>({
  hostname: "127.0.0.1",
  port,
  fetch(req, server) {
    const path = new URL(req.url).pathname;
    if (path !== "/echo" && path !== "/sub" && path !== "/pub") {
      return new Response("Not Found", { status: 404 });
    }
    if (server.upgrade(req, { data: { path } })) return undefined;
    return new Response("Upgrade Required", { status: 426 });
  },
  websocket: {
    perMessageDeflate: true,
    idleTimeout: 120,
    open(ws) {
      if (ws.data.path === "/sub") ws.subscribe("feed");
    },
    message(ws, raw) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(typeof raw === "string" ? raw : raw.toString());
      } catch {
        ws.send(error("invalid JSON", "INVALID_JSON"));
        return;
      }
      if (ws.data.path === "/pub") {
        const result = Publish.safeParse(parsed);
        if (!result.success) {
          ws.send(error(result.error.message, "VALIDATION_ERROR"));
          return;
        }
        server.publish("feed", JSON.stringify({ type: "tick", data: result.data.data }), true);
        return;
      }
      const result = Echo.safeParse(parsed);
      if (!result.success) {
        ws.send(error(result.error.message, "VALIDATION_ERROR"));
        return;
      }
      const reply: Record<string, unknown> = { type: "echo", data: { text: result.data.data.text } };
      if (result.data.id !== undefined) reply.id = result.data.id;
      ws.send(JSON.stringify(reply), true);
    },
  },
});

console.log(`bun ${Bun.version} listening on ${server.hostname}:${server.port}`);
