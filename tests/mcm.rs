//! The MCM REST API (SPEC 9) and `mimhost deploy/pack/ls/rm`: seed 000's curl deploy,
//! every error code, hostile tars, hot swap, persistence across restarts and
//! `kill -9`, and the CLI end to end.

#[path = "support/mod.rs"]
mod support;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use support::{send, Host, Mims, Reply, TOKEN};

/// Seed 000's route-style mim: `POST /notify` dispatches an event and answers `{"sent":true}`.
const NOTIFY_MIM: &str = r#"
app.post('/notify', (request, response) => {
  context.dispatchWebSocketEvent({
    type: 'notification',
    message: 'New data available'
  });
  response.end(JSON.stringify({ sent: true }));
});
app.get('/env', (request, response) => response.end(context.env.GREETING || 'none'));
"#;

/// A mim answering `GET /version` with `version`, and keeping a counter in storage.
fn versioned(version: &str) -> String {
    format!(
        "app.get('/version', (request, response) => response.end('{version}'));\n\
         app.post('/count', (request, response) => {{\n\
           var n = Number(context.storage.getItem('n') || '0') + 1;\n\
           context.storage.setItem('n', String(n));\n\
           response.end(String(n));\n\
         }});\n\
         app.get('/count', (request, response) => response.end(context.storage.getItem('n') || '0'));\n"
    )
}

// ---------- building images ----------

/// A tar header for a regular file (or other type) with `path` written raw, so
/// hostile names (`/abs`, `../x`) get in unchanged.
fn raw_header(path: &str, size: u64, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    {
        let name = &mut h.as_gnu_mut().expect("gnu header").name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
    }
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(kind);
    h.set_cksum();
    h
}

/// A tar builder fed with raw headers.
struct TarOut(tar::Builder<Vec<u8>>);

impl TarOut {
    fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }

    fn file(mut self, path: &str, data: &[u8]) -> Self {
        let h = raw_header(path, data.len() as u64, tar::EntryType::Regular);
        self.0.append(&h, data).expect("append file");
        self
    }

    fn special(mut self, path: &str, kind: tar::EntryType, link: Option<&str>) -> Self {
        let mut h = raw_header(path, 0, kind);
        if let Some(target) = link {
            h.set_link_name(target).expect("link name");
            h.set_cksum();
        }
        self.0.append(&h, &[][..]).expect("append special");
        self
    }

    fn done(self) -> Vec<u8> {
        self.0.into_inner().expect("finish tar")
    }
}

/// A plain tar with `index.js` = `code`.
fn plain_tar(code: &str) -> Vec<u8> {
    TarOut::new().file("index.js", code.as_bytes()).done()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip finish")
}

