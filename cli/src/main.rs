//! `mimhost`: run JavaScript microservices (mims) in Boa behind a native HTTP server.

mod client;
mod deploy;
mod logs;
mod pack;

use clap::{Parser, Subcommand};
use mimhost_runtime::config::{parse_duration, parse_size};
use mimhost_runtime::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "mimhost",
    version,
    about = "Run JavaScript microservices (mims) in Boa behind a native HTTP and WebSocket server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the mims folder and deployed containers.
    Serve(ServeArgs),
    /// Pack a mim (folder or .js file) and deploy it: create the container or hot swap it.
    Deploy(deploy::DeployArgs),
    /// Pack a mim folder into a docker-save image tar.
    Pack(pack::PackArgs),
    /// List the containers of a host.
    Ls(deploy::LsArgs),
    /// Stop and remove a container.
    Rm(deploy::RmArgs),
    /// Print a container's recent log lines; -f follows new ones.
    Logs(logs::LogsArgs),
    /// Internal: a container's worker process (started by `serve`).
    #[command(hide = true)]
    Worker,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "MIMHOST_LISTEN", default_value = "127.0.0.1:8083")]
    listen: SocketAddr,
    /// Folder of drop-in mims.
    #[arg(long, env = "MIMHOST_MIMS", default_value = "./mims")]
    mims: PathBuf,
    /// Folder for the token, images, containers and stores.
    #[arg(long, env = "MIMHOST_DATA", default_value = "./.mimhost")]
    data: PathBuf,
    /// MCM API token (default: made once and kept in <data>/mcm-token).
    #[arg(long, env = "MIMHOST_TOKEN")]
    token: Option<String>,
    /// Redis URL of a cluster.
    #[arg(long, env = "MIMHOST_REDIS")]
    cluster: Option<String>,
    /// This node's id (default: random).
    #[arg(long, env = "MIMHOST_NODE_ID")]
    node_id: Option<String>,
    /// How long one invocation may run (e.g. 30s, 500ms).
    #[arg(long, env = "MIMHOST_HANDLER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    handler_timeout: Duration,
    /// Resident memory a container's worker may use (e.g. 256MiB).
    #[arg(long, env = "MIMHOST_MIM_MEMORY", default_value = "256MiB", value_parser = parse_size)]
    mim_memory: u64,
    /// Do not reload the mims folder on change.
    #[arg(long, env = "MIMHOST_NO_WATCH")]
    no_watch: bool,
    /// Largest request body for a container, in bytes (e.g. 10MiB).
    #[arg(long, env = "MIMHOST_MAX_BODY", default_value = "10MiB", value_parser = parse_size)]
    max_body: u64,
    /// Largest image upload to the MCM API (e.g. 64MiB).
    #[arg(long, env = "MIMHOST_MAX_IMAGE", default_value = "64MiB", value_parser = parse_size)]
    max_image: u64,
    /// How often idle WebSocket sessions are pinged (a peer silent for two is dropped).
    #[arg(long, env = "MIMHOST_PING_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    ping_interval: Duration,
    /// Largest WebSocket message a client may send (bigger: close 1009), e.g. 16MiB.
    #[arg(long, env = "MIMHOST_MAX_MESSAGE", default_value = "1MiB", value_parser = parse_size)]
    max_message: u64,
    /// Most requests and session events queued for one container (past it: 503 with
    /// Retry-After, or the session is closed 1008).
    #[arg(long, env = "MIMHOST_MAX_QUEUE", default_value_t = 1024)]
    max_queue: usize,
    /// Most bytes of bodies and messages queued for one container (e.g. 64MiB).
    #[arg(long, env = "MIMHOST_MAX_QUEUE_BYTES", default_value = "64MiB", value_parser = parse_size)]
    max_queue_bytes: u64,
    /// How long a WebSocket session that just wrote lets the next frames of a burst
    /// gather before it writes again (e.g. 20ms; 0 writes each as soon as it comes).
    #[arg(long, env = "MIMHOST_WS_COALESCE", default_value = "20ms", value_parser = parse_duration)]
    ws_coalesce: Duration,
    /// How many frames per write a WebSocket session's window aims at: while a burst's
    /// frames come faster, the window shortens (0: always the whole --ws-coalesce).
    #[arg(long, env = "MIMHOST_WS_COALESCE_FRAMES", default_value_t = mimhost_runtime::config::DEFAULT_WS_COALESCE_FRAMES)]
    ws_coalesce_frames: u32,
    /// How much longer a WebSocket session's window may grow per recipient of the latest
    /// broadcast, when frames come slowly because the host is short of CPU (e.g. 100us:
    /// 10,000 recipients may wait up to 1 s, the most; 0: never past --ws-coalesce).
    #[arg(long, env = "MIMHOST_WS_COALESCE_PER_SESSION", default_value = "0", value_parser = parse_duration)]
    ws_coalesce_per_session: Duration,
}

impl From<ServeArgs> for Config {
    fn from(a: ServeArgs) -> Self {
        Config {
            listen: a.listen,
            mims: a.mims,
            data: a.data,
            token: a.token,
            cluster: a.cluster,
            node_id: a.node_id,
            handler_timeout: a.handler_timeout,
            mim_memory: a.mim_memory,
            watch: !a.no_watch,
            max_body: a.max_body as usize,
            max_image: a.max_image as usize,
            ping_interval: a.ping_interval,
            max_message: a.max_message as usize,
            max_queue: a.max_queue,
            max_queue_bytes: a.max_queue_bytes as usize,
            ws_coalesce: a.ws_coalesce,
            ws_coalesce_frames: a.ws_coalesce_frames,
            ws_coalesce_per_session: a.ws_coalesce_per_session,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Worker => std::process::exit(mimhost_runtime::worker::run()),
        Command::Deploy(args) => exit_on_error(deploy::deploy(&args)),
        Command::Pack(args) => exit_on_error(pack::run(&args)),
        Command::Ls(args) => exit_on_error(deploy::ls(&args)),
        Command::Rm(args) => exit_on_error(deploy::rm(&args)),
        Command::Logs(args) => exit_on_error(logs::run(&args)),
        Command::Serve(args) => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("MIMHOST_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .init();
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(mimhost_runtime::host::run(args.into()))?;
            Ok(())
        }
    }
}

/// Prints a client command's error as `error: …` (with its causes, no backtrace) and
/// exits with status 1.
fn exit_on_error(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}
