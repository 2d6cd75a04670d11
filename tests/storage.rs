//! `context.storage`, `context.env` and `context.info` (SPEC 7): every storage
//! method, iteration order and early stop, tags, per-container isolation, and
//! durability across `kill -9`.

#[path = "support/mod.rs"]
mod support;

use reqwest::Method;
use serde_json::{json, Value};
use support::{loose_string, mim_json, send, serve, Host, Mims};

/// A route-style mim exposing every `context.storage` method over HTTP.
/// `/items` and `/tagged/:tag` list `[key, value]` pairs; the `/first/:n`
/// variants stop the iteration by returning `false` after `n` items.
const STORE: &str = r#"
const storage = context.storage;
function json(response, value) {
  response.setHeader('Content-Type', 'application/json');
  response.end(JSON.stringify(value));
}
function collect(each, stopAfter) {
  const items = [];
  each((key, value) => {
    items.push([key, value]);
    if (items.length === stopAfter) return false;
  });
  return items;
}
app.get('/item/:key', (request, response) => {
  const value = storage.getItem(request.params.key);
  json(response, { value: value, type: typeof value });
});
app.put('/item/:key', (request, response) => {
  storage.setItem(request.params.key, request.body);
  json(response, { ok: true });
});
app.delete('/item/:key', (request, response) => {
  storage.removeItem(request.params.key);
  json(response, { ok: true });
});
app.put('/tagged/:tag/:key', (request, response) => {
  storage.setItemWithTag(request.params.key, request.body, request.params.tag);
  json(response, { ok: true });
});
app.delete('/tagged/:tag', (request, response) => {
  json(response, { removed: storage.removeItemsByTag(request.params.tag) });
});
app.get('/items', (request, response) => json(response, collect((cb) => storage.eachItem(cb))));
app.get('/items/first/:n', (request, response) => {
  json(response, collect((cb) => storage.eachItem(cb), Number(request.params.n)));
});
app.get('/tagged/:tag', (request, response) => {
  json(response, collect((cb) => storage.eachItemByTag(request.params.tag, cb)));
});
app.get('/tagged/:tag/first/:n', (request, response) => {
  json(response, collect((cb) => storage.eachItemByTag(request.params.tag, cb), Number(request.params.n)));
});
app.get('/env', (request, response) => json(response, context.env));
app.get('/info', (request, response) => json(response, context.info));
"#;

/// Starts a host with one copy of [`STORE`] per name in `names`.
async fn store_host(names: &[&str]) -> (Mims, Host) {
    let paths: Vec<String> = names.iter().map(|n| format!("{n}/index.js")).collect();
    let files: Vec<(&str, &str)> = paths.iter().map(|p| (p.as_str(), STORE)).collect();
    serve(&files).await
}

