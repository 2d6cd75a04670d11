//! Containers made through the MCM API: an image run under a name with an env.
//! Each is recorded in `<data>/containers/<name>.json` and started again at boot.

use super::error::{ApiError, ApiResult};
use super::state::Mcm;
use super::{images, persist, time};
use crate::cluster::deploys::Served;
use crate::registry::{base_path_for, Origin, RegistryError};

/// What a start error's message begins with when the code did not load.
const START_CONTEXT: &str = "the container's code does not load: ";
use mimhost_bindings::MimSpec;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// The persisted record of a deployed container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    /// The container id (its name).
    pub id: String,
    /// The container name.
    pub name: String,
    /// The image reference as the client gave it.
    pub image: String,
    /// The id of the image it runs.
    pub image_id: String,
    /// The container env.
    pub env: BTreeMap<String, String>,
    /// When it was created (RFC 3339).
    pub created: String,
    /// Where it serves (`MCM.BASE_API_PATH`, default `/<name>`).
    pub base_path: String,
}

/// A record and, when it could not start at boot, why.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) record: ContainerRecord,
    pub(super) error: Option<String>,
}

/// The deployed containers of this node, by name.
#[derive(Default)]
pub struct Records {
    all: Mutex<BTreeMap<String, Entry>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Records {
    /// Every record, by name.
    pub fn list(&self) -> Vec<ContainerRecord> {
        lock(&self.all).values().map(|e| e.record.clone()).collect()
    }

    pub(super) fn entries(&self) -> Vec<Entry> {
        lock(&self.all).values().cloned().collect()
    }

    pub(super) fn get(&self, name: &str) -> Option<Entry> {
        lock(&self.all).get(name).cloned()
    }

    pub(super) fn put(&self, record: ContainerRecord, error: Option<String>) {
        lock(&self.all).insert(record.name.clone(), Entry { record, error });
    }

    pub(super) fn remove(&self, name: &str) {
        lock(&self.all).remove(name);
    }

    /// Names of the containers running image `id`.
    pub fn using_image(&self, id: &str) -> Vec<String> {
        lock(&self.all)
            .values()
            .filter(|e| e.record.image_id == id)
            .map(|e| e.record.name.clone())
            .collect()
    }
}

fn records_dir(mcm: &Mcm) -> PathBuf {
    mcm.data.join("containers")
}

pub(super) fn record_file(mcm: &Mcm, name: &str) -> PathBuf {
    records_dir(mcm).join(format!("{name}.json"))
}

pub(super) fn save(mcm: &Mcm, record: &ContainerRecord) -> Result<(), ApiError> {
    let value = serde_json::to_value(record).map_err(|e| ApiError::internal(e.to_string()))?;
    persist::write_json(&record_file(mcm, &record.name), &value)
        .map_err(|e| ApiError::internal(format!("cannot save container {}: {e}", record.name)))
}

/// Whether `name` is a valid container name: `[A-Za-z0-9][A-Za-z0-9_.-]{0,62}`.
pub fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// First path segments the host keeps for itself.
const RESERVED: [&str; 6] = ["mcm", "ws", "websockets", "healthz", "metrics", "_"];

/// Checks a normalised base path; the error says what is wrong with it.
pub fn check_base_path(base: &str) -> Result<(), String> {
    if base == "/" || base.is_empty() {
        return Err("base path / would take every path of the host; give the container a prefix like /my-mim".into());
    }
    if base.len() > 200 {
        return Err(format!("base path {base:?} is longer than 200 characters"));
    }
    for (i, seg) in base[1..].split('/').enumerate() {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(format!(
                "base path {base:?} has an empty, '.' or '..' segment"
            ));
        }
        let ok = seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@%".contains(c));
        if !ok {
            return Err(format!(
                "base path {base:?} has characters that are not allowed in a URL path"
            ));
        }
        if i == 0 && RESERVED.contains(&seg.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "base path {base:?} starts with /{seg}, which the host keeps for itself"
            ));
        }
    }
    Ok(())
}

