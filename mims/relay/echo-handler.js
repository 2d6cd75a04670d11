// @ts-check
// The default upstream: answers every message with itself (a return value of
// onMessage is the reply).
exports.onMessage = function (message) { return message; };
