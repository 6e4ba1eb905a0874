//! The link step that places the code the operator runs first (operator/link/, README
//! "Footprint"): the wrapper run on a real object compiled with v0 names, with a recording
//! stand-in for lld, and the committed hot list's shape.

use std::path::{Path, PathBuf};
use std::process::Command;

fn link_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("link")
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mvo-layout-{name}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const CRATE_SOURCE: &str = r#"
pub fn hot_path(x: u32) -> u32 { x.wrapping_mul(3) }
pub fn cold_path(x: u32) -> u32 { x.wrapping_add(7) }
#[inline(never)]
pub fn generic<T: Default>() -> T { T::default() }
pub fn use_generic() -> (u8, u16) { (generic::<u8>(), generic::<u16>()) }
"#;

/// Compiles [`CRATE_SOURCE`] to an object with v0 symbol names, as the musl release build does.
fn compile_object(scratch: &Path) -> PathBuf {
    std::fs::write(scratch.join("hotcold.rs"), CRATE_SOURCE).expect("source");
    let object = scratch.join("hotcold.o");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(rustc)
        .args(["--crate-type=lib", "--crate-name=hotcold", "--emit=obj", "-C", "symbol-mangling-version=v0"])
        .args(["-C", "opt-level=0", "-o"])
        .arg(&object)
        .arg(scratch.join("hotcold.rs"))
        .status()
        .expect("rustc runs");
    assert!(status.success(), "rustc failed");
    object
}

/// Runs ordered-lld.sh with a stand-in lld that records its arguments; returns (arguments of
/// the stand-in, symbol order, report).
fn link(scratch: &Path, object: &Path, hot_functions: &Path) -> (String, String, String) {
    let recorded = scratch.join("lld-args");
    let fake_lld = scratch.join("fake-lld");
    std::fs::write(&fake_lld, format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\n", recorded.display()))
        .expect("fake lld");
    std::fs::set_permissions(&fake_lld, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let layout = scratch.join("layout");
    let status = Command::new("sh")
        .arg(link_dir().join("ordered-lld.sh"))
        .arg(object)
        .args(["-o", "target/operator-bin"])
        .env("MVO_REAL_LLD", &fake_lld)
        .env("MVO_HOT_FUNCTIONS", hot_functions)
        .env("MVO_LAYOUT_DIR", &layout)
        .status()
        .expect("wrapper runs");
    assert!(status.success(), "the wrapper must always link");
    let read =
        |path: PathBuf| std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (read(recorded), read(layout.join("operator-bin/symbol-order")), read(layout.join("operator-bin/report")))
}

fn demangled(mangled: &str) -> String {
    let output = Command::new("sh")
        .arg(link_dir().join("demangle.sh"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(format!("{mangled}\n").as_bytes())?;
            child.wait_with_output()
        })
        .expect("demangle.sh runs");
    String::from_utf8(output.stdout).expect("utf-8").trim().to_owned()
}

#[test]
fn hot_functions_are_named_to_lld_by_their_mangled_names_and_cold_ones_are_not() {
    let scratch = Scratch::new("order");
    let object = compile_object(&scratch.0);
    let hot = scratch.0.join("hot-functions.txt");
    std::fs::write(&hot, "hotcold::generic::<u8>\nhotcold::hot_path\nmemcpy\nnot_in_this_binary::f\n")
        .expect("list");

    let (lld_args, order, report) = link(&scratch.0, &object, &hot);

    let order: Vec<&str> = order.lines().collect();
    let names: Vec<String> = order.iter().map(|symbol| demangled(symbol)).collect();
    assert!(order.iter().any(|s| s.starts_with("_R")), "v0 mangled names go to lld: {order:?}");
    for expected in ["hotcold::hot_path", "hotcold::generic::<u8>", "memcpy"] {
        assert!(names.iter().any(|n| n == expected), "{expected} placed first: {names:?}");
    }
    for cold in ["hotcold::cold_path", "hotcold::generic::<u16>", "hotcold::use_generic"] {
        assert!(!names.iter().any(|n| n == cold), "{cold} is not hot: {names:?}");
    }
    assert!(report.starts_with("symbol order: 2 of "), "{report}");
    let args: Vec<&str> = lld_args.lines().collect();
    assert_eq!(args[..2], ["-flavor", "gnu"], "{args:?}");
    assert!(args.contains(&object.to_str().expect("utf-8")), "the link arguments are passed on: {args:?}");
    assert!(args.iter().any(|a| a.starts_with("--symbol-ordering-file=")), "{args:?}");
}

#[test]
fn a_missing_hot_list_links_in_the_default_order() {
    let scratch = Scratch::new("missing");
    let object = compile_object(&scratch.0);

    let (lld_args, order, report) = link(&scratch.0, &object, &scratch.0.join("absent.txt"));

    assert!(order.is_empty(), "{order}");
    assert!(report.starts_with("symbol order: not computed"), "{report}");
    assert!(lld_args.contains("--symbol-ordering-file="), "{lld_args}");
}

#[test]
fn crate_hashes_are_removed_from_v0_and_legacy_names() {
    // v0: crate `mycrt` with disambiguator, path foo::bar; legacy: core::fmt::write with its hash.
    assert_eq!(demangled("_RNvNtCs1234abcd_5mycrt3foo3bar"), "mycrt::foo::bar");
    assert_eq!(demangled("_ZN4core3fmt5write17h0123456789abcdefE"), "core::fmt::write");
    // A slice of f32 is not a crate hash.
    assert_eq!(demangled("_RINvCs1234abcd_5mycrt1fSfE"), "mycrt::f::<[f32]>");
}

#[test]
fn the_committed_hot_list_is_sorted_hash_free_and_covers_the_reconcile_path() {
    let list = std::fs::read_to_string(link_dir().join("hot-functions.txt")).expect("hot list");
    let names: Vec<&str> = list.lines().collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(names, sorted, "`make layout` writes it sorted (LC_ALL=C) and unique");
    for name in &names {
        assert!(!name.is_empty() && !name.starts_with("0x"), "an unnamed address: {name:?}");
        let hashed = name.split("::").any(|part| {
            part.len() == 17 && part.starts_with('h') && part[1..].bytes().all(|b| b.is_ascii_hexdigit())
        });
        assert!(!hashed && !name.contains("]::"), "a crate hash left in {name:?}");
    }
    for needed in
        ["mvo_operator::reconcile::", "mvo_provider_aws::", "mvo_provider_azure::", "mvo_provider_gcp::"]
    {
        assert!(
            names.iter().any(|n| n.contains(needed)),
            "no {needed} function: regenerate with `make layout`"
        );
    }
}
