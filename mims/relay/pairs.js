// @ts-check
// Which outbound client relays for which browser session (both ways). Kept in
// the worker: a worker restart forgets the pairs, and the relay then opens a new
// client for a session's next message.
const bySession = new Map();
const sessionByClient = new Map();

exports.bind = function (session, client) {
  bySession.set(session, client);
  sessionByClient.set(client.id, session);
};
exports.clientOf = function (session) { return bySession.get(session) || null; };
exports.sessionOf = function (clientId) { return sessionByClient.get(clientId) || null; };
exports.unbind = function (session) {
  const client = bySession.get(session);
  bySession.delete(session);
  if (client) sessionByClient.delete(client.id);
  return client || null;
};
exports.forgetClient = function (clientId) {
  const session = sessionByClient.get(clientId);
  sessionByClient.delete(clientId);
  if (session && bySession.get(session) && bySession.get(session).id === clientId) bySession.delete(session);
};