/// `getItem(key)` in mim `mim`; also checks a present value is a string.
async fn get_item(host: &Host, mim: &str, key: &str) -> Option<String> {
    let reply = host.get(&format!("/{mim}/item/{key}")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let got = reply.json();
    match &got["value"] {
        Value::Null => None,
        Value::String(s) => {
            assert_eq!(got["type"], "string");
            Some(s.clone())
        }
        other => panic!("getItem({key}) gave a non-string {other}"),
    }
}

/// `setItem(key, value)` in mim `mim`.
async fn set_item(host: &Host, mim: &str, key: &str, value: &str) {
    put(host, &format!("/{mim}/item/{key}"), value).await;
}

/// `setItemWithTag(key, value, tag)` in mim `mim`.
async fn set_tagged(host: &Host, mim: &str, tag: &str, key: &str, value: &str) {
    put(host, &format!("/{mim}/tagged/{tag}/{key}"), value).await;
}

/// `PUT path` with a text body, expecting 200.
async fn put(host: &Host, path: &str, body: &str) {
    let reply = send(host.request(Method::PUT, path).body(body.to_string())).await;
    assert_eq!(reply.status, 200, "PUT {path}: {reply:?}");
}

/// `DELETE path`, returning the JSON answer.
async fn delete(host: &Host, path: &str) -> Value {
    let reply = send(host.request(Method::DELETE, path)).await;
    assert_eq!(reply.status, 200, "DELETE {path}: {reply:?}");
    reply.json()
}

/// `GET path` answered with JSON.
async fn get_json(host: &Host, path: &str) -> Value {
    let reply = host.get(path).await;
    assert_eq!(reply.status, 200, "GET {path}: {reply:?}");
    reply.json()
}

#[tokio::test(flavor = "multi_thread")]
async fn get_set_overwrite_and_remove() {
    let (_mims, host) = store_host(&["store"]).await;

    assert_eq!(get_item(&host, "store", "greeting").await, None);
    set_item(&host, "store", "greeting", "hello").await;
    assert_eq!(
        get_item(&host, "store", "greeting").await.as_deref(),
        Some("hello")
    );
    set_item(&host, "store", "greeting", "bonjour").await;
    assert_eq!(
        get_item(&host, "store", "greeting").await.as_deref(),
        Some("bonjour")
    );
    set_item(&host, "store", "number", "42").await;
    assert_eq!(
        get_item(&host, "store", "number").await.as_deref(),
        Some("42")
    );
    set_item(&host, "store", "empty", "").await;
    assert_eq!(get_item(&host, "store", "empty").await.as_deref(), Some(""));

    delete(&host, "/store/item/greeting").await;
    assert_eq!(get_item(&host, "store", "greeting").await, None);
    assert_eq!(
        get_item(&host, "store", "number").await.as_deref(),
        Some("42")
    );
    delete(&host, "/store/item/never-set").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_item_goes_oldest_first_and_stops_on_false() {
    let (_mims, host) = store_host(&["store"]).await;

    assert_eq!(get_json(&host, "/store/items").await, json!([]));
    for (key, value) in [("zeta", "1"), ("alpha", "2"), ("mid", "3")] {
        set_item(&host, "store", key, value).await;
    }

    assert_eq!(
        get_json(&host, "/store/items").await,
        json!([["zeta", "1"], ["alpha", "2"], ["mid", "3"]])
    );
    assert_eq!(
        get_json(&host, "/store/items/first/2").await,
        json!([["zeta", "1"], ["alpha", "2"]])
    );
    assert_eq!(
        get_json(&host, "/store/items/first/1").await,
        json!([["zeta", "1"]])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_group_items_for_iteration_and_removal() {
    let (_mims, host) = store_host(&["store"]).await;

    set_tagged(&host, "store", "red", "r1", "one").await;
    set_tagged(&host, "store", "blue", "b1", "two").await;
    set_item(&host, "store", "plain", "three").await;
    set_tagged(&host, "store", "red", "r2", "four").await;

    assert_eq!(
        get_json(&host, "/store/tagged/red").await,
        json!([["r1", "one"], ["r2", "four"]])
    );
    assert_eq!(
        get_json(&host, "/store/tagged/red/first/1").await,
        json!([["r1", "one"]])
    );
    assert_eq!(get_json(&host, "/store/tagged/none").await, json!([]));
    assert_eq!(
        get_item(&host, "store", "r2").await.as_deref(),
        Some("four")
    );
    assert_eq!(
        get_json(&host, "/store/items").await,
        json!([
            ["r1", "one"],
            ["b1", "two"],
            ["plain", "three"],
            ["r2", "four"]
        ])
    );

    assert_eq!(
        delete(&host, "/store/tagged/red").await,
        json!({"removed": 2})
    );
    assert_eq!(get_json(&host, "/store/tagged/red").await, json!([]));
    assert_eq!(get_item(&host, "store", "r1").await, None);
    assert_eq!(get_item(&host, "store", "b1").await.as_deref(), Some("two"));
    assert_eq!(
        get_json(&host, "/store/items").await,
        json!([["b1", "two"], ["plain", "three"]])
    );
    assert_eq!(
        delete(&host, "/store/tagged/red").await,
        json!({"removed": 0})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_container_has_its_own_store() {
    let (_mims, host) = store_host(&["one", "two"]).await;

    set_item(&host, "one", "shared", "from-one").await;
    set_item(&host, "two", "shared", "from-two").await;
    set_tagged(&host, "one", "t", "tagged", "one-tagged").await;

    assert_eq!(
        get_item(&host, "one", "shared").await.as_deref(),
        Some("from-one")
    );
    assert_eq!(
        get_item(&host, "two", "shared").await.as_deref(),
        Some("from-two")
    );
    assert_eq!(get_item(&host, "two", "tagged").await, None);
    assert_eq!(get_json(&host, "/two/tagged/t").await, json!([]));
    assert_eq!(delete(&host, "/two/tagged/t").await, json!({"removed": 0}));

    delete(&host, "/one/item/shared").await;
    assert_eq!(get_item(&host, "one", "shared").await, None);
    assert_eq!(
        get_json(&host, "/two/items").await,
        json!([["shared", "from-two"]])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn env_and_info_describe_the_container() {
    let (_mims, host) = serve(&[
        ("store/index.js", STORE),
        (
            "store/mim.json",
            &mim_json(&[("GREETING", "hello"), ("MODE", "test")]),
        ),
        ("custom/index.js", STORE),
        (
            "custom/mim.json",
            &mim_json(&[("MCM.BASE_API_PATH", "/custom/v1")]),
        ),
    ])
    .await;

    let env = get_json(&host, "/store/env").await;
    assert_eq!(env["GREETING"], "hello");
    assert_eq!(env["MODE"], "test");
    let env = get_json(&host, "/custom/v1/env").await;
    assert_eq!(env["MCM.BASE_API_PATH"], "/custom/v1");

    for (base, api_root) in [("/store", "/store"), ("/custom/v1", "/custom/v1")] {
        let info = get_json(&host, &format!("{base}/info")).await;
        assert!(info["serviceType"].is_string(), "serviceType: {info}");
        let root = info["apiRoot"].as_str().unwrap_or_default();
        assert!(root.ends_with(api_root), "apiRoot {root:?} for {base}");
        assert_eq!(loose_string(&info["httpPort"]), host.port().to_string());
        let node = info["nodeId"].as_str().unwrap_or_default();
        assert!(!node.is_empty(), "nodeId: {info}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_survive_kill_9_and_restart() {
    let (_mims, mut host) = store_host(&["store"]).await;

    set_item(&host, "store", "first", "1").await;
    set_tagged(&host, "store", "keep", "second", "2").await;
    set_item(&host, "store", "durable", "survives").await;
    host.kill9();
    host.restart().await;

    assert_eq!(
        get_item(&host, "store", "durable").await.as_deref(),
        Some("survives")
    );
    assert_eq!(
        get_json(&host, "/store/items").await,
        json!([["first", "1"], ["second", "2"], ["durable", "survives"]])
    );
    assert_eq!(
        get_json(&host, "/store/tagged/keep").await,
        json!([["second", "2"]])
    );
}
