//! Records the git commit the binary is built from, for `version` and the startup log, and
//! links release builds of the static musl binary (the image's) with the code the operator runs
//! placed first (link/ordered-lld.sh says why).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    order_hot_code_first();
    record_git_hash();
}

fn record_git_hash() {
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

/// The hot list `make layout` writes and the linker reads.
const HOT_FUNCTIONS: &str = "link/hot-functions.txt";

/// Makes the C compiler driver link with link/ordered-lld.sh: a shim named `ld.lld` in OUT_DIR,
/// put first on the driver's program path, runs it with rust-lld. Only for release builds of the
/// musl target (what the image ships and `make bench` measures), unless MVO_SYMBOL_ORDER=off.
fn order_hot_code_first() {
    println!("cargo:rerun-if-changed={HOT_FUNCTIONS}");
    println!("cargo:rerun-if-changed=link/ordered-lld.sh");
    println!("cargo:rerun-if-changed=link/demangle.sh");
    println!("cargo:rerun-if-env-changed=MVO_SYMBOL_ORDER");
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    if env("PROFILE") != "release"
        || env("CARGO_CFG_TARGET_ENV") != "musl"
        || env("MVO_SYMBOL_ORDER") == "off"
    {
        return;
    }
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let hot_functions = manifest_dir.join(HOT_FUNCTIONS);
    let Some(lld) = rust_lld(&env("RUSTC"), &env("HOST")) else {
        println!(
            "cargo:warning=no rust-lld in the toolchain: the operator is linked without its hot code first"
        );
        return;
    };
    let out_dir = PathBuf::from(env("OUT_DIR"));
    let shim = out_dir.join("ld.lld");
    let script = format!(
        "#!/bin/sh\nMVO_REAL_LLD={} MVO_HOT_FUNCTIONS={} MVO_LAYOUT_DIR={} exec sh {} \"$@\"\n",
        quoted(&lld),
        quoted(&hot_functions),
        quoted(&out_dir.join("layout")),
        quoted(&manifest_dir.join("link/ordered-lld.sh")),
    );
    if let Err(err) = write_executable(&shim, &script) {
        println!("cargo:warning=cannot write {}: {err}; linking without the hot code first", shim.display());
        return;
    }
    for kind in ["bins", "examples"] {
        println!("cargo:rustc-link-arg-{kind}=-B{}", out_dir.display());
        println!("cargo:rustc-link-arg-{kind}=-fuse-ld=lld");
        // Relative relocations as DT_RELR bitmaps (musl >= 1.2.4 applies them at start): ~35k
        // 24-byte entries, all read at every start, shrink to a few KiB.
        println!("cargo:rustc-link-arg-{kind}=-Wl,-z,pack-relative-relocs");
    }
}

/// The lld that ships with the compiler (`<sysroot>/lib/rustlib/<host>/bin/rust-lld`).
fn rust_lld(rustc: &str, host: &str) -> Option<PathBuf> {
    let out = Command::new(rustc).args(["--print", "sysroot"]).output().ok()?;
    let sysroot = String::from_utf8(out.stdout).ok()?;
    let lld = Path::new(sysroot.trim()).join("lib/rustlib").join(host).join("bin/rust-lld");
    lld.is_file().then_some(lld)
}

/// `path` in single quotes for sh.
fn quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

fn write_executable(path: &Path, content: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}
