// The mimhost web console: a dependency-free page over the MCM API (/mcm/v1).
// The token lives in sessionStorage and goes with every call as
// `Authorization: Bearer`; the page sets no cookie and runs no inline script.
'use strict';

const API = '/mcm/v1';
const KEY = 'mimhost.token';
const $ = (sel) => document.querySelector(sel);
const state = { containers: [], last: null, rates: {}, view: null, logAbort: null, timer: null };

/** An API call with the token; a 401 signs out. Resolves to {status, body}. */
async function api(method, path, body, headers) {
  const token = sessionStorage.getItem(KEY) || '';
  const init = { method, headers: Object.assign({ Authorization: 'Bearer ' + token }, headers || {}), credentials: 'omit' };
  if (body !== undefined) init.body = body;
  const resp = await fetch(API + path, init);
  const text = await resp.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { json = null; }
  if (resp.status === 401) signOut('401: ' + ((json && json.error && json.error.message) || 'wrong or missing token'));
  return { status: resp.status, body: json };
}

function message(reply) {
  return (reply.body && reply.body.error && reply.body.error.message) || ('HTTP ' + reply.status);
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') node.className = v; else if (k.startsWith('data-')) node.setAttribute(k, v); else node[k] = v;
  }
  for (const c of children) node.append(c === null || c === undefined ? '' : c);
  return node;
}

function show(id) {
  for (const m of ['signin', 'list', 'detail']) $('#' + m).hidden = m !== id;
  $('#signout').hidden = id === 'signin';
  document.body.dataset.view = id;
}

function signOut(why) {
  sessionStorage.removeItem(KEY);
  stopLog();
  clearInterval(state.timer);
  state.timer = null;
  $('#signin-error').textContent = why || '';
  show('signin');
}

async function signIn(token) {
  sessionStorage.setItem(KEY, token.trim());
  const reply = await api('GET', '/containers');
  if (reply.status === 200) { $('#token').value = ''; $('#signin-error').textContent = ''; route(); }
  else if (reply.status !== 401) $('#signin-error').textContent = message(reply);
}

// ---- the container list -----------------------------------------------------------

async function refresh() {
  const [list, stats] = await Promise.all([api('GET', '/containers'), api('GET', '/stats')]);
  if (list.status !== 200 || stats.status !== 200) return;
  state.containers = list.body.data;
  const now = stats.body;
  const byName = {};
  for (const s of now.data) byName[s.name] = s;
  if (state.last) {
    const secs = Math.max(0.001, (now.at - state.last.at) / 1000);
    for (const s of now.data) {
      const before = state.last.byName[s.name];
      state.rates[s.name] = before ? Math.max(0, s.requests - before.requests) / secs : 0;
    }
  }
  state.last = { at: now.at, byName };
  if (state.view === 'list') renderList(byName);
  else if (state.view) renderDetail(state.view);
}

function renderList(stats) {
  const body = $('#containers tbody');
  body.replaceChildren(...state.containers.map((c) => {
    const s = stats[c.name] || {};
    const rate = state.rates[c.name];
    const row = el('tr', { class: 'row', 'data-name': c.name },
      el('td', {}, el('a', { href: '#/c/' + encodeURIComponent(c.name) }, c.name)),
      el('td', {}, c.source), el('td', {}, c.imageId ? c.imageId.slice(0, 12) : '-'),
      el('td', {}, c.basePath), el('td', { class: 'state-' + c.state }, c.state),
      el('td', {}, s.workerRestarts ?? '-'), el('td', {}, rate === undefined ? '…' : rate.toFixed(1)),
      el('td', {}, s.errors ?? '-'), el('td', {}, s.openSessions ?? '-'));
    row.addEventListener('click', (e) => { if (e.target.tagName !== 'A') location.hash = '#/c/' + encodeURIComponent(c.name); });
    return row;
  }));
  document.body.dataset.containers = state.containers.map((c) => c.name).join(' ');
}

// ---- deploying -------------------------------------------------------------------

/** A one-file ustar archive holding `index.js` (a dropped .js becomes an image). */
function tarOf(bytes) {
  const header = new Uint8Array(512);
  const put = (text, at) => { for (let i = 0; i < text.length; i++) header[at + i] = text.charCodeAt(i); };
  const octal = (n, width) => n.toString(8).padStart(width - 1, '0');
  put('index.js', 0); put(octal(0o644, 8), 100); put(octal(0, 8), 108); put(octal(0, 8), 116);
  put(octal(bytes.length, 12), 124); put(octal(Math.floor(Date.now() / 1000), 12), 136);
  put('        ', 148); put('0', 156); put('ustar', 257); put('00', 263);
  let sum = 0;
  for (const b of header) sum += b;
  put(octal(sum, 7) + '\0', 148);
  const padded = Math.ceil(bytes.length / 512) * 512;
  const out = new Uint8Array(512 + padded + 1024);
  out.set(header, 0);
  out.set(bytes, 512);
  return out;
}

