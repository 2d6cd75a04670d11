// @ts-check
// Seed 002 both ways (Dirigible's sdk/net): a browser talks to the endpoint
// ws://HOST/websockets/v4/service/relay (relay.websocket); for each session the
// relay handler opens an outbound client to RELAY_TARGET and relays messages both
// ways. Without RELAY_TARGET the target is this mim's own echo endpoint
// (relay-echo.websocket), so it works out of the box.
const { websockets } = require('sdk/net');
const target = require('./target');

// GET /relay/: where to connect and what is relayed right now.
app.get('/', (req, res) => {
  res.json({
    endpoint: '/websockets/v4/service/relay',
    target: target.uri(),
    clients: websockets.getClients(),
  });
});