pub(super) fn spec_for(
    mcm: &Mcm,
    name: &str,
    image_id: &str,
    env: &BTreeMap<String, String>,
    base_path: &str,
) -> MimSpec {
    MimSpec {
        name: name.to_string(),
        root: mcm.images.files_dir(image_id),
        entry: PathBuf::from("index.js"),
        env: env.clone(),
        base_path: base_path.to_string(),
        http_port: mcm.node.http_port,
        node_id: mcm.node.node_id.clone(),
    }
}

/// The JSON shown for a deployed container.
fn view(mcm: &Mcm, entry: &Entry) -> Value {
    let r = &entry.record;
    let running = mcm
        .registry
        .get(&r.name)
        .is_some_and(|c| c.origin == Origin::Deployed);
    let mut v = json!({
        "id": r.id, "name": r.name, "image": r.image, "imageId": r.image_id, "env": r.env,
        "state": if running { "started" } else { "failed" },
        "created": r.created, "basePath": r.base_path, "source": "api",
        "nodes": mcm.nodes_serving(&r.name),
    });
    if let (Some(e), false) = (&entry.error, running) {
        v["error"] = json!(e);
    }
    v
}

/// The JSON shown for a drop-in mim from the `mims/` folder.
fn mims_view(mcm: &Mcm, c: &crate::registry::Container) -> Value {
    let spec = c.supervisor.spec();
    json!({
        "id": c.name, "name": c.name, "image": null, "imageId": null, "env": spec.env,
        "state": "started", "created": null, "basePath": c.base_path, "source": "mims",
        "nodes": mcm.nodes_serving(&c.name),
    })
}

/// The JSON shown for a container only other nodes of the cluster serve as drop-in
/// mims: what they said about it. (A deployed container has its record here, so
/// what other nodes say about one without a record is only not yet refreshed.)
fn remote_view(name: &str, nodes: &BTreeMap<String, Served>) -> Option<Value> {
    let (_, first) = nodes.iter().find(|(_, s)| s.source == "mims")?;
    Some(json!({
        "id": name, "name": name, "image": null, "imageId": null, "env": first.env,
        "state": "started", "created": null, "basePath": first.base_path,
        "source": first.source, "nodes": nodes.keys().collect::<Vec<_>>(),
    }))
}

/// Reads the `env` member: an object of strings (numbers and booleans are turned
/// into strings); absent is empty.
fn parse_env(value: Option<&Value>) -> Result<BTreeMap<String, String>, ApiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(BTreeMap::new());
    };
    let obj = value
        .as_object()
        .ok_or_else(|| ApiError::bad("'env' must be an object of strings"))?;
    let mut env = BTreeMap::new();
    for (k, v) in obj {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(ApiError::bad(format!("env {k:?} must be a string"))),
        };
        env.insert(k.clone(), s);
    }
    Ok(env)
}

fn string_member<'a>(body: &'a Value, key: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(ApiError::bad(format!("'{key}' must be a string"))),
    }
}

/// Maps a registry error to a status by its variant: what is taken 409, a worker
/// that is busy, stopped or cannot start 503/500, code that does not load 400.
/// `context` prefixes the message of a load failure.
fn registry_error(mcm: &Mcm, image_id: &str, error: RegistryError, context: &str) -> ApiError {
    let root = format!("{}/", mcm.images.files_dir(image_id).display());
    let message = error.to_string().replace(&root, "");
    match error {
        RegistryError::NameTaken { .. }
        | RegistryError::BasePathTaken { .. }
        | RegistryError::EndpointTaken { .. } => ApiError::conflict(message),
        RegistryError::NotFound { .. } => ApiError::not_found(message),
        RegistryError::BasePathFixed { .. } => ApiError::bad(message),
        RegistryError::BadEndpoints { .. } => ApiError::bad(format!("{context}{message}")),
        RegistryError::Invoke(e) => match e.status() {
            400 => ApiError::bad(format!("{context}{message}")),
            status => ApiError::new(status, message),
        },
    }
}

