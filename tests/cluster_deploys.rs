//! Global deploys and shared storage across real `mimhost serve --cluster` nodes on
//! a real `redis-server` started here on a free port (SPEC 8): a deploy, hot swap
//! and delete through one node reach the others within 2 s, a node started later
//! catches up, storage written on one node is read on another in order with its tags,
//! and a store whose Redis is gone is read-only (writes throw a clear Error, reads
//! answer from the node's copy), then works again when Redis is back.

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::redis::Redis;
use support::{poll_until, send, Host, Mims, Reply, TOKEN};

/// What SPEC 8 allows a deploy to take to reach every node.
const PROPAGATION: Duration = Duration::from_secs(2);

/// A cluster node called `id` on `redis`, serving the drop-ins of `mims`.
async fn node(redis: &Redis, mims: &Mims, id: &str) -> Host {
    Host::start_with(&mims.path(), &["--cluster", &redis.url(), "--node-id", id]).await
}

/// A plain tar holding `index.js`.
fn image_tar(index_js: &str) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(index_js.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, "index.js", index_js.as_bytes())
        .expect("tar entry");
    tar.into_inner().expect("tar")
}

/// A mim answering `GET /version` with `version` and the node it runs on.
/// It also keeps a note in its store (`POST`/`GET /note`).
fn versioned(version: &str) -> String {
    format!(
        "app.get('/version', (req, res) => res.end('{version} ' + context.info.nodeId));
app.post('/note', (req, res) => {{ context.storage.setItem('note', req.body); res.end('ok'); }});
app.get('/note', (req, res) => res.end(String(context.storage.getItem('note'))));"
    )
}

/// `POST /mcm/v1/images?name=NAME` with a raw tar body.
async fn upload(host: &Host, name: &str, tar: Vec<u8>) -> Reply {
    send(
        host.request(
            reqwest::Method::POST,
            &format!("/mcm/v1/images?name={name}"),
        )
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-tar")
        .body(tar),
    )
    .await
}

/// An MCM call with a JSON body (or none).
async fn mcm(host: &Host, method: reqwest::Method, path: &str, body: Option<&str>) -> Reply {
    let mut req = host
        .request(method, &format!("/mcm/v1{path}"))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    send(req).await
}

/// Waits (at most `within`) until `GET path` on `host` answers `status` with a body
/// starting with `prefix`; returns how long it took.
async fn until_served(
    host: &Host,
    path: &str,
    status: u16,
    prefix: &str,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    let seen = poll_until(within, || async {
        let r = host.get(path).await;
        (r.status == status && r.body.starts_with(prefix)).then_some(())
    })
    .await;
    let last = host.get(path).await;
    assert!(
        seen.is_some(),
        "{path} on {} did not answer {status} {prefix:?} within {within:?}; last: {last:?}\n{}",
        host.addr(),
        host.stderr()
    );
    start.elapsed()
}

/// Uploads the `greeter` image at `version` through `host`, then creates the
/// container (`POST`) or hot swaps it to that image (`PUT`); the second answer.
async fn deploy_greeter(host: &Host, version: &str, method: reqwest::Method) -> Reply {
    let up = upload(host, "greeter", image_tar(&versioned(version))).await;
    assert_eq!(up.status, 201, "{up:?}");
    match method {
        reqwest::Method::POST => {
            let body = r#"{"name":"greeter","image":"greeter"}"#;
            mcm(host, method, "/containers", Some(body)).await
        }
        _ => {
            let body = r#"{"image":"greeter:latest"}"#;
            mcm(host, method, "/containers/greeter", Some(body)).await
        }
    }
}

