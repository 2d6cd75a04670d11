// @ts-check
// The outbound clients' handler: upstream -> browser.
const websocket = require('/lib/xp/websocket');
const { websockets } = require('sdk/net');
const pairs = require('./pairs');

exports.onMessage = function (message, clientId) {
  const session = pairs.sessionOf(clientId);
  if (session) websocket.send(session, message);
};
exports.onError = function (error, clientId) {
  log.warn('relay upstream ' + clientId + ': ' + websockets.getError());
  const session = pairs.sessionOf(clientId);
  if (session) websocket.send(session, JSON.stringify({ error: error }));
};
exports.onClose = function (clientId) { pairs.forgetClient(clientId); };
