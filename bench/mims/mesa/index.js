// bench/mims/mesa — dispatch to client ids through mimhost's own @cryb/mesa
// (SPEC section 6), the job the Mesa peer does through Redis:
//   POST /mesa/notify  -> dispatcher.dispatch(new Message(0, {type, message}, 'notification'), ['*'])
// reaching every session of ws://HOST/ws/mesa. Answers 501 while the host has no
// '@cryb/mesa' module, so bench/run.sh can say so instead of failing.
var dispatcher = null;
var Message = null;
var missing = null;
try {
  var mesa = require('@cryb/mesa');
  dispatcher = new mesa.Dispatcher();
  Message = mesa.Message;
} catch (e) {
  missing = String(e && e.message || e);
}

app.post('/notify', (request, response) => {
  if (!dispatcher) {
    response.statusCode = 501;
    response.end(JSON.stringify({ error: { status: 501, message: 'no @cryb/mesa in this host: ' + missing } }));
    return;
  }
  dispatcher.dispatch(new Message(0, { type: 'notification', message: 'New data available' }, 'notification'), ['*']);
  response.end(JSON.stringify({ sent: true }));
});