/// `POST /containers` `{name, image, env}`.
pub async fn create(mcm: &Mcm, body: Value) -> ApiResult {
    if !body.is_object() {
        return Err(ApiError::bad(
            "the body must be a JSON object {name, image, env}",
        ));
    }
    let name = string_member(&body, "name")?
        .ok_or_else(|| ApiError::bad("'name' is required"))?
        .to_string();
    if !valid_name(&name) {
        return Err(ApiError::bad(format!(
            "bad container name {name:?}: 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )));
    }
    let reference = string_member(&body, "image")?
        .ok_or_else(|| ApiError::bad("'image' is required"))?
        .to_string();
    let env = parse_env(body.get("env"))?;
    let base_path = base_path_for(&name, &env);
    check_base_path(&base_path).map_err(ApiError::bad)?;
    let _ops = mcm.ops.lock().await;
    mcm.in_step_with_cluster().await?;
    if mcm.containers.get(&name).is_some() || mcm.registry.get(&name).is_some() {
        return Err(ApiError::conflict(format!(
            "a container named {name:?} already exists; PUT to update it"
        )));
    }
    let image = mcm
        .images
        .resolve(&reference)
        .ok_or_else(|| images::no_image(&reference))?;
    if let Some(other) = mcm
        .registry
        .list()
        .into_iter()
        .find(|c| c.base_path == base_path)
    {
        return Err(ApiError::conflict(format!(
            "base path {base_path} is already used by container {:?}",
            other.name
        )));
    }
    if let Some(other) = mcm
        .containers
        .entries()
        .into_iter()
        .find(|e| e.record.base_path == base_path)
    {
        return Err(ApiError::conflict(format!(
            "base path {base_path} is already used by container {:?}",
            other.record.name
        )));
    }
    let spec = spec_for(mcm, &name, &image.id, &env, &base_path);
    mcm.registry
        .start(spec, Origin::Deployed)
        .await
        .map_err(|e| registry_error(mcm, &image.id, e, START_CONTEXT))?;
    let record = ContainerRecord {
        id: name.clone(),
        name: name.clone(),
        image: reference,
        image_id: image.id.clone(),
        env,
        created: time::now_rfc3339(),
        base_path,
    };
    if let Err(e) = save(mcm, &record) {
        mcm.registry.remove(&name).await;
        return Err(e);
    }
    if let Some(deploys) = mcm.deploys() {
        if let Err(e) = deploys.create_container(&record).await {
            let _ = persist::remove_file(&record_file(mcm, &name));
            mcm.registry.remove(&name).await;
            return Err(super::replica::deploy_error(e));
        }
    }
    mcm.containers.put(record.clone(), None);
    tracing::info!(container = %name, "deployed image {} at {}", image.id, record.base_path);
    Ok((
        201,
        view(
            mcm,
            &Entry {
                record,
                error: None,
            },
        ),
    ))
}

/// `GET /containers`: deployed containers and drop-in mims.
pub fn list(mcm: &Mcm) -> (u16, Value) {
    let mut data: Vec<Value> = mcm
        .containers
        .entries()
        .iter()
        .map(|e| view(mcm, e))
        .collect();
    for c in mcm.registry.list() {
        if c.origin == Origin::MimsFolder && mcm.containers.get(&c.name).is_none() {
            data.push(mims_view(mcm, &c));
        }
    }
    if let Some(deploys) = mcm.deploys() {
        for (name, nodes) in deploys.served() {
            let known = mcm.containers.get(&name).is_some() || mcm.registry.get(&name).is_some();
            if !known {
                data.extend(remote_view(&name, &nodes));
            }
        }
    }
    data.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    (200, json!({ "data": data }))
}

/// The 404 for an unknown container.
fn no_container(id: &str) -> ApiError {
    ApiError::not_found(format!("no container {id:?} (see GET /mcm/v1/containers)"))
}

/// The 409 for changing a drop-in mim through the API.
fn drop_in(id: &str) -> ApiError {
    ApiError::conflict(format!(
        "{id:?} is a drop-in mim from the mims folder; change or delete its files there"
    ))
}

fn is_drop_in(mcm: &Mcm, id: &str) -> bool {
    mcm.registry
        .get(id)
        .is_some_and(|c| c.origin == Origin::MimsFolder)
}

/// The deployed container `id`: 409 when it is a drop-in mim, 404 when there is none.
fn deployed(mcm: &Mcm, id: &str) -> Result<Entry, ApiError> {
    mcm.containers.get(id).ok_or_else(|| {
        if is_drop_in(mcm, id) {
            drop_in(id)
        } else {
            no_container(id)
        }
    })
}

/// `GET /containers/{id}`.
pub fn get(mcm: &Mcm, id: &str) -> ApiResult {
    if let Some(e) = mcm.containers.get(id) {
        return Ok((200, view(mcm, &e)));
    }
    match mcm.registry.get(id) {
        Some(c) if c.origin == Origin::MimsFolder => Ok((200, mims_view(mcm, &c))),
        _ => remote_drop_in(mcm, id).ok_or_else(|| no_container(id)),
    }
}

/// A drop-in mim only other nodes of the cluster serve, as `GET /containers`
/// lists it.
fn remote_drop_in(mcm: &Mcm, id: &str) -> Option<(u16, Value)> {
    let served = mcm.deploys()?.served();
    remote_view(id, served.get(id)?).map(|v| (200, v))
}

/// `PUT /containers/{id}` `{image?, env?}`: hot swap; a failed load keeps the old code.
pub async fn update(mcm: &Mcm, id: &str, body: Value) -> ApiResult {
    if !body.is_object() {
        return Err(ApiError::bad(
            "the body must be a JSON object {image?, env?}",
        ));
    }
    let reference = string_member(&body, "image")?.map(str::to_string);
    let new_env = match body.get("env") {
        None | Some(Value::Null) => None,
        some => Some(parse_env(some)?),
    };
    let _ops = mcm.ops.lock().await;
    mcm.in_step_with_cluster().await?;
    let entry = deployed(mcm, id)?;
    let mut record = entry.record.clone();
    let image = match &reference {
        Some(r) => mcm.images.resolve(r).ok_or_else(|| images::no_image(r))?,
        None => mcm
            .images
            .resolve(&record.image_id)
            .ok_or_else(|| images::no_image(&record.image_id))?,
    };
    let env = new_env.unwrap_or_else(|| record.env.clone());
    let base_path = base_path_for(&record.name, &env);
    check_base_path(&base_path).map_err(ApiError::bad)?;
    if base_path != record.base_path {
        return Err(ApiError::bad(format!(
            "the base path cannot change in place ({} -> {base_path}); DELETE the container and POST it again",
            record.base_path
        )));
    }
    let spec = spec_for(mcm, &record.name, &image.id, &env, &base_path);
    if mcm.registry.get(&record.name).is_some() {
        mcm.registry.update(spec).await.map_err(|e| {
            let taken = matches!(e, RegistryError::EndpointTaken { .. });
            let mut error = registry_error(
                mcm,
                &image.id,
                e,
                "the new code does not load; the previous version keeps serving: ",
            );
            if taken {
                error
                    .message
                    .push_str("; the previous version keeps serving");
            }
            error
        })?;
    } else {
        mcm.registry
            .start(spec, Origin::Deployed)
            .await
            .map_err(|e| registry_error(mcm, &image.id, e, START_CONTEXT))?;
    }
    if let Some(r) = reference {
        record.image = r;
    }
    record.image_id = image.id.clone();
    record.env = env;
    save(mcm, &record)?;
    mcm.containers.put(record.clone(), None);
    if let Some(deploys) = mcm.deploys() {
        // This node already runs the new code; when the cluster cannot record it, the
        // next poll puts this node back in step with the cluster.
        deploys.put_container(&record).await.map_err(|e| {
            deploys.resync();
            super::replica::deploy_error(e)
        })?;
    }
    tracing::info!(container = %record.name, "updated to image {}", image.id);
    Ok((
        200,
        view(
            mcm,
            &Entry {
                record,
                error: None,
            },
        ),
    ))
}

/// `DELETE /containers/{id}[?purge=true]`: stop and remove; the store is kept
/// unless purged.
pub async fn delete(mcm: &Mcm, id: &str, purge: bool) -> ApiResult {
    let _ops = mcm.ops.lock().await;
    mcm.in_step_with_cluster().await?;
    let entry = deployed(mcm, id)?;
    let name = entry.record.name.clone();
    if let Some(deploys) = mcm.deploys() {
        deploys
            .drop_container(&name)
            .await
            .map_err(super::replica::deploy_error)?;
    }
    persist::remove_file(&record_file(mcm, &name))
        .map_err(|e| ApiError::internal(format!("cannot remove the record of {name}: {e}")))?;
    mcm.containers.remove(&name);
    mcm.registry.remove(&name).await;
    if let (true, Some(url)) = (purge, mcm.redis.clone()) {
        let purged = {
            let name = name.clone();
            tokio::task::spawn_blocking(move || crate::store::RedisStore::purge(&url, &name)).await
        };
        match purged {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(ApiError::new(
                    503,
                    format!("container removed but its store remains: {e}"),
                ))
            }
            Err(e) => return Err(ApiError::internal(format!("purge failed: {e}"))),
        }
    } else if purge {
        let store = crate::worker::store_dir(&mcm.data, &name);
        match std::fs::remove_dir_all(&store) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ApiError::internal(format!(
                    "container removed but its store remains: {e}"
                )))
            }
        }
    }
    tracing::info!(container = %name, purge, "removed");
    let mut v = view(mcm, &entry);
    v["state"] = json!("removed");
    v["purged"] = json!(purge);
    if let Some(o) = v.as_object_mut() {
        o.remove("error");
    }
    Ok((200, v))
}