function baseName(file) {
  return file.name.replace(/\.(tar\.gz|tgz|tar|mjs|js)$/i, '').replace(/[^A-Za-z0-9_.-]/g, '-').replace(/^[^A-Za-z0-9]+/, '');
}

/** Uploads `file` as an image and creates container `name`, or hot swaps it. */
async function deploy(file, name, status) {
  status.className = 'status';
  status.textContent = 'uploading ' + file.name + '…';
  const bytes = new Uint8Array(await file.arrayBuffer());
  const isJs = /\.(m?js)$/i.test(file.name);
  const image = isJs ? new Blob([tarOf(bytes)], { type: 'application/x-tar' }) : file;
  const form = new FormData();
  form.append('name', name);
  form.append('image', image, isJs ? name + '.tar' : file.name);
  const up = await api('POST', '/images', form);
  if (up.status !== 201) return fail(status, 'upload failed: ' + message(up));
  const exists = state.containers.some((c) => c.name === name);
  const reply = exists
    ? await api('PUT', '/containers/' + encodeURIComponent(name), JSON.stringify({ image: up.body.id }), { 'Content-Type': 'application/json' })
    : await api('POST', '/containers', JSON.stringify({ name, image: up.body.id }), { 'Content-Type': 'application/json' });
  if (reply.status !== 200 && reply.status !== 201) return fail(status, (exists ? 'hot swap' : 'create') + ' failed: ' + message(reply));
  status.textContent = (exists ? 'hot swapped ' : 'deployed ') + name + ' (image ' + up.body.id.slice(0, 12) + ') at ' + reply.body.basePath;
  await refresh();
  return true;
}

function fail(status, text) {
  status.className = 'status bad';
  status.textContent = text;
  return false;
}

/** Wires a drop zone and its file input to `onFile`. */
function dropZone(zone, input, onFile) {
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) onFile(file);
  });
  input.addEventListener('change', () => { if (input.files[0]) onFile(input.files[0]); input.value = ''; });
}

// ---- one container ------------------------------------------------------------------

function row(k, v) { return el('tr', {}, el('th', {}, k), el('td', {}, v)); }

async function renderDetail(name) {
  const c = state.containers.find((x) => x.name === name);
  if (!c) { $('#d-state').textContent = 'not found (removed?)'; return; }
  $('#d-name').textContent = c.name;
  $('#d-state').textContent = c.state + ' · ' + c.source;
  $('#d-state').className = 'state-' + c.state;
  $('#d-facts').textContent = 'base path ' + c.basePath + (c.imageId ? ' · image ' + c.imageId.slice(0, 12) : '') + (c.created ? ' · created ' + c.created : '');
  $('#d-drop').hidden = c.source !== 'api';
  const env = Object.entries(c.env || {}).map(([k, v]) => row(k, v));
  $('#env tbody').replaceChildren(...(env.length ? env : [el('tr', {}, el('td', { class: 'note' }, 'no env'))]));
  const [stats, sessions] = await Promise.all([
    api('GET', '/containers/' + encodeURIComponent(name) + '/stats'),
    api('GET', '/containers/' + encodeURIComponent(name) + '/sessions'),
  ]);
  if (stats.status === 200) {
    const s = stats.body;
    const rate = state.rates[name];
    $('#counters tbody').replaceChildren(row('requests', s.requests), row('requests/s', rate === undefined ? '…' : rate.toFixed(1)),
      row('errors (5xx)', s.errors), row('open sessions', s.openSessions), row('worker restarts', s.workerRestarts));
    drawRoutes(s.recent);
  }
  if (sessions.status === 200) {
    const rows = sessions.body.data.map((x) => el('tr', {},
      el('td', {}, x.id), el('td', {}, x.peer), el('td', {}, x.path), el('td', {}, x.kind),
      el('td', {}, x.groups.join(', ')), el('td', {}, x.clientId), el('td', {}, x.queuedFrames)));
    $('#sessions tbody').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { class: 'note', colSpan: 7 }, 'no open sessions'))]));
  }
}

