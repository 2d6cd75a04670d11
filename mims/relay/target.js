// @ts-check
// Where the relay's outbound clients connect: env RELAY_TARGET, else this mim's
// own echo endpoint on this host.
exports.uri = function () {
  return context.env.RELAY_TARGET ||
    'ws://127.0.0.1:' + context.info.httpPort + '/websockets/v4/service/relay-echo';
};
