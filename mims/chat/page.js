// @ts-check
// The chat page: every line typed goes to the group, every line received is shown.
exports.html = [
  '<!doctype html><html><head><meta charset="utf-8"><title>mimhost chat</title>',
  '<style>body{font:15px system-ui;margin:2em;max-width:40em}#log{border:1px solid #ccc;height:20em;overflow:auto;padding:.5em}',
  'input{width:80%}</style></head><body><h1>chat</h1><div id="log"></div>',
  '<form id="f"><input id="text" autocomplete="off" placeholder="say something"><button>send</button></form>',
  '<script>',
  'var log = document.getElementById("log");',
  'function show(t){var p=document.createElement("div");p.className="line";p.textContent=t;log.appendChild(p);log.scrollTop=log.scrollHeight;}',
  'var url = location.href.replace(/^http/, "ws");',
  'var ws = new WebSocket(url, ["text"]);',
  'ws.onopen = function(){ document.body.dataset.state = "open"; };',
  'ws.onmessage = function(e){ show(e.data); };',
  'ws.onclose = function(){ document.body.dataset.state = "closed"; show("(disconnected)"); };',
  'document.getElementById("f").onsubmit = function(e){ e.preventDefault(); var i=document.getElementById("text"); if(i.value){ ws.send(i.value); i.value=""; } };',
  '</script></body></html>'
].join('\n');
