//! The host: wires configuration, registry, workers and the HTTP server together,
//! and shuts them down in order.

use crate::config::Config;
use crate::hub::{Backplane, Hub, LocalBackplane};
use crate::mims_dir::{self, NodeFacts};
use crate::registry::Registry;
use crate::state::HostState;
use crate::supervisor::WorkerLimits;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Errors that stop the host from starting.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The data folder or token file could not be prepared.
    #[error("cannot prepare the data folder {path}: {source}")]
    Data {
        /// The folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The `--cluster` setting is unusable.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The listen address could not be bound.
    #[error(
        "cannot listen on {addr}: {source} (is another host running? try --listen 127.0.0.1:0)"
    )]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the host until Ctrl-C or SIGTERM.
pub async fn run(config: Config) -> Result<(), HostError> {
    let data_error = |source| HostError::Data {
        path: config.data.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&config.data).map_err(data_error)?;
    let token = ensure_token(&config).map_err(data_error)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| HostError::Listen {
            addr: config.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| HostError::Listen {
        addr: config.listen,
        source,
    })?;
    let node = NodeFacts {
        http_port: local.port(),
        node_id: config.node_id.clone().unwrap_or_else(random_node_id),
    };
    let limits = WorkerLimits {
        handler_timeout: config.handler_timeout,
        memory_bytes: config.mim_memory,
        outbound: Arc::new(crate::outbound::OutboundHttp::new(
            &config.data,
            config.max_body,
        )),
        queue: crate::supervisor::QueueLimits {
            calls: config.max_queue,
            bytes: config.max_queue_bytes,
        },
        store_redis: config.cluster.clone(),
    };
    let cluster = match &config.cluster {
        Some(url) => Some(crate::cluster::Cluster::new(url, &node.node_id)?),
        None => None,
    };
    let local_backplane = Arc::new(LocalBackplane::default());
    let backplane: Arc<dyn Backplane> = match &cluster {
        Some(c) => Arc::new(crate::cluster::backplane::ClusterBackplane(c.clone())),
        None => local_backplane.clone(),
    };
    let windows = crate::hub::WindowSettings {
        start: config.ws_coalesce,
        frames: config.ws_coalesce_frames,
        per_session: config.ws_coalesce_per_session,
        spread: std::env::var("MIMHOST_WS_SPREAD").map_or(true, |v| v != "0"),
    };
    let hub = Arc::new(Hub::new(&node.node_id, backplane, windows));
    hub.start_pinger(config.ping_interval);
    let registry = Arc::new(Registry::new(config.data.clone(), limits, hub.clone()));
    let (stop, shutdown) = crate::shutdown::signal();
    let seen = mims_dir::load_all(&registry, &config.mims, &node).await;
    let watcher = config.watch.then(|| {
        tokio::spawn(mims_dir::watch(
            registry.clone(),
            config.mims.clone(),
            node.clone(),
            seen,
            shutdown.clone(),
        ))
    });
    let mcm = Arc::new(crate::mcm::Mcm::open(
        &config,
        registry.clone(),
        node.clone(),
        cluster.as_ref(),
    ));
    mcm.restore().await;
    let directory = Box::new(Containers(Arc::downgrade(&registry)));
    match &cluster {
        Some(c) => c.start(&hub, directory),
        None => local_backplane.set_directory(directory),
    }
    if let Some(deploys) = mcm.deploys().cloned() {
        // Catch up with the cluster's deploys before the port opens.
        deploys.poll_once(&mcm).await;
        tokio::spawn(crate::cluster::deploys::run(deploys, mcm.clone()));
    }
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let state = Arc::new(HostState {
        config,
        registry: registry.clone(),
        local_port: local.port(),
        token,
        mcm,
        metrics,
        hub: hub.clone(),
        cluster,
    });
    // The port is bound above but not served before everything is loaded, so a
    // client that connects can use every mim.
    println!("listening on http://{local}");
    let _ = std::io::stdout().flush();
    tracing::info!(node = %node.node_id, "mimhost serving on http://{local}");
    let server = tokio::spawn(crate::http::serve(listener, state, shutdown));
    wait_for_signal().await;
    tracing::info!("shutting down");
    stop.fire();
    hub.close_all(crate::frame::close::GOING_AWAY, "host shutting down");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), hub.all_closed()).await;
    let _ = server.await;
    if let Some(watcher) = watcher {
        let _ = watcher.await;
    }
    registry.stop_all().await;
    tracing::info!("stopped");
    Ok(())
}

/// The registry as the hub's backplane sees it: the containers of this node (whose
/// channels a cluster node hears), and each one's Mesa namespace (SPEC 6: env
/// `MESA_NAMESPACE`, else its name).
struct Containers(std::sync::Weak<Registry>);

impl crate::cluster::Directory for Containers {
    fn containers(&self) -> Vec<String> {
        self.0
            .upgrade()
            .map(|r| r.list().iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default()
    }

    fn namespace(&self, container: &str) -> String {
        self.0
            .upgrade()
            .and_then(|r| r.get(container))
            .and_then(|c| c.supervisor.spec().env.get("MESA_NAMESPACE").cloned())
            .unwrap_or_else(|| container.to_string())
    }
}

/// The MCM token: the configured one, else the one kept in `<data>/mcm-token`
/// (made on first start, mode 0600).
fn ensure_token(config: &Config) -> std::io::Result<String> {
    if let Some(t) = &config.token {
        return Ok(t.clone());
    }
    let file = config.data.join("mcm-token");
    if let Ok(t) = std::fs::read_to_string(&file) {
        if !t.trim().is_empty() {
            tracing::info!("MCM token in {}", file.display());
            return Ok(t.trim().to_string());
        }
    }
    let token = random_hex(32);
    write_private(&file, &token)?;
    tracing::info!("made a new MCM token in {}", file.display());
    Ok(token)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_node_id() -> String {
    format!("node-{}", random_hex(4))
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
