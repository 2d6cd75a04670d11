// The JavaScript half of mimhost's bindings, evaluated once in every fresh context.
// It builds every global a mim sees (context, app, mimikModule, require, timers,
// console/log and the small Node/browser shims webpack bundles reach for) on top of
// the native functions in `__host`, and exposes the entry points the Rust side calls
// through `__mimhost`. Everything here is plain data in, native calls out.
(function (host, mim) {
  'use strict';
  var G = globalThis;

  // ---- small shims real bundles expect -------------------------------------------
  G.global = G;
  G.self = G;
  G.window = G.window || undefined;

  var utf8 = {
    encode: function (text) {
      var s = String(text), out = [];
      for (var i = 0; i < s.length; i++) {
        var c = s.charCodeAt(i);
        if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length) {
          var d = s.charCodeAt(i + 1);
          if (d >= 0xdc00 && d < 0xe000) { c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00); i++; }
          else c = 0xfffd;
        } else if (c >= 0xd800 && c < 0xe000) c = 0xfffd;
        if (c < 0x80) out.push(c);
        else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
        else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
        else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
      }
      return new Uint8Array(out);
    },
    decode: function (bytes) {
      var b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes && bytes.buffer ? bytes.buffer : bytes || []);
      var s = '';
      for (var i = 0; i < b.length;) {
        var c = b[i++], n = 0, cp;
        if (c < 0x80) { s += String.fromCharCode(c); continue; }
        else if (c >= 0xf0) { cp = c & 7; n = 3; }
        else if (c >= 0xe0) { cp = c & 15; n = 2; }
        else if (c >= 0xc0) { cp = c & 31; n = 1; }
        else { s += '\ufffd'; continue; }
        for (var k = 0; k < n && i < b.length; k++) cp = (cp << 6) | (b[i++] & 63);
        s += String.fromCodePoint(cp);
      }
      return s;
    }
  };
  if (typeof G.TextEncoder !== 'function') {
    G.TextEncoder = function TextEncoder() { this.encoding = 'utf-8'; };
    G.TextEncoder.prototype.encode = function (s) { return utf8.encode(s === undefined ? '' : s); };
  }
  if (typeof G.TextDecoder !== 'function') {
    G.TextDecoder = function TextDecoder() { this.encoding = 'utf-8'; };
    G.TextDecoder.prototype.decode = function (b) { return b === undefined ? '' : utf8.decode(b); };
  }
  var B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  if (typeof G.btoa !== 'function') {
    G.btoa = function (input) {
      var s = String(input), out = '';
      for (var i = 0; i < s.length; i += 3) {
        var a = s.charCodeAt(i), b = s.charCodeAt(i + 1), c = s.charCodeAt(i + 2);
        if (a > 255 || b > 255 || c > 255) throw new Error('btoa: the string has characters outside of Latin1');
        var n = (a << 16) | ((b || 0) << 8) | (c || 0);
        out += B64[(n >> 18) & 63] + B64[(n >> 12) & 63] +
          (i + 1 < s.length ? B64[(n >> 6) & 63] : '=') + (i + 2 < s.length ? B64[n & 63] : '=');
      }
      return out;
    };
  }
  if (typeof G.atob !== 'function') {
    G.atob = function (input) {
      var s = String(input).replace(/[\s=]/g, ''), out = '', bits = 0, acc = 0;
      for (var i = 0; i < s.length; i++) {
        var v = B64.indexOf(s[i]);
        if (v < 0) throw new Error('atob: the string is not valid base64');
        acc = (acc << 6) | v; bits += 6;
        if (bits >= 8) { bits -= 8; out += String.fromCharCode((acc >> bits) & 255); }
      }
      return out;
    };
  }
  G.Buffer = G.Buffer || {
    byteLength: function (s) { return typeof s === 'string' ? utf8.encode(s).length : (s && s.byteLength) || 0; },
    from: function (s, enc) {
      if (enc === 'base64') { var raw = G.atob(s), a = new Uint8Array(raw.length); for (var i = 0; i < raw.length; i++) a[i] = raw.charCodeAt(i); return a; }
      return utf8.encode(s);
    },
    isBuffer: function () { return false; }
  };
  if (typeof G.URL !== 'function') {
    var URLShim = function URL(href, base) {
      var s = String(href);
      if (!/^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(s)) {
        if (base === undefined) throw new TypeError('Invalid URL: ' + s);
        var b = new URLShim(base);
        s = s.charAt(0) === '/' ? b.origin + s : b.origin + b.pathname.replace(/[^/]*$/, '') + s;
      }
      var m = /^([a-zA-Z][a-zA-Z0-9+.-]*:)(?:\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^:/?#]*)(?::(\d+))?)?([^?#]*)(\?[^#]*)?(#.*)?$/.exec(s);
      if (!m) throw new TypeError('Invalid URL: ' + s);
      this.protocol = m[1].toLowerCase(); this.username = m[2] || ''; this.password = m[3] || '';
      this.hostname = m[4] || ''; this.port = m[5] || ''; this.pathname = m[6] || '/';
      this.search = m[7] && m[7] !== '?' ? m[7] : ''; this.hash = m[8] || '';
      this.host = this.hostname + (this.port ? ':' + this.port : '');
      this.origin = this.protocol + '//' + this.host;
      this.searchParams = new URLSearchParamsShim(this.search);
    };
    URLShim.prototype.toString = function () { return this.origin + this.pathname + this.search + this.hash; };
    Object.defineProperty(URLShim.prototype, 'href', { get: function () { return this.toString(); } });
    URLShim.prototype.toJSON = URLShim.prototype.toString;
    var URLSearchParamsShim = function URLSearchParams(init) {
      this._pairs = [];
      var s = String(init || '').replace(/^\?/, '');
      if (s) s.split('&').forEach(function (part) {
        var i = part.indexOf('='), k = i < 0 ? part : part.slice(0, i), v = i < 0 ? '' : part.slice(i + 1);
        this._pairs.push([decodeQueryPart(k), decodeQueryPart(v)]);
      }, this);
    };
    URLSearchParamsShim.prototype.get = function (k) { for (var p of this._pairs) if (p[0] === k) return p[1]; return null; };
    URLSearchParamsShim.prototype.getAll = function (k) { return this._pairs.filter(function (p) { return p[0] === k; }).map(function (p) { return p[1]; }); };
    URLSearchParamsShim.prototype.has = function (k) { return this.get(k) !== null; };
    URLSearchParamsShim.prototype.set = function (k, v) { this.delete(k); this._pairs.push([k, String(v)]); };
    URLSearchParamsShim.prototype.append = function (k, v) { this._pairs.push([k, String(v)]); };
    URLSearchParamsShim.prototype.delete = function (k) { this._pairs = this._pairs.filter(function (p) { return p[0] !== k; }); };
    URLSearchParamsShim.prototype.forEach = function (f) { this._pairs.forEach(function (p) { f(p[1], p[0]); }); };
    URLSearchParamsShim.prototype.toString = function () { return this._pairs.map(function (p) { return encodeURIComponent(p[0]) + '=' + encodeURIComponent(p[1]); }).join('&'); };
    G.URL = URLShim;
    G.URLSearchParams = URLSearchParamsShim;
  }
  function decodeQueryPart(s) {
    try { return decodeURIComponent(s.replace(/\+/g, ' ')); } catch (e) { return s; }
  }

  // ---- console and log -------------------------------------------------------------
  function show(v) {
    if (typeof v === 'string') return v;
    if (v instanceof Error) return v.stack ? String(v) + '\n' + v.stack : String(v);
    try { var j = JSON.stringify(v); return j === undefined ? String(v) : j; } catch (e) { return String(v); }
  }
  function logger(level) {
    return function () {
      var parts = [];
      for (var i = 0; i < arguments.length; i++) parts.push(show(arguments[i]));
      host.log(level, parts.join(' '));
    };
  }
  G.console = {
    log: logger('info'), info: logger('info'), warn: logger('warn'), error: logger('error'),
    debug: logger('debug'), trace: logger('debug'), dir: logger('info')
  };
  G.log = { info: logger('info'), warn: logger('warn'), error: logger('error'), debug: logger('debug') };

  // ---- timers ------------------------------------------------------------------
  var timers = new Map(), nextTimerId = 1;
  function addTimer(fn, ms, args, repeat) {
    if (typeof fn !== 'function') throw new TypeError('timer callback must be a function');
    var delay = Math.max(0, Number(ms) || 0), id = nextTimerId++;
    timers.set(id, { fn: fn, args: args, at: host.now() + delay, every: repeat ? Math.max(1, delay) : 0 });
    return id;
  }
  G.setTimeout = function (fn, ms) { return addTimer(fn, ms, Array.prototype.slice.call(arguments, 2), false); };
  G.setInterval = function (fn, ms) { return addTimer(fn, ms, Array.prototype.slice.call(arguments, 2), true); };
  G.setImmediate = function (fn) { return addTimer(fn, 0, Array.prototype.slice.call(arguments, 1), false); };
  G.clearTimeout = G.clearInterval = G.clearImmediate = function (id) { timers.delete(id); };
  G.queueMicrotask = function (fn) { Promise.resolve().then(fn); };
  G.process = G.process || {};
  G.process.env = Object.assign({}, mim.env);
  G.process.nextTick = function (fn) {
    var args = Array.prototype.slice.call(arguments, 1);
    Promise.resolve().then(function () { fn.apply(undefined, args); });
  };
  G.process.platform = 'mimhost';
  G.process.version = 'v0';
  G.process.versions = {};
  G.process.browser = true;

  /** Runs every due timer once; returns ms until the next one, or -1 when none is set. */
  function runTimers() {
    var now = host.now(), next = -1;
    timers.forEach(function (t, id) {
      if (t.at <= now) {
        if (t.every) t.at = now + t.every; else timers.delete(id);
        try { t.fn.apply(undefined, t.args); } catch (e) { reportError('timer callback', e); }
        flushDispatches();
      }
    });
    timers.forEach(function (t) { var wait = Math.max(0, t.at - now); if (next < 0 || wait < next) next = wait; });
    return next;
  }

  function reportError(where, e) {
    var text = e && e.stack ? String(e) + '\n' + e.stack : String(e);
    host.log('uncaught', where + ' threw: ' + text);
  }

  // ---- context -----------------------------------------------------------------
  var wsEnabled = mim.env.WEBSOCKET_SUPPORT === 'true' || mim.env['MCM.WEBSOCKET_SUPPORT'] === 'true';
  // Dispatch frames wait in a native queue until the handler ends or an answer leaves.
  var flushDispatches = host.flushDispatches;
  function eachOf(tag, callback) {
    if (typeof callback !== 'function') throw new TypeError('storage iteration needs a callback (key, value) => …');
    var flat = host.storageItems(tag);
    for (var i = 0; i < flat.length; i += 2) if (callback(flat[i], flat[i + 1]) === false) break;
  }
  var context = {
    env: Object.assign({}, mim.env),
    info: { serviceType: mim.name, apiRoot: mim.basePath, httpPort: mim.httpPort, nodeId: mim.nodeId },
    storage: {
      getItem: function (k) { return host.storageGet(String(k)); },
      setItem: function (k, v) { host.storageSet(String(k), String(v), null); },
      setItemWithTag: function (k, v, tag) { host.storageSet(String(k), String(v), String(tag)); },
      removeItem: function (k) { host.storageRemove(String(k)); },
      eachItem: function (cb) { eachOf(null, cb); },
      eachItemByTag: function (tag, cb) { eachOf(String(tag), cb); },
      removeItemsByTag: function (tag) { return host.storageRemoveByTag(String(tag)); }
    },
    dispatchWebSocketEvent: function (options) {
      if (!wsEnabled) {
        throw new Error('WebSocket support is off for container "' + mim.name +
          '": deploy it with env WEBSOCKET_SUPPORT="true" (or MCM.WEBSOCKET_SUPPORT="true") to use dispatchWebSocketEvent');
      }
      if (options === undefined || options === null) { flushDispatches(); host.flush(); return; }
      var frame = { type: options.type };
      if (options.message !== undefined) frame.message = options.message;
      host.queueDispatch(JSON.stringify(frame));
    },
    edge: {
      decryptEncryptedNodesJson: function (opts) { notOffered('decryptEncryptedNodesJson', opts); },
      requestBep: function (opts) { notOffered('requestBep', opts); }
    }
  };
  function notOffered(name, opts) {
    var message = 'context.edge.' + name + ' is a mimik edge node service that this host does not offer';
    if (opts && typeof opts.error === 'function') G.setTimeout(function () { opts.error({ message: message }); }, 0);
    else throw new Error(message);
  }
  G.context = context;

  // ---- app router (route style) -------------------------------------------------
  var routes = [];
  function compileRoute(path) {
    var names = [], src = String(path).replace(/\/+$/, '') || '/';
    var pattern = src === '/' ? '/' : src.split('/').map(function (seg) {
      if (seg === '*') { names.push('*'); return '(.*)'; }
      if (seg.charAt(0) === ':') { names.push(seg.slice(1)); return '([^/]+)'; }
      return seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    }).join('/');
    pattern = pattern.replace(/\/\(\.\*\)$/, '(?:/(.*))?');
    // A route without parameters or wildcard matches by string comparison (no regex
    // run per request): the path itself, or it with one trailing slash.
    return { regex: new RegExp('^' + pattern + '/?$'), names: names, literal: names.length ? null : src };
  }
  function addRoute(method) {
    return function (path, handler) {
      if (typeof handler !== 'function') throw new TypeError('app.' + method.toLowerCase() + '(' + path + ', handler): handler must be a function');
      var r = compileRoute(path);
      routes.push({ method: method, regex: r.regex, names: r.names, literal: r.literal, handler: handler });
      return G.app;
    };
  }
  G.app = {
    get: addRoute('GET'), post: addRoute('POST'), put: addRoute('PUT'), patch: addRoute('PATCH'),
    delete: addRoute('DELETE'), all: addRoute('*'), head: addRoute('HEAD'), options: addRoute('OPTIONS')
  };
  /** The handler of the first route matching request `r`, with `r.params` set; null
   *  when none matches. No object is made per request beyond `params` itself. */
  function routeFor(r) {
    var method = r.method, path = r.path;
    for (var i = 0; i < routes.length; i++) {
      var route = routes[i];
      if (route.method !== '*' && route.method !== method) continue;
      if (route.literal !== null) {
        if (path === route.literal || path === route.literal + '/') { r.params = {}; return route.handler; }
        continue;
      }
      var m = route.regex.exec(path);
      if (!m) continue;
      var params = {};
      for (var j = 0; j < route.names.length; j++) params[route.names[j]] = m[j + 1] === undefined ? '' : decodeQueryPart(m[j + 1]);
      r.params = params;
      return route.handler;
    }
    return null;
  }

  // ---- modules -----------------------------------------------------------------
  G.mimikModule = { exports: undefined };
  var builtins = {};
  var moduleCache = {};
  /** Makes the `require` function for a file at `dir`. */
  function makeRequire(dir) {
    return function require(spec) {
      spec = String(spec);
      if (Object.prototype.hasOwnProperty.call(builtins, spec)) return builtins[spec]();
      if (spec.charAt(0) !== '.') throw new Error("Cannot find module '" + spec + "': only files of the mim ('./x') and the host's built-ins can be required");
      return requirePath(host.resolve(dir, spec));
    };
  }
  /** Loads (once) the CommonJS or JSON file at the absolute `path`; its exports. */
  function requirePath(path) {
    if (moduleCache[path]) return moduleCache[path].exports;
    var module = { exports: {}, id: path, filename: path, loaded: false };
    moduleCache[path] = module;
    if (/\.json$/.test(path)) { module.exports = JSON.parse(host.readSource(path)); }
    else {
      var fn = host.compileCommonJs(path);
      var d = path.replace(/\/[^/]*$/, '') || '/';
      fn.call(module.exports, module.exports, makeRequire(d), module, path, d);
    }
    module.loaded = true;
    return module.exports;
  }
  // The entry file is a module too: a handler naming it gets its exports, not a second run.
  if (mim.entry) moduleCache[mim.entry] = mim.module;

  // ---- HTTP ----------------------------------------------------------------------
  // A body to send: a string, or bytes (Uint8Array / ArrayBuffer) sent as they are.
  function bodyValue(body) {
    if (body === undefined || body === null) return '';
    if (typeof body === 'string' || isBytes(body)) return body;
    return String(body);
  }
  function bodyLength(body) { return typeof body === 'string' ? body.length : body.byteLength; }

  // The `response` object of route style and mimik bundles is native (response.rs:
  // one prototype per isolate, `statusCode` its only own property, the headers and
  // the answer's progress in native data). These methods are thin JavaScript over its
  // native `setHeader`/`getHeader`/`end`.
  var responseProto = host.responsePrototype;
  function responseMethod(name, fn) {
    Object.defineProperty(responseProto, name, { value: fn, writable: true, configurable: true });
  }
  responseMethod('writeHead', function writeHead(code, headers) {
    this.statusCode = code;
    if (headers) Object.keys(headers).forEach(function (k) { this.setHeader(k, headers[k]); }, this);
    return this;
  });
  responseMethod('send', function send(body) {
    if (body !== null && typeof body === 'object' && !isBytes(body)) return this.json(body);
    this.end(body);
  });
  responseMethod('json', function json(value) {
    if (this.getHeader('content-type') === undefined) this.setHeader('content-type', 'application/json');
    this.end(JSON.stringify(value));
  });
  // `host.responseState`: what the response has sent so far (0: nothing yet).
  var STREAMING = 1, ENDED = 2;
  /** Answers 500 for a handler that threw or whose promise rejected (ends a streamed answer). */
  function failResponse(res, e) {
    reportError(mim.name + ' handler', e);
    var state = host.responseState(res);
    if (state === ENDED) return;
    if (state === STREAMING) { res.end(); return; }
    var message = e && e.message !== undefined ? String(e.message) : String(e);
    host.responseReset(res, ['content-type', 'application/json']);
    res.statusCode = 500;
    res.end(JSON.stringify({ error: { status: 500, message: message } }));
  }
  /** Answers with a controller's return value `{status, body, contentType, headers}`
   *  (or accepts the WebSocket upgrade it asks for). */
  function answerFromController(res, result, webSocket) {
    if (host.responseState(res) === ENDED) return;
    if (result === undefined || result === null) result = {};
    if (webSocket && typeof result === 'object' && result.webSocket) {
      var ws = result.webSocket === true ? {} : result.webSocket;
      var data = ws.data === undefined ? null : ws.data;
      host.responseAccept(res, JSON.stringify(data), (ws.subProtocols || []).map(String));
      return;
    }
    if (typeof result !== 'object') result = { body: result };
    var headers = {};
    if (result.headers) Object.keys(result.headers).forEach(function (k) { headers[k.toLowerCase()] = result.headers[k]; });
    var body = result.body, type = result.contentType;
    if (body !== undefined && body !== null && typeof body === 'object' && !isBytes(body)) {
      body = JSON.stringify(body); type = type || 'application/json';
    }
    body = bodyValue(body);
    if (type) headers['content-type'] = type;
    else if (headers['content-type'] === undefined && bodyLength(body)) headers['content-type'] = typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/octet-stream';
    var flat = [];
    Object.keys(headers).forEach(function (k) { flat.push(k, headers[k]); });
    host.responseReset(res, flat);
    res.statusCode = result.status === undefined ? 200 : Number(result.status);
    res.end(body);
  }

  function parseCookies(header) {
    var out = {};
    if (header) String(header).split(';').forEach(function (part) {
      var i = part.indexOf('=');
      if (i > 0) out[part.slice(0, i).trim()] = decodeQueryPart(part.slice(i + 1).trim());
    });
    return out;
  }
  function controllerRequest(r) {
    var params = Object.assign({}, r.query);
    var type = r.headers['content-type'] || '';
    if (type.indexOf('application/x-www-form-urlencoded') === 0 && r.body) {
      new G.URLSearchParams(r.body).forEach(function (v, k) { params[k] = v; });
    }
    return {
      method: r.method, scheme: r.scheme, host: r.host, port: r.port, path: r.fullPath,
      url: r.scheme + '://' + r.headers.host + r.fullPath + (r.url.indexOf('?') >= 0 ? r.url.slice(r.url.indexOf('?')) : ''),
      params: params, headers: r.headers, cookies: parseCookies(r.headers.cookie), body: r.body,
      bodyBytes: r.bodyBytes, remoteAddress: r.remoteAddress, webSocket: !!r.webSocket, contextPath: mim.basePath
    };
  }
  function controllerExports() {
    var esm = mim.esm;
    if (esm) return esm;
    return mim.module.exports;
  }
  function controllerHandler(method) {
    var ex = controllerExports();
    if (!ex || (typeof ex !== 'object' && typeof ex !== 'function')) return null;
    var name = method.toLowerCase();
    if (name === 'delete' && typeof ex['delete'] !== 'function' && typeof ex.del === 'function') return ex.del;
    if (typeof ex[name] === 'function') return ex[name];
    if (typeof ex.all === 'function') return ex.all;
    return null;
  }
  function isThenable(v) { return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof v.then === 'function'; }

  /** Entry point: one HTTP request. `r` and `res` are the host's native request and
   *  response objects (request properties computed when read); route and mimik
   *  styles get them as they are. */
  function handleHttp(r, res) {
    var result, controller = false, webSocket = false;
    try {
      var handler = routeFor(r);
      if (handler) result = handler(r, res);
      else if (typeof G.mimikModule.exports === 'function') { r.params = {}; result = G.mimikModule.exports(context, r, res); }
      else {
        handler = controllerHandler(r.method);
        if (!handler) {
          res.statusCode = 404;
          res.setHeader('content-type', 'application/json');
          res.end(JSON.stringify({ error: { status: 404, message: 'no handler for ' + r.method + ' ' + r.path + ' in ' + mim.name } }));
          return;
        }
        controller = true;
        webSocket = !!r.webSocket;
        result = handler.call(controllerExports(), controllerRequest(r));
      }
    } catch (e) {
      flushDispatches();
      failResponse(res, e);
      return;
    }
    flushDispatches();
    if (result !== undefined && isThenable(result)) answerWhenSettled(result, res, controller, webSocket);
    else if (controller) answerFromController(res, result, webSocket);
  }
  // Apart from handleHttp so that it has no closures (no environment made per request).
  function answerWhenSettled(promise, res, controller, webSocket) {
    promise.then(function (v) { flushDispatches(); if (controller) answerFromController(res, v, webSocket); },
      function (e) { flushDispatches(); failResponse(res, e); });
  }

  // ---- WebSocket sessions ------------------------------------------------------------
  // No identity provider here: every session is Enonic's anonymous principal.
  var ANONYMOUS = Object.freeze({
    key: 'user:system:anonymous', displayName: 'Anonymous User', modifiedTime: '1970-01-01T00:00:00Z',
    disabled: false, login: 'anonymous', idProvider: 'system'
  });
  // The open sessions of this container as this isolate knows them (id -> info).
  var sessions = new Map();
  function wsHandler() {
    var ex = controllerExports();
    return ex && typeof ex.webSocketEvent === 'function' ? ex.webSocketEvent : null;
  }
  function wsOp(op) { host.wsOp(JSON.stringify(op)); }
  function isBytes(value) { return value instanceof ArrayBuffer || value instanceof Uint8Array; }
  // A WebSocket message for the host: bytes (ArrayBuffer/Uint8Array) go as base64 with
  // binary: true (a binary frame), anything else as text via `toText`.
  function wsData(value, toText) {
    return isBytes(value) ? { text: host.bytesToBase64(value), binary: true } : { text: toText(value), binary: false };
  }
  // A reply's `body` as text: strings as they are, other values as JSON.
  function bodyText(body) { return typeof body === 'string' ? body : JSON.stringify(body); }
  // Encodes a handler's `{body, end}` return value as the `Reply` operation (or null
  // when it asks for nothing). Shared by every place a mim replies by return.
  function encodeWsReply(id, value) {
    if (value === undefined || value === null || typeof value !== 'object') return null;
    if (!('body' in value) && !('end' in value)) return null;
    var data = value.body === undefined || value.body === null ? { text: null, binary: false } : wsData(value.body, bodyText);
    return { Reply: { session: id, body: data.text, end: !!value.end, binary: data.binary } };
  }
  function replyWith(id, value) {
    var op = encodeWsReply(id, value);
    if (op) wsOp(op);
  }
  /** Entry point: one session event. */
  function handleWs(ev) {
    var known = sessions.get(ev.session);
    var endpoint = ev.info ? ev.info.handler : known && known.handler;
    var handler = wsHandler();
    if (!handler && !endpoint) { sessions.delete(ev.session); return; }
    if (ev.info) {
      var info = ev.info;
      try { info.data = JSON.parse(info.data); } catch (e) { info.data = null; }
      sessions.set(ev.session, info);
    }
    var s = sessions.get(ev.session);
    if (ev.kind === 'close') sessions.delete(ev.session);
    if (!s || ev.kind === 'resume') return;
    if (s.handler) { endpointEvent(s, ev); return; }
    var event = {
      type: ev.kind, session: { id: s.id, path: s.path, params: s.params, user: ANONYMOUS }, data: s.data,
      sessionId: s.id, peer: s.peer, method: s.method, query: s.params, headers: s.headers, params: s.params
    };
    if (ev.message !== undefined && ev.message !== null) {
      event.message = ev.message;
      if (ev.binary) { event.binary = true; event.bytes = host.base64ToBytes(ev.message); }
    }
    if (ev.closeCode !== undefined && ev.closeCode !== null) event.closeReason = ev.closeCode;
    if (ev.error !== undefined && ev.error !== null) event.error = ev.error;
    var result;
    try { result = handler.call(controllerExports(), event); }
    catch (e) { reportError(mim.name + ' webSocketEvent', e); flushDispatches(); return; }
    if (isThenable(result)) {
      result.then(function (v) { replyWith(s.id, v); flushDispatches(); },
        function (e) { reportError(mim.name + ' webSocketEvent', e); flushDispatches(); });
    } else replyWith(s.id, result);
    flushDispatches();
  }

  // `require('/lib/xp/websocket')` (Enonic XP's library, plus a few more).
  var websocketLib = {
    send: function (id, text) {
      id = String(id);
      if (!sessions.has(id) && !host.wsQuery(JSON.stringify({ SessionExists: id }))) return false;
      var data = wsData(text, String);
      wsOp({ Send: { session: id, text: data.text, binary: data.binary } });
      return true;
    },
    sendToGroup: function (group, text) {
      var data = wsData(text, String);
      wsOp({ SendToGroup: { group: String(group), text: data.text, binary: data.binary } });
    },
    sendToAll: function (text) {
      var data = wsData(text, String);
      wsOp({ SendToAll: { text: data.text, binary: data.binary } });
    },
    addToGroup: function (group, id) { wsOp({ AddToGroup: { group: String(group), session: String(id) } }); },
    removeFromGroup: function (group, id) { wsOp({ RemoveFromGroup: { group: String(group), session: String(id) } }); },
    getGroupSize: function (group) { return host.wsQuery(JSON.stringify({ GroupSize: String(group) })); },
    getGroupMembers: function (group) { return host.wsQuery(JSON.stringify({ GroupMembers: String(group) })); },
    close: function (id, code, reason) {
      wsOp({ Close: { session: String(id), code: code === undefined ? 1000 : Number(code), reason: reason === undefined ? '' : String(reason) } });
    },
    setClientId: function (id, clientId) { wsOp({ SetClientId: { session: String(id), client_id: String(clientId) } }); }
  };
  builtins['/lib/xp/websocket'] = function () { return websocketLib; };

  // `require('@cryb/mesa')`: Mesa's Message and Dispatcher, delivering to client ids.
  function MesaMessage(op, d, t) { this.op = op; this.d = d; this.t = t; }
  function MesaDispatcher(redis, options) {
    if (redis !== null && typeof redis === 'object' && options === undefined) { options = redis; }
    options = options || {};
    this.namespace = options.namespace;
    this.sync = !!(options.sync && options.sync.enabled);
  }
  MesaDispatcher.prototype.dispatch = function (message, recipients, excluding) {
    if (!message || typeof message !== 'object') throw new TypeError('dispatch(message, recipients): message must be a Message');
    if (!Array.isArray(recipients)) throw new TypeError('dispatch(message, recipients): recipients must be an array of client ids');
    var text = JSON.stringify({ op: message.op, d: message.d, t: message.t });
    wsOp({ DispatchToClients: { text: text, recipients: recipients.map(String), excluding: (excluding || []).map(String), sync: this.sync,
      namespace: this.namespace === undefined || this.namespace === null ? null : String(this.namespace) } });
    return Promise.resolve();
  };
  var mesaLib = { Dispatcher: MesaDispatcher, Message: MesaMessage };
  builtins['@cryb/mesa'] = function () { return mesaLib; };

  // ---- sdk/net: Dirigible's WebSockets (endpoints and outbound clients) --------------
  var NET_METHODS = { open: 'onOpen', message: 'onMessage', error: 'onError', close: 'onClose' };
  // The event a handler export is running for (null outside one).
  var netEvent = null;
  // Handler exports by handler name, loaded on first use.
  var handlerCache = {};
  function handlerExports(handler) {
    if (Object.prototype.hasOwnProperty.call(handlerCache, handler)) return handlerCache[handler];
    var m = host.handlerModule(handler);
    var exported = typeof m === 'string' ? requirePath(m) : m;
    handlerCache[handler] = exported;
    return exported;
  }
  /** Calls the handler module's export for one event; `reply` gets what it returns. */
  function runNetHandler(handler, kind, message, error, from, reply) {
    var name = NET_METHODS[kind];
    if (!name) return;
    var where = 'websocket handler ' + JSON.stringify(handler) + ' ' + name;
    var exported;
    try { exported = handlerExports(String(handler)); }
    catch (e) { reportError('loading websocket handler ' + JSON.stringify(handler), e); flushDispatches(); return; }
    var fn = exported !== null && exported !== undefined ? exported[name] : undefined;
    if (typeof fn !== 'function') return;
    // Dirigible's arguments, then (a mimhost extra) the session or client id last.
    var args = kind === 'message' ? [message, from] : kind === 'error' ? [error, from] : [from];
    var outer = netEvent, result;
    netEvent = { method: name.toLowerCase(), message: kind === 'message' ? message : null, error: kind === 'error' ? error : null };
    try { result = fn.apply(exported, args); }
    catch (e) { reportError(where, e); flushDispatches(); return; }
    finally { netEvent = outer; }
    if (isThenable(result)) {
      result.then(function (v) { if (reply) reply(v); flushDispatches(); },
        function (e) { reportError(where, e); flushDispatches(); });
    } else if (reply) reply(result);
    flushDispatches();
  }
  /** One event of a session on a Dirigible endpoint; what `onMessage` returns is the reply. */
  function endpointEvent(s, ev) {
    var reply = function (v) {
      if (v === undefined || v === null) return;
      wsOp({ Reply: { session: s.id, body: typeof v === 'string' ? v : JSON.stringify(v), end: false } });
    };
    runNetHandler(s.handler, ev.kind, ev.message, ev.error, s.id, ev.kind === 'message' ? reply : null);
  }
  // Outbound clients this isolate handed out, while open or opening (id -> client).
  var clientMirror = new Map();
  // Sends a client queues before it opens; the host bounds it too (MAX_QUEUED_CLIENT_SENDS).
  var MAX_QUEUED_CLIENT_SENDS = 1024;
  function WebsocketClient(data) {
    this.id = data.id; this.uri = data.uri; this.handler = data.handler;
    Object.defineProperty(this, '_state', { value: data.open ? 'open' : 'opening', writable: true });
    Object.defineProperty(this, '_queued', { value: 0, writable: true });
  }
  WebsocketClient.prototype.send = function (message) {
    if (this._state === 'closed') {
      throw new Error('WebSocket client ' + this.id + ' (' + this.uri + ') is closed; create a new one with websockets.createWebsocket');
    }
    if (this._state === 'opening') {
      if (this._queued >= MAX_QUEUED_CLIENT_SENDS) {
        throw new Error('WebSocket client ' + this.id + ' (' + this.uri + ') is still connecting and already holds ' +
          MAX_QUEUED_CLIENT_SENDS + ' queued messages; wait for onOpen before sending more');
      }
      this._queued++;
    }
    var text = typeof message === 'string' ? message : message === undefined ? '' : JSON.stringify(message);
    host.wsClientOp(JSON.stringify({ Send: { client: this.id, text: String(text) } }));
  };
  WebsocketClient.prototype.close = function () {
    if (this._state === 'closed') return;
    this._state = 'closed';
    clientMirror.delete(this.id);
    host.wsClientOp(JSON.stringify({ Close: { client: this.id } }));
  };
  function clientFrom(data) {
    if (!data) return null;
    var c = clientMirror.get(data.id);
    if (!c) { c = new WebsocketClient(data); clientMirror.set(data.id, c); }
    return c;
  }
  function netCall(call) { return host.wsClientCall(JSON.stringify(call)); }
  var websockets = {
    createWebsocket: function (uri, handler, engine) {
      if (uri === undefined || uri === null) throw new TypeError('createWebsocket(uri, handler): uri is required');
      if (handler === undefined || handler === null) throw new TypeError('createWebsocket(uri, handler): handler is required (a module of the mim)');
      return clientFrom(netCall({ Create: { uri: String(uri), handler: String(handler) } }));
    },
    getClients: function () {
      return netCall('List').map(function (c) { return { id: c.id, uri: c.uri, handler: c.handler }; });
    },
    getClient: function (id) { return clientFrom(netCall({ Get: String(id) })); },
    getClientByHandler: function (handler) { return clientFrom(netCall({ ByHandler: String(handler) })); },
    getMessage: function () { return netEvent ? netEvent.message : null; },
    getError: function () { return netEvent ? netEvent.error : null; },
    getMethod: function () { return netEvent ? netEvent.method : null; },
    isOnOpen: function () { return !!netEvent && netEvent.method === 'onopen'; },
    isOnMessage: function () { return !!netEvent && netEvent.method === 'onmessage'; },
    isOnError: function () { return !!netEvent && netEvent.method === 'onerror'; },
    isOnClose: function () { return !!netEvent && netEvent.method === 'onclose'; }
  };
  var netLib = { websockets: websockets };
  builtins['sdk/net'] = function () { return netLib; };
  /** Entry point: one event of an outbound client, for its handler module. */
  function handleClient(ev) {
    var c = clientMirror.get(ev.client);
    if (ev.kind === 'open' && c) { if (c._state === 'opening') c._state = 'open'; c._queued = 0; }
    if (ev.kind === 'close') { if (c) c._state = 'closed'; clientMirror.delete(ev.client); }
    runNetHandler(ev.handler, ev.kind, ev.message, ev.error, ev.client, null);
  }

  /** The open sessions as JSON, for the isolate that replaces this one. */
  function exportSessions() { return JSON.stringify(Array.from(sessions.values())); }
  /** Takes over the open sessions of the isolate this one replaces. */
  function importSessions(json) { JSON.parse(json).forEach(function (info) { sessions.set(info.id, info); }); }

  // ---- outbound HTTP: context.http.request, fetch, context.ml ------------------------
  // The host makes every request (the worker opens no socket); answers come back as
  // events through `outboundHttp(id, event)`, run like any other job of the worker.
  var outbound = new Map();
  function headerObject(pairs) {
    var out = {};
    for (var i = 0; i < pairs.length; i++) out[pairs[i][0]] = pairs[i][1];
    return out;
  }
  function hasHeader(pairs, name) {
    for (var i = 0; i < pairs.length; i++) if (String(pairs[i][0]).toLowerCase() === name) return true;
    return false;
  }
  function startRequest(spec, handlers) {
    var id = host.httpRequest(JSON.stringify(spec));
    outbound.set(id, handlers);
    return id;
  }
  function callback(where, fn, value) {
    if (typeof fn !== 'function') return;
    try { fn(value); } catch (e) { reportError(where, e); }
  }
  function optionalMs(v) {
    if (v === undefined || v === null) return null;
    var n = Number(v);
    return isFinite(n) && n >= 0 ? Math.floor(n) : null;
  }
  /** `context.http.request(options)`, as mimik's edge engine offers it. */
  function httpRequest(options) {
    var o = options || {};
    var headers = [];
    if (o.headers && typeof o.headers === 'object') {
      Object.keys(o.headers).forEach(function (k) {
        var v = o.headers[k];
        if (v !== undefined && v !== null) headers.push([k, String(v)]);
      });
    }
    if (o.authorization !== undefined && o.authorization !== null) headers.push(['Authorization', String(o.authorization)]);
    var body = null;
    if (o.data !== undefined && o.data !== null) {
      if (typeof o.data === 'string') body = o.data;
      else {
        body = JSON.stringify(o.data);
        if (!hasHeader(headers, 'content-type')) headers.push(['Content-Type', 'application/json']);
      }
    }
    var mode = o.mode === 'stream' || o.mode === 'proxy' ? o.mode : 'default';
    startRequest({
      url: String(o.url), method: String(o.type || 'GET').toUpperCase(), headers: headers, body: body,
      mode: mode, outputFile: o.outputFile === undefined || o.outputFile === null ? null : String(o.outputFile),
      connectTimeoutMs: optionalMs(o.connectionTimeout), socketTimeoutMs: optionalMs(o.socketTimeout),
      errorStatus: true
    }, { kind: 'request', success: o.success, error: o.error });
  }
  function requestEvent(h, ev) {
    if (ev.Response) {
      var r = ev.Response;
      callback('http success callback', h.success, { data: r.data, status: r.head.status, headers: headerObject(r.head.headers) });
    } else if (ev.File) {
      var f = ev.File;
      callback('http success callback', h.success, { status: f.head.status, headers: headerObject(f.head.headers), outputFile: f.path, size: f.size });
    } else if (ev.Chunk) {
      var c = ev.Chunk, v = { done: false, data: c.data };
      if (c.head) { v.status = c.head.status; v.headers = headerObject(c.head.headers); }
      callback('http success callback', h.success, v);
    } else if (ev === 'End') {
      callback('http success callback', h.success, { done: true });
    } else if (ev.Failed) {
      var e = { message: ev.Failed.message };
      if (ev.Failed.answer) {
        e.status = ev.Failed.answer[0].status; e.content = ev.Failed.answer[1];
        e.headers = headerObject(ev.Failed.answer[0].headers);
      }
      callback('http error callback', h.error, e);
    }
  }
  /** Entry point: what came back for outbound request `id`. */
  function outboundHttp(id, ev) {
    var h = outbound.get(id);
    if (!h) return;
    var last = ev === 'End' || !!ev.Failed || !!ev.Response || !!ev.File;
    if (last) outbound.delete(id);
    if (h.kind === 'fetch') h.settle(ev); else requestEvent(h, ev);
    flushDispatches();
  }

  /** The `Response` a `fetch` resolves to. */
  function FetchResponse(r) {
    var pairs = r.head.headers, body = r.data;
    this.status = r.head.status;
    this.statusText = r.head.statusText;
    this.ok = this.status >= 200 && this.status < 300;
    this.url = r.head.url;
    this.redirected = false;
    this.bodyUsed = false;
    this.headers = {
      get: function (name) {
        var n = String(name).toLowerCase();
        for (var i = 0; i < pairs.length; i++) if (pairs[i][0] === n) return pairs[i][1];
        return null;
      },
      has: function (name) { return this.get(name) !== null; },
      forEach: function (fn) { pairs.forEach(function (p) { fn(p[1], p[0]); }); },
      entries: function () { return pairs.map(function (p) { return [p[0], p[1]]; })[Symbol.iterator](); }
    };
    this._body = body;
  }
  FetchResponse.prototype.text = function () { this.bodyUsed = true; return Promise.resolve(this._body); };
  FetchResponse.prototype.json = function () {
    this.bodyUsed = true;
    var body = this._body;
    return new Promise(function (resolve) { resolve(JSON.parse(body)); });
  };
  FetchResponse.prototype.arrayBuffer = function () { this.bodyUsed = true; return Promise.resolve(utf8.encode(this._body).buffer); };
  function fetchHeaders(init) {
    var out = [];
    if (!init) return out;
    if (typeof init.forEach === 'function' && !Array.isArray(init)) init.forEach(function (v, k) { out.push([String(k), String(v)]); });
    else if (Array.isArray(init)) init.forEach(function (p) { out.push([String(p[0]), String(p[1])]); });
    else Object.keys(init).forEach(function (k) { if (init[k] !== undefined && init[k] !== null) out.push([k, String(init[k])]); });
    return out;
  }
  /** `fetch(url, init)` as in browsers: resolves for any answer, rejects when none. */
  G.fetch = function fetch(input, init) {
    var i = init || {};
    var url = input && typeof input === 'object' && input.url !== undefined ? input.url : input;
    var headers = fetchHeaders(i.headers);
    var body = null;
    if (i.body !== undefined && i.body !== null) {
      if (typeof i.body === 'string') body = i.body;
      else if (i.body instanceof Uint8Array) body = utf8.decode(i.body);
      else if (G.URLSearchParams && i.body instanceof G.URLSearchParams) {
        body = i.body.toString();
        if (!hasHeader(headers, 'content-type')) headers.push(['Content-Type', 'application/x-www-form-urlencoded;charset=UTF-8']);
      } else body = String(i.body);
    }
    return new Promise(function (resolve, reject) {
      startRequest({
        url: String(url), method: String(i.method || 'GET').toUpperCase(), headers: headers, body: body,
        mode: i.redirect === 'manual' ? 'proxy' : 'default', outputFile: null,
        connectTimeoutMs: null, socketTimeoutMs: null, errorStatus: false
      }, {
        kind: 'fetch',
        settle: function (ev) {
          if (ev.Response) resolve(new FetchResponse(ev.Response));
          else reject(new TypeError('fetch failed: ' + (ev.Failed ? ev.Failed.message : 'no answer')));
        }
      });
    });
  };

  context.http = { request: httpRequest };
  context.storage.deleteFile = function (path) { host.deleteFile(String(path)); };
  function mlNotOffered(name) {
    return function (opts) {
      var message = 'context.ml.' + name + ': local models are not offered by this host ' +
        '(call a model server with context.http.request or fetch instead)';
      if (opts && typeof opts.error === 'function') G.setTimeout(function () { opts.error({ message: message }); }, 0);
      else throw new Error(message);
    };
  }
  context.ml = { chatCompletions: mlNotOffered('chatCompletions'), embeddings: mlNotOffered('embeddings') };

  G.__mimhost = {
    hasWsHandler: function () { return !!wsHandler(); },
    exportSessions: exportSessions,
    importSessions: importSessions,
    handleHttp: handleHttp,
    handleWs: handleWs,
    handleClient: handleClient,
    runTimers: runTimers,
    makeRequire: makeRequire,
    builtins: builtins,
    outboundHttp: outboundHttp
  };
});
