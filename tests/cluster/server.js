// A real @cryb/mesa 1.5.8 Server on one Redis, for tests/cluster.rs: mimhost's own
// Dispatcher must reach its clients. Usage: node server.js <redis-url> <namespace> <port>
// A client authenticates with {"op":2,"d":{"id":"…"}}; prints "ready" once listening.
'use strict';
const Server = require('@cryb/mesa').default;
const [url, namespace, port] = process.argv.slice(2);
const server = new Server({ port: Number(port), redis: url, namespace: namespace || undefined, gracefullyExit: false });
server.on('connection', (client) => {
  client.authenticate((data, done) => done(null, { id: String(data.id), user: { id: String(data.id) } }));
});
server.wss.on('listening', () => console.log('ready'));
