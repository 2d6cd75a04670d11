// The peer servers bench/run.sh measures mimhost against: the same jobs, done the
// way a Node.js developer would do them.
//
//   node server.js --port P                      Node `http` + `ws`
//     GET  /hello/          {"hello":"world","from":"node"}
//     POST /notify/notify   broadcast {"type":"notification","message":…} to every
//                           client of ws://…/ws/notify (frame encoded once)
//     ws://…/chat/          subprotocol "text"; every message goes to every member
//     POST /kv/?k=N         SET k<N> body, GET it back (through --redis, when given)
//
//   node server.js --port P --mesa --redis redis://127.0.0.1:R
//     Mesa (@cryb/mesa) server on ws://…/ws/notify, and POST /notify/notify calls
//     Mesa's Dispatcher.dispatch(new Message(0, {type, message}, 'notification'), ['*']),
//     which goes through Redis pub/sub to the Mesa server and its clients.
//
// Prints "listening on http://127.0.0.1:P" once it accepts connections.
'use strict';
const http = require('http');

const args = process.argv.slice(2);
const arg = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const port = Number(arg('--port', '8090'));
const redisUrl = arg('--redis', null);
const mesaMode = args.includes('--mesa');

const NOTIFICATION = { type: 'notification', message: 'New data available' };
const HELLO = JSON.stringify({ hello: 'world', from: 'node' });

const server = http.createServer();
server.keepAliveTimeout = 120000;
server.headersTimeout = 121000;
server.maxConnections = Infinity;

let broadcast; // () => void
let kv = null;

function readBody(req, done) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => done(Buffer.concat(chunks).toString()));
}

server.on('request', (req, res) => {
  const url = req.url;
  if (req.method === 'GET' && (url === '/hello/' || url === '/hello')) {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(HELLO) });
    res.end(HELLO);
    return;
  }
  if (req.method === 'POST' && url === '/notify/notify') {
    readBody(req, () => {
      broadcast();
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"sent":true}');
    });
    return;
  }
  if (req.method === 'POST' && url.startsWith('/kv/') && kv) {
    const q = url.indexOf('?k=');
    const key = 'k' + (q >= 0 ? url.slice(q + 3) : '0');
    readBody(req, (body) => {
      kv.set(key, body)
        .then(() => kv.get(key))
        .then((value) => {
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.end(value);
        })
        .catch((e) => {
          res.writeHead(500);
          res.end(String(e));
        });
    });
    return;
  }
  if (req.method === 'GET' && url === '/healthz') {
    res.end('{"status":"ok"}');
    return;
  }
  res.writeHead(404, { 'content-type': 'application/json' });
  res.end('{"error":{"status":404,"message":"not found"}}');
});

if (mesaMode) {
  if (!redisUrl) throw new Error('--mesa needs --redis redis://HOST:PORT');
  const mesa = require('@cryb/mesa');
  const Mesa = mesa.default;
  const { Dispatcher, Message } = mesa;
  // The Mesa server shares the HTTP server; clients connect to /ws/notify.
  const wsServer = new Mesa({ server, path: '/ws/notify', redis: redisUrl, gracefullyExit: false });
  wsServer.on('error', (e) => console.error('mesa error', e && e.message));
  const dispatcher = new Dispatcher(redisUrl);
  broadcast = () => dispatcher.dispatch(new Message(0, NOTIFICATION, 'notification'), ['*']);
} else {
  const { WebSocketServer, WebSocket } = require('ws');
  const notifyClients = new Set();
  const chatGroup = new Set();
  const notifyWss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  const chatWss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    handleProtocols: (protocols) => (protocols.has('text') ? 'text' : false),
  });
  server.on('upgrade', (req, socket, head) => {
    const path = req.url.split('?')[0];
    if (path === '/ws/notify') {
      notifyWss.handleUpgrade(req, socket, head, (ws) => {
        notifyClients.add(ws);
        ws.on('close', () => notifyClients.delete(ws));
        ws.on('error', () => {});
      });
    } else if (path === '/chat/' || path === '/chat') {
      chatWss.handleUpgrade(req, socket, head, (ws) => {
        chatGroup.add(ws);
        ws.on('message', (data, isBinary) => {
          // sendToGroup('chat', message): everyone in the group, the sender too.
          for (const member of chatGroup) {
            if (member.readyState === WebSocket.OPEN) member.send(data, { binary: isBinary });
          }
        });
        ws.on('close', () => chatGroup.delete(ws));
        ws.on('error', () => {});
      });
    } else {
      socket.destroy();
    }
  });
  broadcast = () => {
    const frame = Buffer.from(JSON.stringify(NOTIFICATION));
    for (const ws of notifyClients) {
      if (ws.readyState === WebSocket.OPEN) ws.send(frame, { binary: false });
    }
  };
  if (redisUrl) {
    const Redis = require('ioredis');
    kv = new Redis(redisUrl);
  }
}

server.on('error', (e) => {
  console.error('server error:', e.message);
});
server.listen(port, '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${port}`);
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
