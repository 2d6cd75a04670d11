// bench/mims/kv — the storage benchmark: one setItem and one getItem per request.
//   POST /kv/?k=N  body -> stores the body under kN, reads it back, answers it.
app.post('/', (request, response) => {
  var key = 'k' + (request.query.k || '0');
  context.storage.setItem(key, request.body);
  response.end(context.storage.getItem(key));
});
