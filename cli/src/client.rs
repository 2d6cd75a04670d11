//! A small blocking client for the MCM API, shared by `deploy`, `ls`, `rm` and `logs`.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Where the MCM API is and how to authenticate: the flags every client command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// The host's URL.
    #[arg(long, env = "MIMHOST_SERVER", default_value = "http://127.0.0.1:8083")]
    pub server: String,
    /// The MCM token (default: the host's <data>/mcm-token).
    #[arg(long, env = "MIMHOST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The host's data folder, where its mcm-token file is.
    #[arg(long, env = "MIMHOST_DATA", default_value = "./.mimhost")]
    pub data: PathBuf,
}

/// An answer of the MCM API.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The JSON body (`Null` when the body is not JSON).
    pub body: Value,
}

impl Reply {
    /// The body of a 2xx answer, else an error holding the server's message.
    pub fn ok(self, what: &str) -> Result<Value> {
        if (200..300).contains(&self.status) {
            return Ok(self.body);
        }
        let message = self.body["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| self.body.to_string());
        let hint = match self.status {
            401 => "\n  the server refused the token: pass --token, set MIMHOST_TOKEN, or run beside the host (its token is in <data>/mcm-token)",
            413 => "\n  the image is too large: trim the mim, or start the host with a bigger --max-image",
            _ => "",
        };
        bail!("{what} failed ({}): {message}{hint}", self.status)
    }
}

/// The MCM API of one host.
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client for `args.server`, with the token from the flags, the env or the file.
    pub fn new(args: &ServerArgs) -> Result<Self> {
        let token = match &args.token {
            Some(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => read_token(args)?,
        };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(300))
            .build();
        Ok(Self {
            base: server_base(&args.server),
            token,
            agent,
        })
    }

    /// `http://HOST:PORT` without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}/mcm/v1{path}", self.base)
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&[u8]>,
    ) -> Result<Reply> {
        let response = self.respond(method, path, content_type, body)?;
        let status = response.status();
        let text = response
            .into_string()
            .context("reading the server's answer")?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply { status, body })
    }

    /// `GET path` read as a stream (server-sent events); a non-2xx answer is an error
    /// holding the server's message.
    pub fn stream(&self, path: &str, what: &str) -> Result<Box<dyn std::io::Read + Send>> {
        let response = self.respond("GET", path, "", None)?;
        let status = response.status();
        if (200..300).contains(&status) {
            return Ok(Box::new(response.into_reader()));
        }
        let text = response.into_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, body }.ok(what)?;
        bail!("{what} failed ({status})")
    }

    /// Sends one request; any HTTP status is an answer, no connection is an error.
    fn respond(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&[u8]>,
    ) -> Result<ureq::Response> {
        let url = self.url(path);
        let req = self
            .agent
            .request(method, &url)
            .set("Authorization", &format!("Bearer {}", self.token));
        let result = match body {
            Some(bytes) => req.set("Content-Type", content_type).send_bytes(bytes),
            None => req.call(),
        };
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => {
                return Err(anyhow!(
                    "cannot reach the mimhost server at {} ({t})\n  is `mimhost serve` running? pass --server URL or set MIMHOST_SERVER",
                    self.base
                ))
            }
        };
        Ok(response)
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Reply> {
        self.call("GET", path, "", None)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Result<Reply> {
        self.call("DELETE", path, "", None)
    }

    /// `method path` with a JSON body.
    pub fn send_json(&self, method: &str, path: &str, body: &Value) -> Result<Reply> {
        self.call(
            method,
            path,
            "application/json",
            Some(body.to_string().as_bytes()),
        )
    }

    /// `POST /images` with the tar as multipart field `image` and the name as field `name`.
    pub fn upload_image(&self, name: Option<&str>, file_name: &str, tar: &[u8]) -> Result<Reply> {
        let boundary = format!("mimhost-{:016x}", fastrand_seed());
        let mut body = Vec::with_capacity(tar.len() + 512);
        if let Some(name) = name {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n").as_bytes(),
            );
        }
        let file_name = file_name.replace(['"', '\r', '\n'], "_");
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{file_name}\"\r\nContent-Type: application/x-tar\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(tar);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        self.call(
            "POST",
            "/images",
            &format!("multipart/form-data; boundary={boundary}"),
            Some(&body),
        )
    }
}

/// A boundary seed that differs between runs (no RNG crate needed).
fn fastrand_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    (t as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

/// `127.0.0.1:8083` → `http://127.0.0.1:8083`; trailing slashes dropped.
pub fn server_base(server: &str) -> String {
    let s = server.trim().trim_end_matches('/');
    if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    }
}

fn read_token(args: &ServerArgs) -> Result<String> {
    let file = args.data.join("mcm-token");
    match std::fs::read_to_string(&file) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => bail!(
            "no MCM token: pass --token, set MIMHOST_TOKEN, or run beside the host so that {} exists (or point MIMHOST_DATA at the host's --data folder)",
            file.display()
        ),
    }
}
