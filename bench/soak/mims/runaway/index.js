// bench/soak/mims/runaway — a handler that never returns: the host must time it out
// (504), replace the worker, and keep every other mim serving.
app.get('/', (request, response) => {
  while (true) {}
});
