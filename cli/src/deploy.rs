//! `mimhost deploy`, `ls` and `rm`: the MCM API from the command line.

use crate::client::{Client, ServerArgs};
use crate::pack;
use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::time::Instant;

/// `mimhost deploy DIR|FILE.js|IMAGE.tar`.
#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    /// The mim: a folder with index.js, a single .js file, or an image tar (.tar, .tar.gz, .tgz).
    pub target: PathBuf,
    /// Container name (default: the folder, file or image name).
    #[arg(long)]
    pub name: Option<String>,
    /// Container env entry, e.g. --env WEBSOCKET_SUPPORT=true (repeatable; replaces the env on update).
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Where the host is and how to authenticate.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `mimhost rm NAME`.
#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// The container to remove.
    pub name: String,
    /// Also delete its stored data.
    #[arg(long)]
    pub purge: bool,
    /// Where the host is and how to authenticate.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `mimhost ls`.
#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// Where the host is and how to authenticate.
    #[command(flatten)]
    pub server: ServerArgs,
}

fn is_image_tar(path: &std::path::Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    [".tar", ".tar.gz", ".tgz"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// Parses `K=V` entries.
fn parse_env(entries: &[String]) -> Result<Map<String, Value>> {
    let mut env = Map::new();
    for entry in entries {
        let Some((k, v)) = entry.split_once('=') else {
            bail!("--env {entry:?} is not K=V (e.g. --env WEBSOCKET_SUPPORT=true)");
        };
        if k.trim().is_empty() {
            bail!("--env {entry:?} has an empty name");
        }
        env.insert(k.trim().to_string(), Value::String(v.to_string()));
    }
    Ok(env)
}

/// Runs `mimhost deploy`: pack (unless given a tar), upload, create or hot swap.
pub fn deploy(args: &DeployArgs) -> Result<()> {
    let started = Instant::now();
    let client = Client::new(&args.server)?;
    let env = parse_env(&args.env)?;
    let (tar, file_name, image_name) = if is_image_tar(&args.target) {
        let bytes = std::fs::read(&args.target)
            .with_context(|| format!("cannot read {}", args.target.display()))?;
        let file = args
            .target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (bytes, file, args.name.clone())
    } else {
        let name = args
            .name
            .clone()
            .unwrap_or_else(|| pack::default_name(&args.target));
        let (tar, _) = pack::pack(&args.target, &name)?;
        (tar, format!("{name}.tar"), Some(name))
    };
    let image = client
        .upload_image(image_name.as_deref(), &file_name, &tar)?
        .ok("uploading the image")?;
    let image_id = image["id"].as_str().unwrap_or_default().to_string();
    let name = match &args.name {
        Some(n) => n.clone(),
        None => {
            let image_name = image["name"].as_str().unwrap_or("mim");
            pack::sanitize(image_name.rsplit('/').next().unwrap_or(image_name))
        }
    };
    let existing = client.get(&format!("/containers/{name}"))?;
    let (verb, container) = match existing.status {
        404 => {
            let body = json!({ "name": name, "image": image_id, "env": Value::Object(env) });
            (
                "created",
                client
                    .send_json("POST", "/containers", &body)?
                    .ok("creating the container")?,
            )
        }
        200 if existing.body["source"] == "mims" => {
            bail!("{name} is a drop-in mim from the host's mims folder; deploy under another --name or edit its files")
        }
        200 => {
            let mut body = json!({ "image": image_id });
            if !args.env.is_empty() {
                body["env"] = Value::Object(env);
            }
            (
                "updated",
                client
                    .send_json("PUT", &format!("/containers/{name}"), &body)?
                    .ok("updating the container")?,
            )
        }
        status => {
            existing.ok("looking up the container")?;
            bail!("unexpected answer {status} when looking up container {name}")
        }
    };
    let base_path = container["basePath"].as_str().unwrap_or("/");
    let http = format!("{}{base_path}", client.base());
    let ws = format!("{}/ws{base_path}", client.base().replacen("http", "ws", 1));
    let ws_on = ["WEBSOCKET_SUPPORT", "MCM.WEBSOCKET_SUPPORT"]
        .iter()
        .any(|k| container["env"][k] == "true");
    println!(
        "{verb} {name} from image {image_id} ({} bytes) in {} ms",
        tar.len(),
        started.elapsed().as_millis()
    );
    println!("  http: {http}");
    if ws_on {
        println!("  ws:   {ws}");
    } else {
        println!("  ws:   {ws}  (opens once the env has WEBSOCKET_SUPPORT=true)");
    }
    Ok(())
}

/// Runs `mimhost ls`.
pub fn ls(args: &LsArgs) -> Result<()> {
    let client = Client::new(&args.server)?;
    let list = client.get("/containers")?.ok("listing containers")?;
    let rows: Vec<[String; 5]> = list["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or("-").to_string();
            [
                s("name"),
                s("imageId"),
                s("state"),
                s("basePath"),
                s("source"),
            ]
        })
        .collect();
    let header = ["NAME", "IMAGE", "STATE", "BASE PATH", "SOURCE"].map(str::to_string);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(rows.iter()) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(rows.iter()) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(())
}

/// Runs `mimhost rm`.
pub fn rm(args: &RmArgs) -> Result<()> {
    let client = Client::new(&args.server)?;
    let path = format!(
        "/containers/{}{}",
        args.name,
        if args.purge { "?purge=true" } else { "" }
    );
    client
        .delete(&path)?
        .ok(&format!("removing {}", args.name))?;
    if args.purge {
        println!("removed {} and its data", args.name);
    } else {
        println!(
            "removed {} (its data is kept; `mimhost rm {} --purge` deletes it)",
            args.name, args.name
        );
    }
    Ok(())
}
