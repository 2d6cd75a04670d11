// bench/soak/mims/soak-store — the soak's storage probe.
//   POST /soak-store/?k=KEY  body -> stored under KEY; 200 only once setItem returned.
//   GET  /soak-store/?k=KEY&v=VALUE -> 200 when the stored value is VALUE, else 404.
app.post('/', (request, response) => {
  context.storage.setItem('soak:' + request.query.k, request.body);
  response.end('ok');
});
app.get('/', (request, response) => {
  var got = context.storage.getItem('soak:' + request.query.k);
  if (got === request.query.v) {
    response.end('ok');
  } else {
    response.statusCode = 404;
    response.end('missing');
  }
});
