//! Entry point of `managed-velero-operator`; everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use mvo_operator::{app, cli::Cli};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    app::main(Cli::parse()).await
}
