//! `mimhost logs NAME [-f]`: a container's recent log lines, and with `-f` every new
//! one as it is written (server-sent events from the MCM API) until the container is
//! removed or Ctrl-C.

use crate::client::{Client, ServerArgs};
use anyhow::{Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};

/// `mimhost logs NAME [-f] [-n N]`.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// The container.
    pub name: String,
    /// Keep printing new lines as they are written (through worker restarts), until
    /// the container is removed.
    #[arg(short, long)]
    pub follow: bool,
    /// How many recent lines to print first (at most 1000).
    #[arg(short = 'n', long, default_value_t = 100)]
    pub lines: usize,
    /// Where the host is and how to authenticate.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Prints the lines; with `--follow`, streams until the server ends the stream.
pub fn run(args: &LogsArgs) -> Result<()> {
    let client = Client::new(&args.server)?;
    let path = format!(
        "/containers/{}/logs?limit={}{}",
        args.name,
        args.lines,
        if args.follow { "&follow=true" } else { "" }
    );
    let what = format!("reading the log of {}", args.name);
    let mut out = std::io::stdout().lock();
    if !args.follow {
        let body = client.get(&path)?.ok(&what)?;
        for line in body["data"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            writeln!(out, "{}", format_line(line))?;
        }
        return Ok(());
    }
    let reader = BufReader::new(client.stream(&path, &what)?);
    let (mut event, mut data) = (String::new(), String::new());
    for line in reader.lines() {
        let line = line.context("reading the log stream")?;
        if let Some(v) = line.strip_prefix("event: ") {
            event = v.to_string();
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push_str(v);
        } else if line.is_empty() && !data.is_empty() {
            let value: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            match event.as_str() {
                "log" => writeln!(out, "{}", format_line(&value))?,
                "end" => eprintln!("-- {}", value["reason"].as_str().unwrap_or("log ended")),
                "gap" => eprintln!("-- skipped {} lines (too far behind)", value["skipped"]),
                _ => {}
            }
            out.flush()?;
            event.clear();
            data.clear();
        }
    }
    Ok(())
}

/// `TIME LEVEL [source] message`, e.g.
/// `2026-01-02T03:04:05.678Z WARN  [restart:timeout] worker restarted: …`.
fn format_line(line: &Value) -> String {
    let s = |k: &str| line[k].as_str().unwrap_or("").to_string();
    let source = match line["cause"].as_str() {
        Some(cause) => format!("{}:{cause}", s("source")),
        None => s("source"),
    };
    format!(
        "{} {:<5} [{source}] {}",
        s("time"),
        s("level").to_ascii_uppercase(),
        s("message")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_are_tagged() {
        let line = serde_json::json!({"time": "T", "level": "warn", "source": "restart",
            "cause": "memory", "message": "worker restarted"});
        assert_eq!(
            super::format_line(&line),
            "T WARN  [restart:memory] worker restarted"
        );
    }
}