/** One small line chart per route of the recent requests' latency. */
function drawRoutes(samples) {
  const byRoute = new Map();
  for (const s of samples) { if (!byRoute.has(s.route)) byRoute.set(s.route, []); byRoute.get(s.route).push(s); }
  const rows = [...byRoute.entries()].slice(-12).map(([route, list]) => {
    const canvas = el('canvas', { width: 360, height: 40 });
    const g = canvas.getContext('2d');
    const top = Math.max(...list.map((s) => s.ms));
    const max = Math.max(1, top);
    const step = list.length > 1 ? 356 / (list.length - 1) : 0;
    g.strokeStyle = '#2f6fed';
    g.beginPath();
    list.forEach((s, i) => { const x = 2 + i * step, y = 38 - (s.ms / max) * 34; if (i) g.lineTo(x, y); else g.moveTo(x, y); });
    g.stroke();
    g.fillStyle = '#2f6fed';
    if (list.length === 1) g.fillRect(178, 36 - (list[0].ms / max) * 34, 4, 4);
    g.fillStyle = '#b3261e';
    list.forEach((s, i) => { if (s.status >= 500) g.fillRect(1 + i * step, 34, 3, 4); });
    const sorted = list.map((s) => s.ms).sort((a, b) => a - b);
    const p50 = sorted[Math.floor(sorted.length / 2)];
    const p95 = sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.95))];
    return el('div', { class: 'route' }, el('span', { class: 'label', title: route }, route), canvas,
      el('span', {}, list.length + ' req · p50 ' + p50.toFixed(1) + ' · p95 ' + p95.toFixed(1) + ' · max ' + top.toFixed(1)));
  });
  $('#routes').replaceChildren(...(rows.length ? rows : [el('p', { class: 'note' }, 'no requests yet')]));
}

function appendLog(line) {
  const log = $('#log');
  const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  const item = el('li', { class: line.level },
    el('time', {}, line.time.slice(11, 23)), ' ', el('span', { class: 'src' }, '[' + line.source + (line.cause ? ':' + line.cause : '') + ']'),
    ' ' + line.level.toUpperCase() + ' ' + line.message);
  log.append(item);
  while (log.children.length > 1000) log.firstChild.remove();
  if (stick) log.scrollTop = log.scrollHeight;
}

function stopLog() {
  if (state.logAbort) state.logAbort.abort();
  state.logAbort = null;
}

/** Follows the container's log (server-sent events read through fetch, so the token
 *  goes in a header: EventSource cannot send one). */
async function followLog(name) {
  stopLog();
  const abort = new AbortController();
  state.logAbort = abort;
  $('#log').replaceChildren();
  $('#log-state').textContent = '(connecting)';
  try {
    const resp = await fetch(API + '/containers/' + encodeURIComponent(name) + '/logs?follow=true&limit=200', {
      headers: { Authorization: 'Bearer ' + (sessionStorage.getItem(KEY) || ''), Accept: 'text/event-stream' },
      credentials: 'omit', signal: abort.signal,
    });
    if (resp.status === 401) return signOut('401: wrong or missing token');
    if (!resp.ok) { $('#log-state').textContent = '(' + resp.status + ')'; return; }
    $('#log-state').textContent = '(live)';
    document.body.dataset.log = 'live';
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = 'message', data = '';
        for (const l of block.split('\n')) {
          if (l.startsWith('event: ')) event = l.slice(7);
          else if (l.startsWith('data: ')) data += l.slice(6);
        }
        if (event === 'log') appendLog(JSON.parse(data));
        else if (event === 'end') $('#log-state').textContent = '(ended: ' + JSON.parse(data).reason + ')';
      }
    }
    if (state.logAbort === abort) document.body.dataset.log = 'ended';
  } catch (e) {
    if (!abort.signal.aborted) $('#log-state').textContent = '(disconnected: ' + e.message + ')';
  }
}

// ---- navigation -------------------------------------------------------------------

function route() {
  if (!sessionStorage.getItem(KEY)) { signOut($('#signin-error').textContent); return; }
  const m = location.hash.match(/^#\/c\/(.+)$/);
  const name = m ? decodeURIComponent(m[1]) : null;
  if ((name || 'list') !== state.view || !state.timer) {
    stopLog();
    state.view = name || 'list';
    show(name ? 'detail' : 'list');
    if (name) { $('#remove').textContent = 'Remove'; $('#d-status').textContent = ''; followLog(name); }
  }
  clearInterval(state.timer);
  state.timer = setInterval(refresh, 2000);
  refresh();
}

function init() {
  $('#host').textContent = location.host;
  $('#signin-form').addEventListener('submit', (e) => { e.preventDefault(); signIn($('#token').value); });
  $('#signout').addEventListener('click', () => signOut('signed out'));
  dropZone($('#drop'), $('#file'), (file) => deploy(file, $('#deploy-name').value.trim() || baseName(file), $('#deploy-status')));
  dropZone($('#d-drop'), $('#d-file'), (file) => deploy(file, state.view, $('#d-status')));
  $('#remove').addEventListener('click', async () => {
    const button = $('#remove');
    if (button.textContent === 'Remove') { button.textContent = 'Really remove ' + state.view + '?'; return; }
    const name = state.view;
    const reply = await api('DELETE', '/containers/' + encodeURIComponent(name));
    if (reply.status !== 200) { fail($('#d-status'), 'remove failed: ' + message(reply)); return; }
    location.hash = '#/';
    $('#deploy-status').className = 'status';
    $('#deploy-status').textContent = 'removed ' + name;
  });
  window.addEventListener('hashchange', route);
  route();
}

init();
