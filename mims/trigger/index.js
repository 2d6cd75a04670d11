// @ts-check
// mims/trigger — seed 001's WebSocket trigger model: a connection manager that greets
// each session on open, broadcasts every message to everyone, answers the sender with
// a {body} reply, and closes a session that sends {"end": true}.
var websocket = require('/lib/xp/websocket');

exports.get = function (req) {
  if (!req.webSocket) {
    return { body: { usage: 'connect a WebSocket to ' + req.path + ', send text or JSON; {"end": true} closes' } };
  }
  return { webSocket: { data: { openedAt: new Date().toISOString() } } };
};

exports.webSocketEvent = function (event) {
  if (event.type === 'open') {
    return { body: { hello: event.sessionId, peer: event.peer, method: event.method, query: event.query } };
  }
  if (event.type === 'message') {
    var request;
    try { request = JSON.parse(event.message); } catch (e) { request = { text: event.message }; }
    if (request && request.end) {
      return { body: { bye: event.sessionId }, end: true };
    }
    websocket.sendToAll(JSON.stringify({ from: event.sessionId, message: request }));
    return { body: { received: true } };
  }
};
