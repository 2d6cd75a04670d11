// bench/peers/bun-server.js — the broadcast peer on Bun's own WebSocket server
// (Bun.serve, built on uWebSockets), for bench/run.sh's fan-out and idle scenarios.
//   bun bun-server.js --port P
//     POST /notify/notify   publish {"type":"notification","message":…} to every
//                           client of ws://…/ws/notify (topic pub/sub, one encode)
//     GET  /healthz         {"status":"ok"}
const args = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const port = Number(arg('--port', '8091'));
const NOTIFICATION = JSON.stringify({ type: 'notification', message: 'New data available' });

const server = Bun.serve({
  hostname: '127.0.0.1',
  port,
  async fetch(req, server) {
    const url = new URL(req.url);
    if (url.pathname === '/ws/notify') {
      if (server.upgrade(req)) return undefined;
      return new Response('upgrade failed', { status: 400 });
    }
    if (req.method === 'POST' && url.pathname === '/notify/notify') {
      await req.arrayBuffer();
      server.publish('notify', NOTIFICATION);
      return new Response('{"sent":true}', { headers: { 'content-type': 'application/json' } });
    }
    if (url.pathname === '/healthz') return new Response('{"status":"ok"}');
    return new Response('not found', { status: 404 });
  },
  websocket: {
    perMessageDeflate: false,
    open(ws) {
      ws.subscribe('notify');
    },
    message() {},
  },
});
console.log(`listening on http://127.0.0.1:${server.port}`);
