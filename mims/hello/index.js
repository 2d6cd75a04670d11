// @ts-check
// mims/hello — route style (seed 000): `app` and `context` are globals.
app.get('/', (request, response) => {
  response.end(JSON.stringify({ hello: 'world', from: context.info.serviceType }));
});

app.get('/greet/:name', (request, response) => {
  response.setHeader('content-type', 'application/json');
  response.end(JSON.stringify({ greeting: 'Hello, ' + request.params.name + '!' }));
});
