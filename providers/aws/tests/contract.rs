//! The testkit contract suite against moto, one test per case; a case the provider does not
//! claim, or whose setup the backend cannot perform, is reported ignored with the reason.

// The fixtures are shared with the `moto` test binary, which uses more of them.
#[allow(dead_code)]
#[path = "moto/common.rs"]
mod common;

fn main() -> std::process::ExitCode {
    mvo_testkit::contract::main(common::harness)
}
