//! The native `response` object, driven in-process through a real `Isolate` with a host
//! that records what reaches it: every method mims use, in the order the host sees
//! their effects, and the odd inputs (wrong `this`, throwing `toString`, re-entrant
//! calls, bytes, arrays) that must give an answer or a JS error and never a panic.

use mimhost_bindings::{
    DiscardStorage, HostApi, HttpRequest, Isolate, LogLevel, MimSpec, OutboundHttpRequest, Storage,
    WsAnswer, WsOp, WsQuery,
};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

/// What reached the host, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Full(u64, u16, Vec<(String, String)>, Vec<u8>),
    Start(u64, u16, Vec<(String, String)>),
    Chunk(u64, Vec<u8>),
    End(u64),
    Accept(u64, String, Vec<String>),
    Dispatch(Vec<String>),
    Log(String),
}

#[derive(Default)]
struct Recorder {
    seen: RefCell<Vec<Seen>>,
    store: DiscardStorage,
}

impl HostApi for Recorder {
    fn http_start(&self, id: u64, status: u16, headers: Vec<(String, String)>) {
        self.seen
            .borrow_mut()
            .push(Seen::Start(id, status, headers));
    }
    fn http_chunk(&self, id: u64, chunk: Vec<u8>) {
        self.seen.borrow_mut().push(Seen::Chunk(id, chunk));
    }
    fn http_end(&self, id: u64) {
        self.seen.borrow_mut().push(Seen::End(id));
    }
    fn http_full(&self, id: u64, status: u16, headers: Vec<(String, String)>, body: Vec<u8>) {
        self.seen
            .borrow_mut()
            .push(Seen::Full(id, status, headers, body));
    }
    fn dispatch(&self, frames: Vec<String>) {
        self.seen.borrow_mut().push(Seen::Dispatch(frames));
    }
    fn ws_accept(&self, id: u64, data: String, protocols: Vec<String>) {
        self.seen
            .borrow_mut()
            .push(Seen::Accept(id, data, protocols));
    }
    fn ws(&self, _: WsOp) {}
    fn ws_query(&self, _: WsQuery) -> WsAnswer {
        WsAnswer::Size(0)
    }
    fn flush(&self) {}
    fn log(&self, level: LogLevel, message: &str) {
        if level == LogLevel::Uncaught {
            self.seen.borrow_mut().push(Seen::Log(message.to_string()));
        }
    }
    fn storage(&self) -> &dyn Storage {
        &self.store
    }
    fn outbound_http(&self, _: OutboundHttpRequest) -> u64 {
        0
    }
    fn delete_file(&self, _: &str) {}
}

/// A mim folder holding `index.js` = `code`, removed when dropped.
struct Mim(PathBuf);

impl Mim {
    fn new(code: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mimhost-response-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("index.js"), code).expect("write index.js");
        Self(dir)
    }
}

impl Drop for Mim {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load(code: &str) -> (Isolate, Rc<Recorder>, Mim) {
    let mim = Mim::new(code);
    let mut env = BTreeMap::new();
    env.insert("WEBSOCKET_SUPPORT".to_string(), "true".to_string());
    let spec = MimSpec {
        name: "t".into(),
        root: mim.0.clone(),
        entry: PathBuf::from("index.js"),
        env,
        base_path: "/t".into(),
        http_port: 8083,
        node_id: "test".into(),
    };
    let host = Rc::new(Recorder::default());
    let isolate = Isolate::load(&spec, host.clone()).expect("the mim loads");
    (isolate, host, mim)
}

fn get(path: &str) -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        url: path.into(),
        path: path.into(),
        full_path: format!("/t{path}"),
        scheme: "http".into(),
        host: "127.0.0.1".into(),
        port: 8083,
        remote_address: "127.0.0.1".into(),
        ..Default::default()
    }
}

