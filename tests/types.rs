//! The TypeScript declarations (`types/`) hold for the example mims: `tsc --noEmit`
//! over `mims/` (every example carries `// @ts-check`, `mims/jsconfig.json` maps
//! the built-in modules to the declarations), and a deliberate mistake is caught.
//!
//! Needs `node` and `(cd types && npm ci)` (the pinned `typescript`); without them
//! the test fails when `CI=true` and is skipped otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The pinned tsc, or why it cannot run.
fn tsc() -> Result<PathBuf, String> {
    let tsc = repo().join("types/node_modules/typescript/bin/tsc");
    if !Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Err("no `node` on PATH".into());
    }
    if !tsc.exists() {
        return Err("typescript is not installed (cd types && npm ci)".into());
    }
    Ok(tsc)
}

fn can_run() -> Option<PathBuf> {
    match tsc() {
        Ok(tsc) => Some(tsc),
        Err(reason) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and the TypeScript check cannot run: {reason}")
        }
        Err(reason) => {
            eprintln!("skipping the TypeScript check: {reason}");
            None
        }
    }
}

/// Runs `tsc -p <project> --noEmit`; returns (success, output).
fn check(tsc: &Path, project: &Path) -> (bool, String) {
    let out = Command::new("node")
        .arg(tsc)
        .args([
            "-p",
            &project.display().to_string(),
            "--noEmit",
            "--pretty",
            "false",
        ])
        .output()
        .expect("run tsc");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_example_mim_is_checked_and_type_correct() {
    let Some(tsc) = can_run() else { return };
    for entry in std::fs::read_dir(repo().join("mims")).expect("read mims/") {
        let dir = entry.expect("entry").path();
        for file in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = file.path();
            if path.extension().is_some_and(|e| e == "js") {
                let text = std::fs::read_to_string(&path).expect("read mim");
                assert!(
                    text.starts_with("// @ts-check"),
                    "{} does not start with // @ts-check",
                    path.display()
                );
            }
        }
    }
    let (ok, output) = check(&tsc, &repo().join("mims/jsconfig.json"));
    assert!(ok, "tsc found errors in mims/:\n{output}");
}

#[test]
fn the_declarations_catch_a_misspelled_builtin() {
    let Some(tsc) = can_run() else { return };
    let dir = tempfile::TempDir::new().expect("temp dir");
    let types = repo().join("types");
    std::fs::write(
        dir.path().join("bad.js"),
        "// @ts-check\nvar websocket = require('/lib/xp/websocket');\nwebsocket.sendToGrup('g', 'x');\n\
         context.storage.getItm('k');\nconst { websockets } = require('sdk/net');\nwebsockets.getClnt('id');\n\
         exports.webSocketEvent = (/** @type {Mimhost.WebSocketEvent} */ e) => e.sesion;\n",
    )
    .expect("write bad.js");
    let config = serde_json::json!({
        "compilerOptions": {
            "checkJs": true, "allowJs": true, "noEmit": true, "target": "es2022", "lib": ["es2022"],
            "module": "commonjs", "moduleResolution": "node10", "types": [], "baseUrl": ".",
            "paths": { "/lib/xp/websocket": [types.join("lib/xp/websocket.d.ts")] }
        },
        "files": ["bad.js", types.join("mimhost.d.ts")]
    });
    std::fs::write(dir.path().join("jsconfig.json"), config.to_string()).expect("write jsconfig");
    let (ok, output) = check(&tsc, &dir.path().join("jsconfig.json"));
    assert!(!ok, "tsc accepted misspelled names:\n{output}");
    for wrong in ["sendToGrup", "getItm", "getClnt", "sesion"] {
        assert!(output.contains(wrong), "{wrong} not reported:\n{output}");
    }
}
