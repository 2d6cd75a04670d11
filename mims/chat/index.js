// @ts-check
// mims/chat — seed 003's Enonic XP chat (get + webSocketEvent with the group library).
// Open http://localhost:8083/chat/ in two tabs and type.
var page = require('./page.js');

// Create a websocket if websocket request (otherwise: the chat page).
exports.get = function (req) {

  if (!req.webSocket) {
    return {
      status: 200,
      contentType: 'text/html; charset=utf-8',
      body: page.html
    };
  }

  return {
    webSocket: {
      data: {
        user: "test"
      },
      subProtocols: ["text"]
    }
  };
};

// Lib that contains websocket functions.
var webSocketLib = require('/lib/xp/websocket');

// Listen to a websocket event
exports.webSocketEvent = function (event) {

  if (event.type == 'open') {
    // Send message back to client
    webSocketLib.send(event.session.id, 'Welcome to our chat ' + event.session.user ? event.session.user.displayName : 'anonymous' );

    // Add client into a group
    webSocketLib.addToGroup('chat', event.session.id);

    log.info(`New group size ${webSocketLib.getGroupSize('chat')}`);
  }

  if (event.type == 'message') {
    // Propegate message to group
    webSocketLib.sendToGroup('chat', event.message);
  }

  if (event.type == 'close') {
    // Remove client from a group
    webSocketLib.removeFromGroup('chat', event.session.id);
  }

};