/// Runs one GET of `path` and returns what the host saw for it.
fn run(code: &str, path: &str) -> Vec<Seen> {
    let (mut isolate, host, _mim) = load(code);
    isolate.handle_http(7, get(path));
    let seen = host.seen.borrow().clone();
    seen
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn full(status: u16, headers: &[(&str, &str)], body: &str) -> Seen {
    Seen::Full(7, status, pairs(headers), body.as_bytes().to_vec())
}

#[test]
fn end_sends_status_headers_and_body_in_one_go_with_a_sniffed_type() {
    let code = r#"
app.get('/json', (q, r) => r.end('{"a":1}'));
app.get('/text', (q, r) => r.end('hi'));
app.get('/empty', (q, r) => r.end());
app.get('/number', (q, r) => r.end(42));
app.get('/object', (q, r) => r.end({ a: 1 }));
"#;
    assert_eq!(
        run(code, "/json"),
        [full(
            200,
            &[("content-type", "application/json")],
            "{\"a\":1}"
        )]
    );
    assert_eq!(
        run(code, "/text"),
        [full(
            200,
            &[("content-type", "text/plain; charset=utf-8")],
            "hi"
        )]
    );
    assert_eq!(run(code, "/empty"), [full(200, &[], "")]);
    assert_eq!(
        run(code, "/number"),
        [full(
            200,
            &[("content-type", "text/plain; charset=utf-8")],
            "42"
        )]
    );
    assert_eq!(
        run(code, "/object"),
        // `String({})` starts with `[`, so it is sniffed as JSON (as it always was).
        [full(
            200,
            &[("content-type", "application/json")],
            "[object Object]"
        )]
    );
}

#[test]
fn headers_are_case_insensitive_kept_as_set_and_sent_in_order() {
    let code = r#"
app.get('/', (q, r) => {
  r.setHeader('X-One', 1);
  r.setHeader('Set-Cookie', ['a=1', 'b=2']);
  r.setHeader('X-Gone', 'x');
  r.setHeader('x-none', undefined);
  r.setHeader('x-null', null);
  const same = r.getHeader('set-cookie');
  r.removeHeader('X-GONE');
  r.setHeader('X-ONE', 'one');
  r.end([typeof r.getHeader('x-one'), Array.isArray(same), r.getHeader('x-gone') === undefined,
    r.setHeader('a', 'b') === r].join(','));
});
"#;
    assert_eq!(
        run(code, "/"),
        [full(
            200,
            &[
                ("x-one", "one"),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("a", "b"),
                ("content-type", "text/plain; charset=utf-8"),
            ],
            "string,true,true,true"
        )]
    );
}

#[test]
fn status_chains_write_head_sets_several_and_status_code_falls_back_to_200() {
    let code = r#"
app.get('/chain', (q, r) => r.status(201).setHeader('content-type', 'text/csv').end('a,b'));
app.get('/head', (q, r) => r.writeHead(202, { 'X-A': 'a', 'X-B': ['b', 'c'] }).end());
app.get('/nan', (q, r) => { r.statusCode = 'nope'; r.end(); });
app.get('/own', (q, r) => r.end(JSON.stringify(Object.keys(r)) + r.statusCode));
"#;
    assert_eq!(
        run(code, "/chain"),
        [full(201, &[("content-type", "text/csv")], "a,b")]
    );
    assert_eq!(
        run(code, "/head"),
        [full(202, &[("x-a", "a"), ("x-b", "b"), ("x-b", "c")], "")]
    );
    assert_eq!(run(code, "/nan"), [full(200, &[], "")]);
    assert_eq!(
        run(code, "/own"),
        [full(
            200,
            &[("content-type", "application/json")],
            "[\"statusCode\"]200"
        )]
    );
}

#[test]
fn send_and_json_pick_json_for_objects_and_keep_a_type_already_set() {
    let code = r#"
app.get('/send-object', (q, r) => r.send({ a: [1] }));
app.get('/send-text', (q, r) => r.send('plain'));
app.get('/json-typed', (q, r) => { r.setHeader('Content-Type', 'application/vnd.x+json'); r.json(true); });
"#;
    assert_eq!(
        run(code, "/send-object"),
        [full(
            200,
            &[("content-type", "application/json")],
            "{\"a\":[1]}"
        )]
    );
    assert_eq!(
        run(code, "/send-text"),
        [full(
            200,
            &[("content-type", "text/plain; charset=utf-8")],
            "plain"
        )]
    );
    assert_eq!(
        run(code, "/json-typed"),
        [full(
            200,
            &[("content-type", "application/vnd.x+json")],
            "true"
        )]
    );
}

#[test]
fn bytes_are_sent_as_they_are() {
    let code = r#"
app.get('/u8', (q, r) => r.end(new Uint8Array([0, 255, 1]).subarray(1)));
app.get('/buffer', (q, r) => r.end(new Uint8Array([9, 8]).buffer));
app.get('/stream', (q, r) => { r.write(new Uint8Array([1])); r.end(new Uint8Array([2])); });
"#;
    assert_eq!(
        run(code, "/u8"),
        [Seen::Full(
            7,
            200,
            pairs(&[("content-type", "application/octet-stream")]),
            vec![255, 1]
        )]
    );
    assert_eq!(
        run(code, "/buffer"),
        [Seen::Full(
            7,
            200,
            pairs(&[("content-type", "application/octet-stream")]),
            vec![9, 8]
        )]
    );
    assert_eq!(
        run(code, "/stream"),
        [
            Seen::Start(
                7,
                200,
                pairs(&[("content-type", "text/plain; charset=utf-8")])
            ),
            Seen::Chunk(7, vec![1]),
            Seen::Chunk(7, vec![2]),
            Seen::End(7),
        ]
    );
}

#[test]
fn write_streams_and_calls_after_the_end_are_ignored() {
    let code = r#"
app.get('/', (q, r) => {
  r.statusCode = 203;
  r.setHeader('content-type', 'text/event-stream');
  const a = r.write('a');
  r.write('');
  r.setHeader('x-late', 'ignored');
  r.end('b');
  r.end('again');
  const b = r.write('c');
  r.send('more');
  log.info(a + ',' + b);
});
app.get('/twice', (q, r) => { r.end('one'); r.end('two'); r.write('three'); });
"#;
    assert_eq!(
        run(code, "/"),
        [
            Seen::Start(7, 203, pairs(&[("content-type", "text/event-stream")])),
            Seen::Chunk(7, b"a".to_vec()),
            Seen::Chunk(7, b"b".to_vec()),
            Seen::End(7),
        ]
    );
    assert_eq!(
        run(code, "/twice"),
        [full(
            200,
            &[("content-type", "text/plain; charset=utf-8")],
            "one"
        )]
    );
}

#[test]
fn a_handler_that_throws_gets_a_500_unless_it_already_answered() {
    let code = r#"
app.get('/throw', (q, r) => { r.setHeader('x-kept', 'no'); r.statusCode = 418; throw new Error('boom'); });
app.get('/after-write', (q, r) => { r.write('part'); throw new Error('late'); });
app.get('/after-end', (q, r) => { r.end('done'); throw new Error('later'); });
app.get('/reject', (q, r) => Promise.reject(new Error('async boom')));
"#;
    let seen = run(code, "/throw");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(matches!(&seen[0], Seen::Log(m) if m.contains("boom")));
    assert_eq!(
        seen[1],
        full(
            500,
            &[("content-type", "application/json")],
            r#"{"error":{"status":500,"message":"boom"}}"#
        )
    );
    let seen = run(code, "/after-write");
    assert!(
        matches!(
            seen.as_slice(),
            [Seen::Start(..), Seen::Chunk(..), Seen::Log(_), Seen::End(7)]
        ),
        "{seen:?}"
    );
    let seen = run(code, "/after-end");
    assert!(
        matches!(seen.as_slice(), [Seen::Full(7, 200, ..), Seen::Log(_)]),
        "{seen:?}"
    );
    let seen = run(code, "/reject");
    assert!(
        matches!(seen.as_slice(), [Seen::Log(m), Seen::Full(7, 500, ..)] if m.contains("async boom")),
        "{seen:?}"
    );
}

#[test]
fn odd_callers_get_errors_not_panics() {
    let code = r#"
app.get('/detached', (q, r) => { const end = r.end; end('x'); });
app.get('/other', (q, r) => { r.end.call({}, 'x'); });
app.get('/reenter', (q, r) => {
  r.setHeader('x-evil', { toString() { r.setHeader('x-more', 'y'); r.removeHeader('x-evil'); return 'v'; } });
  r.end('ok');
});
app.get('/body-reenter', (q, r) => r.end({ toString() { r.end('inner'); r.write('w'); return 'outer'; } }));
app.get('/bad-name', (q, r) => { r.setHeader(Symbol('s'), 'x'); });
"#;
    for path in ["/detached", "/other", "/bad-name"] {
        let seen = run(code, path);
        assert!(
            matches!(seen.as_slice(), [Seen::Log(_), Seen::Full(7, 500, ..)]),
            "{path}: {seen:?}"
        );
    }
    assert_eq!(
        run(code, "/reenter"),
        [full(
            200,
            &[
                ("x-evil", "v"),
                ("content-type", "text/plain; charset=utf-8")
            ],
            "ok"
        )]
    );
    assert_eq!(
        run(code, "/body-reenter"),
        [full(
            200,
            &[("content-type", "text/plain; charset=utf-8")],
            "outer"
        )]
    );
}

#[test]
fn dispatches_leave_before_the_answer_they_preceded() {
    let code = r#"
app.get('/', (q, r) => {
  context.dispatchWebSocketEvent({ type: 'one', message: 1 });
  r.end('x');
  context.dispatchWebSocketEvent({ type: 'two' });
});
"#;
    assert_eq!(
        run(code, "/"),
        [
            Seen::Dispatch(vec![r#"{"type":"one","message":1}"#.into()]),
            full(200, &[("content-type", "text/plain; charset=utf-8")], "x"),
            Seen::Dispatch(vec![r#"{"type":"two"}"#.into()]),
        ]
    );
}

#[test]
fn controllers_answer_through_the_same_object() {
    let code = r#"
exports.get = (req) => ({ status: 201, headers: { 'X-A': 'a', 'Content-Type': 'text/x' }, body: 'c' });
"#;
    assert_eq!(
        run(code, "/"),
        [full(201, &[("x-a", "a"), ("content-type", "text/x")], "c")]
    );
    let code = "exports.get = () => ({ body: { a: 1 } }); exports.post = () => 'text';";
    assert_eq!(
        run(code, "/"),
        [full(
            200,
            &[("content-type", "application/json")],
            "{\"a\":1}"
        )]
    );
    let code = "exports.get = () => ({ webSocket: { data: { u: 1 }, subProtocols: ['p'] } });";
    let (mut isolate, host, _mim) = load(code);
    let mut upgrade = get("/");
    upgrade.web_socket = true;
    isolate.handle_http(9, upgrade);
    assert_eq!(
        host.seen.borrow().as_slice(),
        [Seen::Accept(9, r#"{"u":1}"#.into(), vec!["p".into()])]
    );
    let seen = run("exports.post = () => 'x';", "/");
    assert_eq!(
        seen,
        [full(
            404,
            &[("content-type", "application/json")],
            r#"{"error":{"status":404,"message":"no handler for GET / in t"}}"#
        )]
    );
}

#[test]
fn each_request_gets_its_own_response_and_later_ends_reach_the_right_one() {
    let code = r#"
const waiting = [];
app.get('/wait', (q, r) => { waiting.push(r); });
app.get('/go', (q, r) => { waiting.forEach((w, i) => w.status(200 + i).end('w' + i)); r.end('go'); });
"#;
    let (mut isolate, host, _mim) = load(code);
    isolate.handle_http(1, get("/wait"));
    isolate.handle_http(2, get("/wait"));
    isolate.handle_http(3, get("/go"));
    let plain = pairs(&[("content-type", "text/plain; charset=utf-8")]);
    assert_eq!(
        host.seen.borrow().as_slice(),
        [
            Seen::Full(1, 200, plain.clone(), b"w0".to_vec()),
            Seen::Full(2, 201, plain.clone(), b"w1".to_vec()),
            Seen::Full(3, 200, plain, b"go".to_vec()),
        ]
    );
}
