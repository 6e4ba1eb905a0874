//! The link step that places the code the operator runs first (operator/link/, README
//! "Footprint"): the wrapper linking a real object compiled with v0 names with the toolchain's
//! rust-lld, the demangling, and the committed hot list's shape.

use std::path::{Path, PathBuf};
use std::process::Command;

use mvo_testkit::ScratchDir;

fn link_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("link")
}

/// Cold functions first, so that the default order would fail the test.
const CRATE_SOURCE: &str = r#"
pub fn use_generic() -> (u16, u8) { (generic::<u16>(), generic::<u8>()) }
pub fn cold_path(x: u32) -> u32 { x.wrapping_add(7) }
pub fn hot_path(x: u32) -> u32 { x.wrapping_mul(3) }
#[inline(never)]
pub fn generic<T: Default>() -> T { T::default() }
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

/// The toolchain's rust-lld, as operator/build.rs finds it.
fn rust_lld() -> PathBuf {
    let rustc = |args: &[&str]| {
        let out = Command::new("rustc").args(args).output().expect("rustc runs");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let host =
        rustc(&["-vV"]).lines().find_map(|l| l.strip_prefix("host: ")).expect("host").trim().to_owned();
    let lld =
        Path::new(rustc(&["--print", "sysroot"]).trim()).join("lib/rustlib").join(host).join("bin/rust-lld");
    assert!(lld.is_file(), "{} missing", lld.display());
    lld
}

/// What one run of ordered-lld.sh left: the output, the twin it kept, the order and the report.
struct Linked {
    output: PathBuf,
    twin: PathBuf,
    order: String,
    report: String,
}

/// Links `object` into a stripped shared object with ordered-lld.sh and the real rust-lld.
fn link(scratch: &Path, object: &Path, hot_functions: &Path) -> Linked {
    let output = scratch.join("libhotcold.so");
    let layout = scratch.join("layout");
    let status = Command::new("sh")
        .arg(link_dir().join("ordered-lld.sh"))
        .args(["-shared", "--strip-all"])
        .arg(object)
        .arg("-o")
        .arg(&output)
        .env("MVO_REAL_LLD", rust_lld())
        .env("MVO_HOT_FUNCTIONS", hot_functions)
        .env("MVO_LAYOUT_DIR", &layout)
        .status()
        .expect("wrapper runs");
    assert!(status.success(), "the wrapper must always link");
    let read =
        |path: PathBuf| std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let work = layout.join("libhotcold.so");
    Linked {
        output,
        twin: work.join("unstripped"),
        order: read(work.join("symbol-order")),
        report: read(work.join("report")),
    }
}

/// The functions of `binary` by address, demangled as the hot list names them.
fn functions_by_address(binary: &Path) -> Vec<String> {
    let out =
        Command::new("nm").args(["--defined-only", "--numeric-sort"]).arg(binary).output().expect("nm runs");
    let listing = String::from_utf8(out.stdout).expect("utf-8");
    listing
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2))
        .map(demangled)
        .filter(|name| name.starts_with("hotcold::"))
        .collect()
}

fn has_symbol_table(binary: &Path) -> bool {
    let out = Command::new("readelf").arg("-S").arg(binary).output().expect("readelf runs");
    String::from_utf8_lossy(&out.stdout).contains(".symtab")
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
fn hot_functions_are_placed_first_and_the_stripped_output_keeps_an_unstripped_twin() {
    let scratch = ScratchDir::new("mvo-layout").expect("scratch dir");
    let object = compile_object(&scratch);
    let hot = scratch.join("hot-functions.txt");
    std::fs::write(&hot, "hotcold::generic::<u8>\nhotcold::hot_path\nmemcpy\nnot_in_this_binary::f\n")
        .expect("list");

    let linked = link(&scratch, &object, &hot);

    assert!(
        linked.order.lines().any(|s| s.starts_with("_R")),
        "v0 mangled names go to lld: {}",
        linked.order
    );
    assert!(
        linked.order.lines().any(|s| s == "memcpy"),
        "hot C symbols are named as they are: {}",
        linked.order
    );
    assert!(linked.report.starts_with("symbol order: 2 of "), "{}", linked.report);
    let by_address = functions_by_address(&linked.twin);
    let position = |name: &str| {
        by_address.iter().position(|n| n == name).unwrap_or_else(|| panic!("{name} not in {by_address:?}"))
    };
    for hot in ["hotcold::hot_path", "hotcold::generic::<u8>"] {
        for cold in ["hotcold::cold_path", "hotcold::generic::<u16>", "hotcold::use_generic"] {
            assert!(position(hot) < position(cold), "{hot} before {cold}: {by_address:?}");
        }
    }
    assert!(has_symbol_table(&linked.twin), "the twin keeps its symbols");
    assert!(!has_symbol_table(&linked.output), "the output is stripped as asked");
}

#[test]
fn a_missing_hot_list_links_in_the_default_order() {
    let scratch = ScratchDir::new("mvo-layout").expect("scratch dir");
    let object = compile_object(&scratch);

    let linked = link(&scratch, &object, &scratch.join("absent.txt"));

    assert!(linked.order.is_empty(), "{}", linked.order);
    assert!(linked.report.starts_with("symbol order: not computed"), "{}", linked.report);
    assert!(linked.output.is_file() && !has_symbol_table(&linked.output));
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