/// A `docker save` tar: manifest.json with `tags`, a config and one layer holding `code`.
fn docker_tar(tags: &[&str], code: &str) -> Vec<u8> {
    let layer = plain_tar(code);
    let manifest = json!([{ "Config": "cfg.json", "RepoTags": tags, "Layers": ["abc/layer.tar"] }])
        .to_string();
    TarOut::new()
        .file("cfg.json", br#"{"os":"linux"}"#)
        .file("abc/layer.tar", &layer)
        .file("manifest.json", manifest.as_bytes())
        .done()
}

/// A multipart body: `(field, file name, content)` parts.
fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----mimhost-test-boundary-7d1f";
    let mut body = Vec::new();
    for (field, file, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{field}\"; filename=\"{f}\"\r\nContent-Type: application/x-tar\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{field}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

// ---------- talking to the API ----------

fn authed(host: &Host, method: Method, path: &str) -> reqwest::RequestBuilder {
    host.request(method, path).bearer_auth(TOKEN)
}

/// Uploads `tar` as file `file` with an optional `name` field.
async fn upload(host: &Host, file: &str, name: Option<&str>, tar: &[u8]) -> Reply {
    let mut parts: Vec<(&str, Option<&str>, &[u8])> = Vec::new();
    if let Some(n) = name {
        parts.push(("name", None, n.as_bytes()));
    }
    parts.push(("image", Some(file), tar));
    let (ct, body) = multipart(&parts);
    send(
        authed(host, Method::POST, "/mcm/v1/images")
            .header("content-type", ct)
            .body(body),
    )
    .await
}

async fn create(host: &Host, body: Value) -> Reply {
    send(authed(host, Method::POST, "/mcm/v1/containers").json(&body)).await
}

async fn api(host: &Host, method: Method, path: &str) -> Reply {
    send(authed(host, method, path)).await
}

/// Uploads a plain tar of `code` as `name` and returns the image id.
async fn image_of(host: &Host, name: &str, code: &str) -> String {
    let reply = upload(host, &format!("{name}.tar"), Some(name), &plain_tar(code)).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    reply.json()["id"].as_str().expect("image id").to_string()
}

/// Uploads `code` and starts it as container `name` with `env`.
async fn deploy(host: &Host, name: &str, code: &str, env: Value) -> Value {
    let image = image_of(host, &format!("{name}-img"), code).await;
    let reply = create(host, json!({ "name": name, "image": image, "env": env })).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    reply.json()
}

// ---------- tests ----------

#[tokio::test(flavor = "multi_thread")]
async fn seed_000_curl_deploy_serves_notify() {
    let mims = Mims::new();
    let host = Host::start(&mims.path()).await;
    let reply = upload(&host, "my-mim-v1.tar", None, &plain_tar(NOTIFY_MIM)).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let image = reply.json();
    assert_eq!(image["name"], "my-mim-v1");
    assert_eq!(image["repoTags"], json!(["my-mim-v1:latest"]));
    assert!(image["digest"].as_str().unwrap().starts_with("sha256:"));
    for key in ["id", "size", "created"] {
        assert!(!image[key].is_null(), "image lacks {key}: {image}");
    }

    // The curl command of seed 000, byte for byte (with a token).
    let body = r#"{
"name": "my-mim",
"image": "my-mim-v1",
"env": {
"MCM.BASE_API_PATH": "/my-mim/v1",
"WEBSOCKET_SUPPORT": "true"
}
}"#;
    let reply = send(
        host.request(Method::POST, "/mcm/v1/containers")
            .header("Content-Type", "application/json")
            .header("Authorization", format!("Bearer {TOKEN}"))
            .body(body),
    )
    .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let c = reply.json();
    assert_eq!(c["name"], "my-mim");
    assert_eq!(c["id"], "my-mim");
    assert_eq!(c["image"], "my-mim-v1");
    assert_eq!(c["imageId"], image["id"]);
    assert_eq!(c["state"], "started");
    assert_eq!(c["basePath"], "/my-mim/v1");
    assert_eq!(c["env"]["WEBSOCKET_SUPPORT"], "true");
    assert!(c["created"].is_string());

    // Seed 000's browser client: the dispatch channel receives the event.
    let (mut client, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws/my-mim/v1", host.addr()))
            .await
            .expect("the dispatch channel of the deployed container accepts");
    let notify = host.post("/my-mim/v1/notify", "").await;
    assert_eq!(notify.status, 200, "{notify:?}");
    assert_eq!(notify.json(), json!({ "sent": true }));
    let event = next_text(&mut client).await;
    assert_eq!(
        serde_json::from_str::<Value>(&event).unwrap(),
        json!({ "type": "notification", "message": "New data available" })
    );

    let one = api(&host, Method::GET, "/mcm/v1/containers/my-mim").await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["basePath"], "/my-mim/v1");
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_save_images_are_named_by_repo_tags_and_managed() {
    let mims = Mims::new().with("dropin.js", "app.get('/', (q, r) => r.end('drop'));");
    let host = Host::start(&mims.path()).await;
    let tar = docker_tar(&["my-mim-v1:1.0.0"], &versioned("docker"));
    let reply = upload(&host, "whatever.tar", None, &tar).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let image = reply.json();
    let id = image["id"].as_str().unwrap().to_string();
    assert_eq!(image["name"], "my-mim-v1");
    assert_eq!(image["repoTags"], json!(["my-mim-v1:1.0.0"]));

    // The same upload again is the same image.
    let again = upload(&host, "whatever.tar", None, &tar).await;
    assert_eq!(again.json()["id"], id.as_str());

    // gzip-compressed plain tars with a name from the file name work too.
    let gz = upload(
        &host,
        "zipped.tar.gz",
        None,
        &gzip(&plain_tar(&versioned("gz"))),
    )
    .await;
    assert_eq!(gz.status, 201, "{gz:?}");
    assert_eq!(gz.json()["name"], "zipped");

    let list = api(&host, Method::GET, "/mcm/v1/images").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["data"].as_array().unwrap().len(), 2, "{list:?}");
    assert_eq!(
        api(&host, Method::GET, &format!("/mcm/v1/images/{id}"))
            .await
            .json()["id"],
        id.as_str()
    );

    // By name, by name:tag and by id.
    for (name, reference) in [
        ("a", "my-mim-v1"),
        ("b", "my-mim-v1:1.0.0"),
        ("c", id.as_str()),
    ] {
        let reply = create(&host, json!({ "name": name, "image": reference })).await;
        assert_eq!(reply.status, 201, "{reply:?}");
        assert_eq!(reply.json()["basePath"], format!("/{name}"));
        host.get(&format!("/{name}/version"))
            .await
            .assert_ok("docker");
    }

    // The list holds the deployed containers and the drop-in mim.
    let list = api(&host, Method::GET, "/mcm/v1/containers").await.json();
    let names: Vec<(&str, &str)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["source"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [("a", "api"), ("b", "api"), ("c", "api"), ("dropin", "mims")]
    );
    let dropin = api(&host, Method::DELETE, "/mcm/v1/containers/dropin").await;
    dropin.assert_error(409);

    // An image in use cannot go; once its containers are gone it can.
    let busy = api(&host, Method::DELETE, &format!("/mcm/v1/images/{id}")).await;
    assert!(busy.assert_error(409).contains('a'), "{busy:?}");
    for name in ["a", "b", "c"] {
        assert_eq!(
            api(&host, Method::DELETE, &format!("/mcm/v1/containers/{name}"))
                .await
                .status,
            200
        );
    }
    host.get("/a/version").await.assert_error(404);
    assert_eq!(
        api(&host, Method::DELETE, &format!("/mcm/v1/images/{id}"))
            .await
            .status,
        200
    );
    api(&host, Method::GET, &format!("/mcm/v1/images/{id}"))
        .await
        .assert_error(404);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_has_its_status_and_shape() {
    let mims = Mims::new();
    let host = Host::start_with(&mims.path(), &["--max-image", "1MiB"]).await;

    // 401: no token, wrong token, wrong scheme.
    let none = host.get("/mcm/v1/containers").await;
    none.assert_error(401);
    assert!(
        none.header("www-authenticate").starts_with("Bearer"),
        "{none:?}"
    );
    let wrong = send(
        host.request(Method::GET, "/mcm/v1/images")
            .bearer_auth("nope"),
    )
    .await;
    wrong.assert_error(401);
    let basic = send(
        host.request(Method::GET, "/mcm/v1/images")
            .header("authorization", format!("Basic {TOKEN}")),
    )
    .await;
    basic.assert_error(401);

    let image = image_of(&host, "good", &versioned("1")).await;

    // 400: bad JSON, bad name, bad base path, missing fields, code that does not load.
    let bad_json =
        send(authed(&host, Method::POST, "/mcm/v1/containers").body("{\"name\": ")).await;
    assert!(bad_json.assert_error(400).contains("JSON"), "{bad_json:?}");
    for name in ["", "-lead", "has space", "slash/name", &"x".repeat(64)] {
        create(&host, json!({ "name": name, "image": image }))
            .await
            .assert_error(400);
    }
    for base in ["/", "/a//b", "/a/../b", "/mcm/x", "/has space"] {
        let reply = create(
            &host,
            json!({ "name": "bp", "image": image, "env": { "MCM.BASE_API_PATH": base } }),
        )
        .await;
        assert!(
            reply.assert_error(400).contains("base path"),
            "{base}: {reply:?}"
        );
    }
    create(&host, json!({ "name": "noimage" }))
        .await
        .assert_error(400);
    create(&host, json!(["not", "an", "object"]))
        .await
        .assert_error(400);
    create(
        &host,
        json!({ "name": "envs", "image": image, "env": { "A": { "nested": 1 } } }),
    )
    .await
    .assert_error(400);
    let broken = image_of(
        &host,
        "broken",
        "app.get('/', (q, r) => {\n  r.end('x'\n});\n",
    )
    .await;
    let reply = create(&host, json!({ "name": "broken", "image": broken })).await;
    let message = reply.assert_error(400);
    assert!(
        message.contains("index.js:"),
        "the load error names file:line:col: {message}"
    );
    assert!(message.chars().any(|c| c.is_ascii_digit()), "{message}");
    api(&host, Method::GET, "/mcm/v1/containers/broken")
        .await
        .assert_error(404);

    // 404: unknown image, container, route.
    create(&host, json!({ "name": "ghost", "image": "no-such-image" }))
        .await
        .assert_error(404);
    api(&host, Method::GET, "/mcm/v1/containers/ghost")
        .await
        .assert_error(404);
    api(&host, Method::DELETE, "/mcm/v1/containers/ghost")
        .await
        .assert_error(404);
    api(&host, Method::GET, "/mcm/v1/images/feedfeedfeed")
        .await
        .assert_error(404);
    api(&host, Method::GET, "/mcm/v1/nothing")
        .await
        .assert_error(404);
    send(authed(&host, Method::PUT, "/mcm/v1/containers/ghost").json(&json!({})))
        .await
        .assert_error(404);

    // 409: name taken, base path taken.
    assert_eq!(
        create(&host, json!({ "name": "one", "image": image }))
            .await
            .status,
        201
    );
    create(&host, json!({ "name": "one", "image": image }))
        .await
        .assert_error(409);
    let taken = create(
        &host,
        json!({ "name": "two", "image": image, "env": { "MCM.BASE_API_PATH": "/one/" } }),
    )
    .await;
    assert!(taken.assert_error(409).contains("/one"), "{taken:?}");

    // 413: an image over --max-image.
    let big = TarOut::new()
        .file("index.js", b"1")
        .file("pad.bin", &vec![7u8; 1_100_000])
        .done();
    upload(&host, "big.tar", None, &big).await.assert_error(413);

    // 400: not multipart, no image field.
    send(authed(&host, Method::POST, "/mcm/v1/images").body("hello"))
        .await
        .assert_error(400);
    let (ct, body) = multipart(&[("name", None, b"x")]);
    send(
        authed(&host, Method::POST, "/mcm/v1/images")
            .header("content-type", ct)
            .body(body),
    )
    .await
    .assert_error(400);

    // 405 on a known path with the wrong method.
    let patch = api(&host, Method::PATCH, "/mcm/v1/containers").await;
    patch.assert_error(405);
    assert_eq!(patch.header("allow"), "GET, POST");

    // None of this hurt the running container.
    host.get("/one/version").await.assert_ok("1");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_tars_get_400_and_write_nothing() {
    let mims = Mims::new();
    let host = Host::start_with(&mims.path(), &["--max-image", "1MiB"]).await;
    let escape = std::env::temp_dir().join(format!("mimhost-escape-{}", std::process::id()));
    let escape_str = escape.display().to_string();
    let index = b"app.get('/', (q, r) => r.end('x'));";
    let code = String::from_utf8_lossy(index).to_string();
    let nested = format!("var x = {}1{};", "[".repeat(1500), "]".repeat(1500));
    let many: Vec<u8> = {
        let mut t = TarOut::new().file("index.js", index);
        for i in 0..20_001 {
            t = t.file(&format!("f{i}"), b"");
        }
        gzip(&t.done())
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "absolute path",
            TarOut::new()
                .file("index.js", index)
                .file(&escape_str, b"pwned")
                .done(),
            "absolute",
        ),
        (
            "dot-dot",
            TarOut::new()
                .file("index.js", index)
                .file("../../escape.js", b"pwned")
                .done(),
            "..",
        ),
        (
            "symlink",
            TarOut::new()
                .file("index.js", index)
                .special("lib.js", tar::EntryType::Symlink, Some("/etc/passwd"))
                .done(),
            "link",
        ),
        (
            "hard link",
            TarOut::new()
                .file("index.js", index)
                .special("lib.js", tar::EntryType::Link, Some("/etc/passwd"))
                .done(),
            "link",
        ),
        (
            "char device",
            TarOut::new()
                .file("index.js", index)
                .special("null", tar::EntryType::Char, None)
                .done(),
            "device",
        ),
        (
            "fifo",
            TarOut::new()
                .file("index.js", index)
                .special("pipe", tar::EntryType::Fifo, None)
                .done(),
            "fifo",
        ),
        (
            "gzip bomb",
            gzip(
                &TarOut::new()
                    .file("index.js", index)
                    .file("zeros.bin", &vec![0u8; 20 << 20])
                    .done(),
            ),
            "bomb",
        ),
        ("entry count bomb", many, "entries"),
        (
            "truncated",
            plain_tar(&"x".repeat(3000))[..2048].to_vec(),
            "truncated",
        ),
        (
            "truncated gzip",
            gzip(&plain_tar(&code))[..40].to_vec(),
            "gzip",
        ),
        (
            "no index.js",
            TarOut::new().file("main.js", index).done(),
            "index.js",
        ),
        (
            "not a tar",
            b"this is not an archive at all, just text that goes on".repeat(20),
            "tar",
        ),
        ("empty", Vec::new(), ""),
        ("nested too deep", plain_tar(&nested), "index.js:1:"),
        (
            "docker layer missing",
            TarOut::new()
                .file(
                    "manifest.json",
                    br#"[{"RepoTags":["x:1"],"Layers":["nope/layer.tar"]}]"#,
                )
                .done(),
            "layer",
        ),
        (
            "docker layer with dot-dot",
            {
                let layer = TarOut::new()
                    .file("index.js", index)
                    .file("../x.js", b"1")
                    .done();
                TarOut::new()
                    .file("l/layer.tar", &layer)
                    .file(
                        "manifest.json",
                        br#"[{"RepoTags":["x:1"],"Layers":["l/layer.tar"]}]"#,
                    )
                    .done()
            },
            "..",
        ),
    ];
    for (what, tar, expect) in &cases {
        let reply = upload(&host, "hostile.tar", Some("hostile"), tar).await;
        let message = reply.assert_error(400);
        assert!(
            message.contains(expect),
            "{what}: message {message:?} lacks {expect:?}"
        );
    }
    assert!(
        !escape.exists(),
        "an absolute path escaped to {}",
        escape.display()
    );
    let list = api(&host, Method::GET, "/mcm/v1/images").await.json();
    assert_eq!(list["data"], json!([]), "no hostile image was kept");
    // The host still works.
    let id = image_of(&host, "fine", &code).await;
    assert_eq!(
        create(&host, json!({ "name": "fine", "image": id }))
            .await
            .status,
        201
    );
    host.get("/fine/").await.assert_ok("x");
}

/// The next text frame of `client` (within 10 s).
async fn next_text<S>(client: &mut tokio_tungstenite::WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .expect("a frame within 10 s")
            .expect("the session stays open")
            .expect("a valid frame");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return text.to_string();
        }
    }
}

