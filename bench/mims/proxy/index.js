// bench/mims/proxy — the outbound HTTP benchmark: one context.http.request per request.
//   GET /proxy/?u=URL -> the host fetches URL, the mim answers with its body.
app.get('/', (request, response) => {
  context.http.request({
    url: request.query.u,
    success: (r) => {
      response.setHeader('content-type', r.headers['content-type'] || 'text/plain');
      response.end(r.data);
    },
    error: (e) => {
      response.statusCode = 502;
      response.end(e.message);
    },
  });
});
