//! The source pre-scan that refuses over-deep code before Boa's parser sees it:
//! whatever it lets through must parse (or fail to parse) without exhausting the
//! stack of the worker's JS thread.
#![no_main]

use boa_engine::{Context, Module, Script, Source};
use libfuzzer_sys::fuzz_target;
use mimhost_bindings::nesting::{check_nesting, MAX_SOURCE_NESTING};
use std::sync::mpsc;
use std::sync::OnceLock;

/// The worker's JS thread stack (see runtime/src/worker): parsing runs on one like it.
const JS_STACK: usize = 512 << 20;

/// One long-lived big-stack thread that parses what the target sends it.
fn parser() -> &'static mpsc::SyncSender<(String, mpsc::SyncSender<()>)> {
    static PARSER: OnceLock<mpsc::SyncSender<(String, mpsc::SyncSender<()>)>> = OnceLock::new();
    PARSER.get_or_init(|| {
        let (tx, rx) = mpsc::sync_channel::<(String, mpsc::SyncSender<()>)>(0);
        std::thread::Builder::new()
            .stack_size(JS_STACK)
            .spawn(move || {
                let mut context = Context::default();
                for (source, done) in rx {
                    // Parse only, as a script and as a module: nothing in the input runs.
                    let _ = Script::parse(Source::from_bytes(source.as_bytes()), None, &mut context);
                    let _ = Module::parse(Source::from_bytes(source.as_bytes()), None, &mut context);
                    let _ = done.send(());
                }
            })
            .expect("spawn the parser thread");
        tx
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    if check_nesting(source, MAX_SOURCE_NESTING).is_err() {
        return;
    }
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    parser()
        .send((source.to_string(), done_tx))
        .expect("parser thread alive");
    done_rx.recv().expect("parser thread answered");
});
