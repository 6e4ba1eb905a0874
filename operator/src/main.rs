//! Entry point of `managed-velero-operator`; everything else lives in the library.

use std::process::ExitCode;

use mvo_operator::{app, cli::Cli};

#[tokio::main]
async fn main() -> ExitCode {
    app::main(Cli::parse_global()).await
}