/// Starts a deployed container's record on this node (at boot, or when another node
/// deployed it): `None` when it runs, else why not, to keep with the record.
pub(super) async fn start_record(mcm: &Mcm, record: &ContainerRecord) -> Option<String> {
    if mcm.images.resolve(&record.image_id).is_none() {
        return Some(format!("its image {} is not on this node", record.image_id));
    }
    let spec = spec_for(
        mcm,
        &record.name,
        &record.image_id,
        &record.env,
        &record.base_path,
    );
    mcm.registry
        .start(spec, Origin::Deployed)
        .await
        .err()
        .map(|e| e.to_string())
}

/// Starts every container recorded under `<data>/containers/`.
pub async fn restore(mcm: &Mcm) {
    let Ok(dir) = std::fs::read_dir(records_dir(mcm)) else {
        return;
    };
    let mut records = Vec::new();
    for entry in dir.flatten() {
        let path = entry.path();
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with('.') {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if !file.ends_with(".json") {
            continue;
        }
        match persist::read_json::<ContainerRecord>(&path) {
            Ok(r) if valid_name(&r.name) && file == format!("{}.json", r.name) => records.push(r),
            Ok(_) => tracing::warn!("{} does not match its file name; ignored", path.display()),
            Err(e) => tracing::error!("{e}"),
        }
    }
    let starts = records.into_iter().map(|record| async move {
        let error = start_record(mcm, &record).await;
        match &error {
            None => tracing::info!(container = %record.name, "restored at {}", record.base_path),
            Some(e) => tracing::error!(container = %record.name, "not restored: {e}"),
        }
        mcm.containers.put(record, error);
    });
    futures_util::future::join_all(starts).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_base_paths() {
        assert!(valid_name("my-mim"));
        assert!(valid_name("a.b_c-1"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"a".repeat(64)));
        assert!(check_base_path("/my-mim/v1").is_ok());
        assert!(check_base_path("/").is_err());
        assert!(check_base_path("/a//b").is_err());
        assert!(check_base_path("/a/../b").is_err());
        assert!(check_base_path("/mcm/x").is_err());
        assert!(check_base_path("/a b").is_err());
    }
}
