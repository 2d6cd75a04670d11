// @ts-check
// The endpoint's handler ("relay/relay-handler": "relay" is the Dirigible project
// name, which names no folder here and is dropped). Browser -> upstream.
const { websockets } = require('sdk/net');
const pairs = require('./pairs');
const target = require('./target');

function clientFor(session) {
  let client = pairs.clientOf(session);
  if (!client) {
    client = websockets.createWebsocket(target.uri(), 'relay/upstream-handler');
    pairs.bind(session, client);
  }
  return client;
}

// mimhost passes the session id as the last argument of every call.
exports.onOpen = function (session) { clientFor(session); };
exports.onMessage = function (message, from) { clientFor(from).send(message); };
exports.onClose = function (session) {
  const client = pairs.unbind(session);
  if (client) client.close();
};
