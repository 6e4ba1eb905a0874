//! Entry point of `managed-velero-operator`; everything else lives in the library.

use std::process::ExitCode;

use mvo_operator::{app, cli::Cli};

fn main() -> ExitCode {
    app::block_on(app::main(Cli::parse_global()))
}