/// Waits until `GET /containers` on `host` lists `name` once, served by `nodes`.
async fn listed_once(host: &Host, name: &str, nodes: &[&str]) {
    let seen = poll_until(PROPAGATION, || async {
        let list = mcm(host, reqwest::Method::GET, "/containers", None)
            .await
            .json();
        let data = list["data"].as_array().cloned().unwrap_or_default();
        let mine: Vec<_> = data.iter().filter(|x| x["name"] == name).collect();
        (mine.len() == 1 && mine[0]["nodes"] == serde_json::json!(nodes)).then_some(())
    })
    .await;
    let last = mcm(host, reqwest::Method::GET, "/containers", None).await;
    assert!(
        seen.is_some(),
        "{name} not listed once on {nodes:?}: {last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_reach_every_node_and_late_nodes_catch_up() {
    let Some(redis) = Redis::start() else { return };
    let mims = Mims::new();
    let a = node(&redis, &mims, "node-a").await;
    let b = node(&redis, &mims, "node-b").await;
    let c = node(&redis, &mims, "node-c").await;

    // Deploy through A: B and C serve it within 2 s.
    let created = deploy_greeter(&a, "v1", reqwest::Method::POST).await;
    assert_eq!(created.status, 201, "{created:?}");
    for n in [&b, &c] {
        let took = until_served(n, "/greeter/version", 200, "v1 ", PROPAGATION).await;
        eprintln!("create reached {} in {took:?}", n.addr());
    }
    assert_eq!(b.get("/greeter/version").await.body, "v1 node-b");

    // GET /containers on any node lists it once, with every node serving it.
    listed_once(&c, "greeter", &["node-a", "node-b", "node-c"]).await;

    // A name taken through another node is a conflict everywhere.
    let again = deploy_greeter(&c, "v1", reqwest::Method::POST).await;
    assert_eq!(again.status, 409, "{again:?}");

    // Hot swap through B (a new image uploaded there): A and C run it within 2 s.
    let swapped = deploy_greeter(&b, "v2", reqwest::Method::PUT).await;
    assert_eq!(swapped.status, 200, "{swapped:?}");
    for n in [&a, &c] {
        let took = until_served(n, "/greeter/version", 200, "v2 ", PROPAGATION).await;
        eprintln!("hot swap reached {} in {took:?}", n.addr());
    }

    // A node started now catches up before it opens its port.
    let d = node(&redis, &mims, "node-d").await;
    d.get("/greeter/version").await.assert_ok("v2 node-d");
    let images = mcm(&d, reqwest::Method::GET, "/images", None).await.json();
    assert_eq!(images["data"].as_array().map(Vec::len), Some(2), "{images}");

    // Its store is shared by every node.
    send(
        a.request(reqwest::Method::POST, "/greeter/note")
            .body("kept"),
    )
    .await
    .assert_ok("ok");
    d.get("/greeter/note").await.assert_ok("kept");

    // Delete through C: gone from every node within 2 s; its data stays.
    let deleted = mcm(&c, reqwest::Method::DELETE, "/containers/greeter", None).await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    for n in [&a, &b, &d] {
        until_served(n, "/greeter/version", 404, "", PROPAGATION).await;
    }
    let again = deploy_greeter(&d, "v3", reqwest::Method::POST).await;
    assert_eq!(again.status, 201, "{again:?}");
    for n in [&a, &b, &c] {
        until_served(n, "/greeter/version", 200, "v3 ", PROPAGATION).await;
    }
    a.get("/greeter/note").await.assert_ok("kept");

    // A purge through A deletes its data in Redis for every node.
    let purged = mcm(
        &a,
        reqwest::Method::DELETE,
        "/containers/greeter?purge=true",
        None,
    )
    .await;
    assert_eq!(purged.status, 200, "{purged:?}");
    for n in [&b, &c, &d] {
        until_served(n, "/greeter/version", 404, "", PROPAGATION).await;
    }
    let fresh = deploy_greeter(&b, "v4", reqwest::Method::POST).await;
    assert_eq!(fresh.status, 201, "{fresh:?}");
    for n in [&a, &c, &d] {
        until_served(n, "/greeter/version", 200, "v4 ", PROPAGATION).await;
    }
    c.get("/greeter/note").await.assert_ok("null");
    // A change through one node is judged at once on another, before it polls: a
    // name freed through C can be taken through D, and deleted through A.
    let freed = mcm(&c, reqwest::Method::DELETE, "/containers/greeter", None).await;
    assert_eq!(freed.status, 200, "{freed:?}");
    let taken = deploy_greeter(&d, "v5", reqwest::Method::POST).await;
    assert_eq!(taken.status, 201, "{taken:?}");
    let last = mcm(&a, reqwest::Method::DELETE, "/containers/greeter", None).await;
    assert_eq!(last.status, 200, "{last:?}");
    for n in [&b, &c, &d] {
        until_served(n, "/greeter/version", 404, "", PROPAGATION).await;
    }
    let list = mcm(&a, reqwest::Method::GET, "/containers", None)
        .await
        .json();
    assert_eq!(list["data"], serde_json::json!([]), "{list}");
}

/// A drop-in mim with a small storage API.
const STORE_MIM: &str = r#"
app.post('/set/:k', (req, res) => {
  if (req.query.tag) context.storage.setItemWithTag(req.params.k, req.body, req.query.tag);
  else context.storage.setItem(req.params.k, req.body);
  res.end('ok');
});
app.get('/get/:k', (req, res) => res.end(String(context.storage.getItem(req.params.k))));
app.delete('/item/:k', (req, res) => { context.storage.removeItem(req.params.k); res.end('ok'); });
app.get('/all', (req, res) => {
  const out = [];
  context.storage.eachItem((k, v) => { out.push(k + '=' + v); });
  res.end(out.join(','));
});
app.get('/first/:n', (req, res) => {
  const out = [];
  context.storage.eachItem((k, v) => { out.push(k); return out.length < Number(req.params.n); });
  res.end(out.join(','));
});
app.get('/tag/:t', (req, res) => {
  const out = [];
  context.storage.eachItemByTag(req.params.t, (k, v) => { out.push(k + '=' + v); });
  res.end(out.join(','));
});
app.delete('/tag/:t', (req, res) => res.end(String(context.storage.removeItemsByTag(req.params.t))));
app.get('/try-set', (req, res) => {
  try { context.storage.setItem('probe', 'x'); res.end('stored'); }
  catch (e) { res.statusCode = 503; res.end(String(e.message)); }
});
app.get('/try-get', (req, res) => {
  try { res.end('read ' + context.storage.getItem('a')); }
  catch (e) { res.statusCode = 503; res.end(String(e.message)); }
});
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_is_shared_in_order_with_tags() {
    let Some(redis) = Redis::start() else { return };
    let mims = Mims::from_files(&[("kv.js", STORE_MIM)]);
    let a = node(&redis, &mims, "node-a").await;
    let b = node(&redis, &mims, "node-b").await;
    let set = |host: &Host, key: &str, value: &str, tag: Option<&str>| {
        let path = match tag {
            Some(t) => format!("/kv/set/{key}?tag={t}"),
            None => format!("/kv/set/{key}"),
        };
        let value = value.to_string();
        let req = host.request(reqwest::Method::POST, &path).body(value);
        async move { send(req).await.assert_ok("ok") }
    };
    // Written alternately on both nodes; each answer means Redis has the write.
    set(&a, "u1", "ada", Some("users")).await;
    set(&b, "n1", "note", None).await;
    set(&a, "u2", "bob", Some("users")).await;
    set(&b, "u3", "cy", Some("users")).await;
    set(&b, "u1", "ada2", None).await; // a rewrite keeps its age and its tag
    b.get("/kv/all")
        .await
        .assert_ok("u1=ada2,n1=note,u2=bob,u3=cy");
    a.get("/kv/all")
        .await
        .assert_ok("u1=ada2,n1=note,u2=bob,u3=cy");
    a.get("/kv/first/2").await.assert_ok("u1,n1");
    a.get("/kv/get/n1").await.assert_ok("note");
    a.get("/kv/get/none").await.assert_ok("null");
    b.get("/kv/tag/users")
        .await
        .assert_ok("u1=ada2,u2=bob,u3=cy");
    // Retagging moves a key between tags.
    set(&a, "u2", "bob", Some("admins")).await;
    b.get("/kv/tag/users").await.assert_ok("u1=ada2,u3=cy");
    b.get("/kv/tag/admins").await.assert_ok("u2=bob");
    // removeItemsByTag counts what it removed, once.
    send(b.request(reqwest::Method::DELETE, "/kv/tag/users"))
        .await
        .assert_ok("2");
    send(a.request(reqwest::Method::DELETE, "/kv/tag/users"))
        .await
        .assert_ok("0");
    a.get("/kv/all").await.assert_ok("n1=note,u2=bob");
    send(a.request(reqwest::Method::DELETE, "/kv/item/u2"))
        .await
        .assert_ok("ok");
    b.get("/kv/tag/admins").await.assert_ok("");
    b.get("/kv/all").await.assert_ok("n1=note");
    // One container across nodes: listed once, served by both.
    listed_once(&a, "kv", &["node-a", "node-b"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_leaves_a_read_only_store_and_it_recovers() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let mims = Mims::from_files(&[("kv.js", STORE_MIM)]);
    let a = node(&redis, &mims, "node-a").await;
    let b = node(&redis, &mims, "node-b").await;
    send(a.request(reqwest::Method::POST, "/kv/set/a").body("1"))
        .await
        .assert_ok("ok");
    b.get("/kv/try-get").await.assert_ok("read 1");
    // Each node's copy of the store follows Redis within half a second.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    redis.down();
    // The store is read-only: writes throw an Error saying the store is unavailable
    // (the mim can catch it and the worker keeps serving); reads answer from the
    // node's copy, on the node that wrote and on the other.
    for host in [&a, &b] {
        let w = host.get("/kv/try-set").await;
        assert_eq!(w.status, 503, "{w:?}");
        assert!(w.body.contains("the store is unavailable"), "{w:?}");
        assert!(w.body.contains("read-only"), "{w:?}");
        host.get("/kv/try-get").await.assert_ok("read 1");
        host.get("/kv/all").await.assert_ok("a=1");
    }
    // Uncaught, it is a 500 naming the cause.
    let uncaught = send(a.request(reqwest::Method::POST, "/kv/set/b").body("2")).await;
    let message = uncaught.assert_error(500);
    assert!(message.contains("the store is unavailable"), "{message}");
    // MCM changes are refused while deploys cannot be global.
    let refused = poll_until(PROPAGATION, || async {
        let r = upload(&a, "x", image_tar(&versioned("v1"))).await;
        (r.status == 503).then_some(r)
    })
    .await;
    assert!(refused.is_some(), "an upload was not refused with 503");
    a.wait_for_log("deploys: the cluster's Redis is unavailable", PROPAGATION)
        .await;

    redis.up();
    // Both nodes write again without a restart (the worker reconnects).
    for host in [&a, &b] {
        until_served(host, "/kv/try-set", 200, "stored", Duration::from_secs(5)).await;
    }
    send(a.request(reqwest::Method::POST, "/kv/set/c").body("3"))
        .await
        .assert_ok("ok");
    b.get("/kv/get/c").await.assert_ok("3");
    a.wait_for_log("deploys: Redis is back", Duration::from_secs(5))
        .await;
    // Deploys work again too.
    let up = upload(&a, "late", image_tar(&versioned("v1"))).await;
    assert_eq!(up.status, 201, "{up:?}");
}

/// A drop-in mim one node serves from its own `mims/` folder is listed by every
/// node, and `GET /containers/{name}` on another node shows it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_in_of_one_node_is_shown_by_every_node() {
    let Some(redis) = Redis::start() else { return };
    let with = Mims::from_files(&[("local.js", "app.get('/', (q, r) => r.end('here'));")]);
    let without = Mims::new();
    let a = node(&redis, &with, "node-a").await;
    let b = node(&redis, &without, "node-b").await;
    listed_once(&b, "local", &["node-a"]).await;
    let one = mcm(&b, reqwest::Method::GET, "/containers/local", None).await;
    assert_eq!(one.status, 200, "{one:?}");
    let one = one.json();
    assert_eq!(one["source"], "mims", "{one}");
    assert_eq!(one["nodes"], serde_json::json!(["node-a"]), "{one}");
    a.get("/local/").await.assert_ok("here");
    let missing = mcm(&b, reqwest::Method::GET, "/containers/nothing", None).await;
    assert_eq!(missing.status, 404, "{missing:?}");
}

/// Two containers created at the same moment through two nodes, with different
/// names but one base path: the cluster takes one and refuses the other (409), and
/// every node serves the one it took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_base_path_is_taken_once_across_the_cluster() {
    let Some(redis) = Redis::start() else { return };
    let mims = Mims::new();
    let a = node(&redis, &mims, "node-a").await;
    let b = node(&redis, &mims, "node-b").await;
    let up = upload(&a, "greeter", image_tar(&versioned("v1"))).await;
    assert_eq!(up.status, 201, "{up:?}");
    for n in [&a, &b] {
        let seen = poll_until(PROPAGATION, || async {
            let images = mcm(n, reqwest::Method::GET, "/images", None).await.json();
            (images["data"].as_array().map(Vec::len) == Some(1)).then_some(())
        })
        .await;
        assert!(seen.is_some(), "the image did not reach {}", n.addr());
    }
    let body = |name: &str| {
        format!(r#"{{"name":"{name}","image":"greeter","env":{{"MCM.BASE_API_PATH":"/shared"}}}}"#)
    };
    let (left, right) = (body("left"), body("right"));
    let (first, second) = tokio::join!(
        mcm(&a, reqwest::Method::POST, "/containers", Some(&left)),
        mcm(&b, reqwest::Method::POST, "/containers", Some(&right)),
    );
    let mut statuses = [first.status, second.status];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{first:?}\n{second:?}");
    let loser = if first.status == 409 { &first } else { &second };
    eprintln!("refused: {}", loser.body);
    assert!(loser.body.contains("/shared"), "{loser:?}");
    for n in [&a, &b] {
        until_served(n, "/shared/version", 200, "v1 ", PROPAGATION).await;
    }
    let list = mcm(&b, reqwest::Method::GET, "/containers", None)
        .await
        .json();
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "{list}");
}
