// Dispatches with the real @cryb/mesa 1.5.8 Dispatcher, as a Node service would
// (tests/cluster.rs). Usage:
//   node dispatch.js <redis-url> <namespace|""> <sync 0|1> <json list of steps>
// where a step is {"to": [...], "op": n, "d": ..., "t": "...", "excluding": [...]}
// or {"disconnect": [...]} (Mesa's DispatchEvent DISCONNECT_CLIENT).
'use strict';
const { Dispatcher, Message, DispatchEvent } = require('@cryb/mesa');
const [url, namespace, sync, steps] = process.argv.slice(2);
const options = { sync: { enabled: sync === '1' } };
if (namespace) options.namespace = namespace;
const dispatcher = new Dispatcher(url, options);
(async () => {
  for (const step of JSON.parse(steps)) {
    if (step.disconnect) dispatcher.dispatch(new DispatchEvent('DISCONNECT_CLIENT'), step.disconnect);
    else dispatcher.dispatch(new Message(step.op, step.d, step.t), step.to, step.excluding);
    // Mesa's dispatch is fire-and-forget (it awaits SISMEMBER with sync): let each
    // step reach Redis before the next, so order is the test's.
    await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, 300));
  process.exit(0);
})().catch((e) => { console.error(e); process.exit(1); });