/// A controller mim echoing WebSocket messages with a version prefix.
fn echo_mim(version: &str) -> String {
    format!(
        "exports.get = (req) => ({{ webSocket: {{ data: {{ v: '{version}' }} }} }});\n\
         exports.webSocketEvent = (e) => e.type === 'message' ? {{ body: '{version}:' + e.message }} : undefined;\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn hot_swap_keeps_open_sessions_and_they_reach_the_new_code() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let mims = Mims::new();
    let host = Host::start(&mims.path()).await;
    deploy(&host, "echo", &echo_mim("v1"), json!({})).await;
    let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://{}/echo/", host.addr()))
        .await
        .expect("upgrade accepted");
    client.send(Message::text("a")).await.unwrap();
    assert_eq!(next_text(&mut client).await, "v1:a");

    let v2 = image_of(&host, "echo-v2", &echo_mim("v2")).await;
    let reply =
        send(authed(&host, Method::PUT, "/mcm/v1/containers/echo").json(&json!({ "image": v2 })))
            .await;
    assert_eq!(reply.status, 200, "{reply:?}");

    client.send(Message::text("b")).await.unwrap();
    assert_eq!(
        next_text(&mut client).await,
        "v2:b",
        "the same session now talks to the new code"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn put_hot_swaps_code_and_env() {
    let mims = Mims::new();
    let host = Host::start(&mims.path()).await;
    deploy(&host, "swap", &versioned("v1"), json!({ "GREETING": "hi" })).await;
    host.get("/swap/version").await.assert_ok("v1");
    host.post("/swap/count", "").await.assert_ok("1");

    let v2 = image_of(&host, "swap-v2", &versioned("v2")).await;
    let reply =
        send(authed(&host, Method::PUT, "/mcm/v1/containers/swap").json(&json!({ "image": v2 })))
            .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["imageId"], v2.as_str());
    assert_eq!(
        reply.json()["env"]["GREETING"],
        "hi",
        "env kept when not given"
    );
    host.get("/swap/version").await.assert_ok("v2");
    host.get("/swap/count").await.assert_ok("1");

    // Code that does not load: 400 naming the position, the old code keeps serving.
    let broken = image_of(
        &host,
        "swap-broken",
        "app.get('/version', (q, r) => r.end('v3')\n)) oops;",
    )
    .await;
    let reply = send(
        authed(&host, Method::PUT, "/mcm/v1/containers/swap").json(&json!({ "image": broken })),
    )
    .await;
    assert!(reply.assert_error(400).contains("index.js:"), "{reply:?}");
    host.get("/swap/version").await.assert_ok("v2");
    assert_eq!(
        api(&host, Method::GET, "/mcm/v1/containers/swap")
            .await
            .json()["imageId"],
        v2.as_str()
    );

    // The env alone can change; the base path cannot change in place.
    let env = json!({ "env": { "GREETING": "hello" } });
    assert_eq!(
        send(authed(&host, Method::PUT, "/mcm/v1/containers/swap").json(&env))
            .await
            .status,
        200
    );
    let with_env = deploy(&host, "greeter", NOTIFY_MIM, json!({ "GREETING": "one" })).await;
    assert_eq!(with_env["env"]["GREETING"], "one");
    host.get("/greeter/env").await.assert_ok("one");
    let env = json!({ "env": { "GREETING": "two" } });
    assert_eq!(
        send(authed(&host, Method::PUT, "/mcm/v1/containers/greeter").json(&env))
            .await
            .status,
        200
    );
    host.get("/greeter/env").await.assert_ok("two");
    let moved = json!({ "env": { "MCM.BASE_API_PATH": "/elsewhere" } });
    send(authed(&host, Method::PUT, "/mcm/v1/containers/greeter").json(&moved))
        .await
        .assert_error(400);
}

#[tokio::test(flavor = "multi_thread")]
async fn deployments_survive_restart_and_kill_9() {
    let mims = Mims::new();
    let mut host = Host::start(&mims.path()).await;
    deploy(
        &host,
        "keep",
        &versioned("kept"),
        json!({ "MCM.BASE_API_PATH": "/keep/v1" }),
    )
    .await;
    host.post("/keep/v1/count", "").await.assert_ok("1");
    host.post("/keep/v1/count", "").await.assert_ok("2");
    let images = api(&host, Method::GET, "/mcm/v1/images").await.json();

    // restart() is a kill -9 of the host and its workers, then a fresh start on the
    // same --data; the port opens only once the containers are back.
    host.restart().await;
    host.get("/keep/v1/version").await.assert_ok("kept");
    host.get("/keep/v1/count").await.assert_ok("2");
    assert_eq!(
        api(&host, Method::GET, "/mcm/v1/images").await.json(),
        images
    );
    let c = api(&host, Method::GET, "/mcm/v1/containers/keep")
        .await
        .json();
    assert_eq!(c["state"], "started");
    assert_eq!(c["basePath"], "/keep/v1");

    // Delete keeps the data unless purged.
    assert_eq!(
        api(&host, Method::DELETE, "/mcm/v1/containers/keep")
            .await
            .status,
        200
    );
    let image = c["imageId"].as_str().unwrap();
    let again = create(&host, json!({ "name": "keep", "image": image })).await;
    assert_eq!(again.status, 201);
    host.get("/keep/count").await.assert_ok("2");
    let purged = api(&host, Method::DELETE, "/mcm/v1/containers/keep?purge=true").await;
    assert_eq!(purged.json()["purged"], true);
    assert_eq!(
        create(&host, json!({ "name": "keep", "image": image }))
            .await
            .status,
        201
    );
    host.get("/keep/count").await.assert_ok("0");

    // Removed containers stay removed after a restart.
    assert_eq!(
        api(&host, Method::DELETE, "/mcm/v1/containers/keep")
            .await
            .status,
        200
    );
    host.restart().await;
    host.get("/keep/version").await.assert_error(404);
    assert_eq!(
        api(&host, Method::GET, "/mcm/v1/containers").await.json()["data"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_per_container() {
    let mims = Mims::new().with(
        "counted.js",
        "app.get('/', (q, r) => r.end('ok')); app.get('/boom', () => { throw new Error('x'); });",
    );
    let host = Host::start(&mims.path()).await;
    host.get("/counted/").await.assert_ok("ok");
    host.get("/counted/").await.assert_ok("ok");
    assert_eq!(host.get("/counted/boom").await.status, 500);
    let m = host.get("/metrics").await;
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").starts_with("text/plain"), "{m:?}");
    assert!(m.body.contains("mimhost_containers 1"), "{}", m.body);
    assert!(
        m.body
            .contains("mimhost_http_requests_total{container=\"counted\"} 3"),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains("mimhost_http_errors_total{container=\"counted\"} 1"),
        "{}",
        m.body
    );
}

// ---------- the CLI ----------

/// Runs the `mimhost` binary with `args` against `host`; returns (success, stdout, stderr).
fn cli(host: &Host, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mimhost"))
        .args(args)
        .env("MIMHOST_SERVER", host.url(""))
        .env("MIMHOST_TOKEN", TOKEN)
        .env_remove("MIMHOST_DATA")
        .output()
        .expect("run mimhost");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_packs_deploys_swaps_lists_and_removes() {
    let mims = Mims::new();
    let host = Host::start(&mims.path()).await;
    let work = tempfile::TempDir::new().unwrap();
    let mim = work.path().join("hello-mim");
    write(
        &mim,
        "index.js",
        "const g = require('./lib/greet');\napp.get('/hi', (q, r) => r.end(g('one')));\n",
    );
    write(
        &mim,
        "lib/greet.js",
        "module.exports = (v) => 'hello ' + v;\n",
    );
    write(&mim, ".git/config", "ignored");

    // pack writes a docker-save tar the API accepts as such.
    let tar_path = work.path().join("hello.tar");
    let (ok, out, err) = cli(
        &host,
        &[
            "pack",
            mim.to_str().unwrap(),
            "-o",
            tar_path.to_str().unwrap(),
        ],
    );
    assert!(ok, "pack failed: {out}{err}");
    let bytes = std::fs::read(&tar_path).unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.contains(&"manifest.json".to_string()), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("/layer.tar")), "{names:?}");
    let (ok, out, err) = cli(
        &host,
        &[
            "pack",
            mim.to_str().unwrap(),
            "-o",
            tar_path.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}{err}");
    assert_eq!(
        std::fs::read(&tar_path).unwrap(),
        bytes,
        "packing is reproducible"
    );

    // deploy a folder: created, prints the HTTP and dispatch-channel URLs.
    let (ok, out, err) = cli(
        &host,
        &[
            "deploy",
            mim.to_str().unwrap(),
            "--env",
            "WEBSOCKET_SUPPORT=true",
        ],
    );
    assert!(ok, "deploy failed: {out}{err}");
    assert!(
        out.contains(&format!("http: {}", host.url("/hello-mim"))),
        "{out}"
    );
    assert!(
        out.contains(&format!("ws:   ws://{}/ws/hello-mim", host.addr())),
        "{out}"
    );
    host.get("/hello-mim/hi").await.assert_ok("hello one");

    // deploy again after an edit: hot swapped, env kept.
    write(
        &mim,
        "index.js",
        "const g = require('./lib/greet');\napp.get('/hi', (q, r) => r.end(g('two')));\n",
    );
    let (ok, out, err) = cli(&host, &["deploy", mim.to_str().unwrap()]);
    assert!(ok && out.starts_with("updated"), "{out}{err}");
    host.get("/hello-mim/hi").await.assert_ok("hello two");
    let c = api(&host, Method::GET, "/mcm/v1/containers/hello-mim")
        .await
        .json();
    assert_eq!(c["env"]["WEBSOCKET_SUPPORT"], "true");

    // a single file and a packed tar deploy too.
    let single = work.path().join("solo.js");
    std::fs::write(&single, "app.get('/', (q, r) => r.end('solo'));").unwrap();
    let (ok, out, err) = cli(&host, &["deploy", single.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    host.get("/solo/").await.assert_ok("solo");
    let (ok, out, err) = cli(
        &host,
        &["deploy", tar_path.to_str().unwrap(), "--name", "from-tar"],
    );
    assert!(ok, "{out}{err}");
    host.get("/from-tar/hi").await.assert_ok("hello one");

    // ls shows them; rm removes one.
    let (ok, out, err) = cli(&host, &["ls"]);
    assert!(ok, "{err}");
    for name in ["hello-mim", "solo", "from-tar"] {
        assert!(out.contains(name), "ls lacks {name}: {out}");
    }
    let (ok, out, err) = cli(&host, &["rm", "solo", "--purge"]);
    assert!(ok, "{out}{err}");
    host.get("/solo/").await.assert_error(404);

    // Errors tell what to do next.
    let (ok, _, err) = cli(&host, &["rm", "solo"]);
    assert!(!ok && err.contains("404"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_mimhost"))
        .args(["ls", "--token", "wrong"])
        .env("MIMHOST_SERVER", host.url(""))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--token"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_mimhost"))
        .args(["ls", "--server", "http://127.0.0.1:9", "--token", "x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("mimhost serve"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_to_first_response_of_a_100_kib_bundle() {
    let mims = Mims::new();
    let host = Host::start(&mims.path()).await;
    let work = tempfile::TempDir::new().unwrap();
    let mim = work.path().join("bundle");
    // ~100 KiB of webpack-like code: many small functions, then the route.
    let mut code = String::from("var mods = {};\n");
    let mut i = 0;
    while code.len() < 100 * 1024 {
        code.push_str(&format!(
            "mods['m{i}'] = function (exports) {{ exports.value = {i} * 2 + '{}'.length; return exports; }};\n",
            "x".repeat(i % 40)
        ));
        i += 1;
    }
    code.push_str("app.get('/ping', (q, r) => r.end('pong ' + Object.keys(mods).length));\n");
    write(&mim, "index.js", &code);

    let started = Instant::now();
    let (ok, out, err) = cli(&host, &["deploy", mim.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let reply = host.get("/bundle/ping").await;
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body.starts_with("pong "), "{reply:?}");
    eprintln!(
        "deploy-to-first-response for a {} KiB bundle: {} ms",
        code.len() / 1024,
        elapsed.as_millis()
    );
    assert!(elapsed < Duration::from_secs(20), "deploy took {elapsed:?}");
}

/// The schemathesis command, if installed.
fn schemathesis() -> Option<&'static str> {
    ["schemathesis", "st"].into_iter().find(|cmd| {
        Command::new(cmd).arg("--version").output().is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("version")
        })
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_holds_under_schemathesis() {
    let Some(st) = schemathesis() else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "schemathesis is missing: `python3 -m pip install schemathesis` (.ci/run does)"
        );
        eprintln!("skipped: schemathesis is not installed (python3 -m pip install schemathesis)");
        return;
    };
    let mims = Mims::new();
    let host = Host::start(&mims.path()).await;
    // The document's example deploys image my-mim-v1; have it, so the calls get through.
    image_of(&host, "my-mim-v1", "app.get('/', (q, r) => r.end('hi'));").await;
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/mcm-api.yaml");
    let url = host.url("/mcm/v1");
    let scratch = tempfile::TempDir::new().expect("temp dir for schemathesis' cache");
    let cwd = scratch.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(st)
            .current_dir(cwd)
            .args(["run", spec.to_str().expect("utf-8 path"), "--url", &url])
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .args([
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
            ])
            .args(["--max-examples", "40", "-w", "1", "--seed", "7"])
            .output()
            .expect("run schemathesis")
    })
    .await
    .expect("schemathesis thread");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "docs/mcm-api.yaml and the API disagree:\n{report}"
    );
    assert!(!host.stderr_contains("panicked"), "{}", host.stderr());
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_creates_start_one_container_and_raw_tar_uploads_work() {
    let mims = Mims::new();
    let host = Host::start(&mims.path()).await;
    // A raw application/x-tar body, named by ?name=.
    let raw = send(
        authed(&host, Method::POST, "/mcm/v1/images?name=raw-mim:2")
            .header("content-type", "application/x-tar")
            .body(plain_tar(&versioned("raw"))),
    )
    .await;
    assert_eq!(raw.status, 201, "{raw:?}");
    assert_eq!(raw.json()["repoTags"], json!(["raw-mim:2"]));

    let attempts = (0..6).map(|_| create(&host, json!({ "name": "race", "image": "raw-mim:2" })));
    let replies = futures_util::future::join_all(attempts).await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409], "{replies:?}");
    host.get("/race/version").await.assert_ok("raw");
}
