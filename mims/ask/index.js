// @ts-check
// mims/ask — route style: ask a chat-completions API (OpenAI-compatible, e.g. a local
// Ollama or llama.cpp server) and stream the answer to the client as plain text while
// the model is still writing it. The host makes the outbound request
// (`context.http.request` with `mode: 'stream'`); each server-sent event that arrives
// becomes a `response.write` at once.
//
//   curl -N 'localhost:8083/ask/?q=Why+is+the+sky+blue'
//   curl -N -XPOST localhost:8083/ask/ -d 'Why is the sky blue?'
//
// Env (mim.json): ASK_API_URL (the chat completions URL), ASK_MODEL, ASK_API_KEY (optional).

function ask(question, response) {
  var pending = '';   // the part of the event stream after the last complete line
  var started = false;
  function start(status) {
    if (started) return;
    started = true;
    response.statusCode = status;
    response.setHeader('content-type', 'text/plain; charset=utf-8');
  }
  function line(text) {
    if (text.indexOf('data:') !== 0) return;
    var payload = text.slice(5).trim();
    if (!payload || payload === '[DONE]') return;
    try {
      var delta = JSON.parse(payload).choices[0].delta;
      if (delta && delta.content) response.write(delta.content);
    } catch (e) {
      // not a completion chunk (a comment or a keep-alive): skip it
    }
  }
  context.http.request({
    url: context.env.ASK_API_URL,
    type: 'POST',
    data: {
      model: context.env.ASK_MODEL,
      stream: true,
      messages: [{ role: 'user', content: question }]
    },
    authorization: context.env.ASK_API_KEY ? 'Bearer ' + context.env.ASK_API_KEY : undefined,
    mode: 'stream',
    success: function (chunk) {
      if (chunk.done) {
        if (pending) line(pending);
        start(200);
        response.end('\n');
        return;
      }
      start(chunk.status === undefined ? 200 : chunk.status);
      if (chunk.done === undefined) {
        // not a stream: the whole answer at once (JSON of a completion)
        try { response.end(JSON.parse(chunk.data).choices[0].message.content + '\n'); }
        catch (e) { response.end(chunk.data); }
        return;
      }
      var lines = (pending + chunk.data).split('\n');
      pending = lines.pop();
      lines.forEach(line);
    },
    error: function (e) {
      response.statusCode = 502;
      response.json({ error: { status: response.statusCode, message: 'the model API failed: ' + e.message } });
    }
  });
}

app.get('/', function (request, response) {
  if (!request.query.q) {
    response.statusCode = 400;
    return response.json({ error: { status: 400, message: 'ask something: /ask/?q=your+question' } });
  }
  ask(request.query.q, response);
});

app.post('/', function (request, response) {
  ask(request.body, response);
});
