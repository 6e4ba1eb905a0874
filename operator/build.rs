//! Records the git commit the binary is built from, for `version` and the startup log.

use std::process::Command;

fn main() {
    // Image builds have no .git (see .dockerignore): they pass the commit as MVO_GIT_HASH.
    if let Some(hash) = std::env::var("MVO_GIT_HASH").ok().filter(|h| !h.is_empty()) {
        println!("cargo:rustc-env=MVO_GIT_HASH={hash}");
        println!("cargo:rerun-if-env-changed=MVO_GIT_HASH");
        return;
    }
    let hash = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MVO_GIT_HASH={hash}");
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/refs/heads");
    println!("cargo:rerun-if-env-changed=MVO_GIT_HASH");
}
