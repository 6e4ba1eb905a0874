//! The subcommands: what `main` dispatches to, and the exit code each outcome maps to.

use std::process::ExitCode;

use std::sync::Arc;

use futures_util::FutureExt;

use kube::{Api, Client, runtime::events::Reporter};
use mvo_core::{Registry, RegistryError};
use tracing::{info, warn};

use crate::{
    cli::{Cli, Command, GIT_HASH, LogFormat, OPERATOR_NAMESPACE, RunArgs, VERSION, version_text},
    controller,
    crd::{self, RECONCILED_NAME, VeleroInstall},
    health,
    http::{self, Endpoints},
    infrastructure::{ClusterFacts, FactsError},
    leader::{LeaderElection, Lost},
    providers,
    reconcile::{self, Context, apply::FIELD_MANAGER, error_chain},
    startup::{self, ProviderSettings, StartupError},
    telemetry::{self, LogStyle},
};

/// The providers `run` and `plan` choose from: [`Registry::global`], the linked ones, unless a
/// caller of [`main_with`] brings its own.
pub type Providers = fn() -> Result<&'static Registry, RegistryError>;

/// Runs `main` to completion on the operator's tokio runtime: a single thread. The operator
/// reconciles one object and waits on the network; worker threads only added their stacks and
/// malloc arenas (README "Footprint": 1.3 MiB less resident than 2 workers, latencies equal).
pub fn block_on(main: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(main),
        Err(err) => report(LogStyle::detect(LogFormat::Auto), &err, 1),
    }
}

/// Runs the parsed command line and returns the process exit code.
pub async fn main(cli: Cli) -> ExitCode {
    main_with(cli, Registry::global).await
}

/// [`main`] with the providers of `providers` instead of the linked ones: `make bench` runs the
/// GCP provider on the testkit's in-memory GCS control plane this way (no emulator speaks the
/// gRPC API of GCS).
pub async fn main_with(cli: Cli, providers: Providers) -> ExitCode {
    if cli.print_version {
        return print(&version_text(&providers::registered_platforms()));
    }
    match cli.command.unwrap_or(Command::Run) {
        Command::Crd => match crd::crd_yaml() {
            Ok(yaml) => print(&yaml),
            Err(err) => report(LogStyle::detect(cli.run.log_format), &err, 1),
        },
        Command::Version => print(&version_text(&providers::registered_platforms())),
        Command::Plan => {
            let style = telemetry::init_logging(cli.run.log_format);
            finish(style, plan(cli.run, providers).await)
        }
        Command::Run => {
            let style = telemetry::init_logging(cli.run.log_format);
            finish(style, run(cli.run, providers).await)
        }
    }
}

/// Prints `text` to stdout and succeeds, or reports why it could not.
fn print(text: &str) -> ExitCode {
    match stdout(text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(LogStyle::detect(LogFormat::Auto), &err, 1),
    }
}

/// Writes `text` to stdout; a reader that went away (`| head`) is not an error.
fn stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Maps the outcome of `run` or `plan` to the exit code, reporting a failure in one line.
fn finish(style: LogStyle, outcome: Result<(), RunError>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Startup(err)) => report(style, &err, err.exit_code()),
        Err(RunError::Other(err)) => report(style, err.as_ref(), 1),
    }
}

/// Writes the one line an administrator reads (SPEC 11): a JSON log line in JSON mode, else
/// `managed-velero-operator: <why>` on stderr; never a multi-line cause chain.
fn report(style: LogStyle, err: &(dyn std::error::Error + 'static), code: u8) -> ExitCode {
    let line = failure_line(err);
    if style.json {
        tracing::error!(exit_code = code, "{line}");
    } else {
        eprintln!("managed-velero-operator: {line}");
    }
    ExitCode::from(code)
}

/// `err` and its causes joined with `: ` on one line, leaving out a cause whose text the line
/// already holds (errors that print their source themselves), newlines flattened.
pub fn failure_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A startup failure with its own exit code, or anything else.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The environment is unsuitable or the API server failed during startup.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// Any other failure.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What `run` and `plan` start from: a client, the cluster facts and the provider.
struct Prepared {
    client: Client,
    facts: ClusterFacts,
    platform: Arc<dyn mvo_core::Platform>,
    /// Set on token-based clusters: the environment's defaults for Velero's identity.
    short_lived: Option<mvo_core::ShortLivedInput>,
}

/// The startup checks of SPEC section 2, shared by `run` and `plan`.
async fn prepare(args: &RunArgs, providers: Providers) -> Result<Prepared, RunError> {
    if args.namespace != OPERATOR_NAMESPACE && !args.allow_any_namespace {
        return Err(StartupError::WrongNamespace {
            expected: OPERATOR_NAMESPACE,
            actual: args.namespace.clone(),
        }
        .into());
    }
    info!(version = VERSION, git = GIT_HASH, providers = ?providers::registered_platforms(), "starting");
    let config =
        kube::Config::infer().await.map_err(|e| anyhow::Error::new(e).context("reading the kubeconfig"))?;
    let client = Client::try_from(health::with_deadlines(config))
        .map_err(|e| anyhow::Error::new(e).context("connecting to Kubernetes"))?;
    let registry = providers().map_err(StartupError::UnsupportedPlatform)?;
    let retry_for = startup::STARTUP_RETRY_FOR;
    let facts =
        match startup::retry_transient("facts", retry_for, || startup::discover_facts(&client, registry))
            .await
        {
            Err(StartupError::Facts(FactsError::NoPlatformType)) => {
                Err(StartupError::NoPlatformType { supported: providers::registered_platforms().join(", ") })
            }
            other => other,
        }?;
    let settings = ProviderSettings {
        credentials_dir: args.credentials_dir.clone(),
        endpoint: args.cloud_endpoint.clone(),
    };
    let platform = startup::select_platform(registry, &facts, &settings)?;
    let missing = platform.capabilities().missing();
    if !missing.is_empty() {
        warn!(platform = platform.name(), missing = ?missing, "provider runs with degraded capabilities");
    }
    startup::retry_transient("crd", retry_for, || startup::ensure_crd_installed(&client, &args.namespace))
        .await?;
    let token_based =
        startup::retry_transient("credentials mode", retry_for, || startup::discover_token_based(&client))
            .await?;
    if token_based && !platform.capabilities().workload_identity {
        warn!(platform = platform.name(), "token-based cluster, but the provider cannot wire Velero for it");
    }
    let short_lived = token_based.then(|| args.velero_identity.input());
    info!(
        platform = platform.name(),
        region = platform.region(),
        infrastructure = %facts.infrastructure_name,
        credentials = %platform.credential_source().describe(),
        token_based,
        "cluster facts resolved"
    );
    Ok(Prepared { client, facts, platform, short_lived })
}

/// `plan`: one read-only reconcile of VeleroInstall/cluster, printing what it would change.
pub async fn plan(args: RunArgs, providers: Providers) -> Result<(), RunError> {
    let Prepared { client, facts, platform, short_lived } = prepare(&args, providers).await?;
    let installs: Api<VeleroInstall> = Api::namespaced(client.clone(), &args.namespace);
    let Some(install) = installs
        .get_opt(RECONCILED_NAME)
        .await
        .map_err(|e| anyhow::Error::new(e).context("reading VeleroInstall/cluster"))?
    else {
        let line = format!(
            "VeleroInstall/{RECONCILED_NAME} does not exist in {}: nothing to plan\n",
            args.namespace
        );
        stdout(&line).map_err(anyhow::Error::new)?;
        return Ok(());
    };
    let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: None };
    let (ctx, plan) = Context::for_plan(client, platform, facts.infrastructure_name, reporter);
    let ctx = ctx.with_short_lived(short_lived);
    let outcome = reconcile::reconcile(Arc::new(install), Arc::new(ctx)).await;
    let mut changes = plan.changes();
    if changes.is_empty() {
        changes.push(format!(
            "No changes: the cloud and Kubernetes already match VeleroInstall/{RECONCILED_NAME}."
        ));
    }
    stdout(&(changes.join("\n") + "\n")).map_err(anyhow::Error::new)?;
    outcome
        .map(drop)
        .map_err(|err| anyhow::anyhow!("the planned reconcile failed: {}", error_chain(&err)).into())
}

/// `run`: startup checks of SPEC section 2, then the controller until SIGTERM.
pub async fn run(args: RunArgs, providers: Providers) -> Result<(), RunError> {
    let shutdown = shutdown_signal().map_err(|e| e.context("installing signal handlers"))?.shared();
    let Prepared { client, facts, platform, short_lived } = prepare(&args, providers).await?;
    let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
    let ctx = Arc::new(
        Context::new(client.clone(), platform, facts.infrastructure_name, reporter)
            .with_short_lived(short_lived),
    );

    let timings =
        args.lease_timings().map_err(|e| anyhow::anyhow!("invalid leader election timings: {e}"))?;
    let health = ctx.health.clone();
    let endpoints = Endpoints { metrics: ctx.metrics.clone(), health: health.clone() };
    let (address, server) = http::bind(args.metrics_addr, endpoints, shutdown.clone())
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("serving metrics on {}", args.metrics_addr)))?;
    let server = tokio::spawn(server);
    info!(%address, "serving /metrics, /healthz and /readyz");

    let mut election = args.leader_election.then(|| {
        let holder = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("managed-velero-operator-{}", uuid::Uuid::new_v4()));
        LeaderElection::new(client.clone(), &args.namespace, holder, timings)
    });
    if let Some(election) = &mut election {
        let standby = health.clone();
        tokio::select! {
            _ = election.acquire(|| standby.standing_by()) => {}
            _ = shutdown.clone() => {
                info!("stopped while standing by");
                return Ok(());
            }
        }
    }
    // Renewal runs in its own task: the controller's stop signal must be Sync, a Lease call is not.
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<Lost>();
    let releaser = election.clone();
    let renewal = election.map(|mut election| {
        tokio::spawn(async move {
            let lost = election.keep().await;
            let _ = lost_tx.send(lost);
        })
    });
    // Never act while the Go MVO may still act (a rolling replacement runs both pods for a while).
    // Completes once, when the Lease is lost; never without leader election. (A oneshot receiver
    // must not be polled again after it completed, and it is awaited in two places.)
    let lost_leadership = async move {
        match lost_rx.await {
            Ok(lost) => lost,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::pin!(lost_leadership);
    tokio::select! {
        _ = crate::mvo_lock::wait_until_released(&client, &args.namespace, crate::mvo_lock::POLL) => {}
        lost = &mut lost_leadership => {
            tracing::error!(reason = ?lost, "lost the Lease while waiting for the Go MVO's lock");
            return Err(anyhow::anyhow!("leadership lost ({lost:?}); restarting as a candidate").into());
        }
        _ = shutdown.clone() => {
            info!("stopped while waiting for the Go MVO's lock");
            if let Some(renewal) = renewal {
                renewal.abort();
            }
            if let Some(releaser) = releaser {
                releaser.release().await;
            }
            return Ok(());
        }
    }
    health.leading();
    // The one line that opens this replica's interval of acting; `stopped acting` closes it.
    info!(holder = releaser.as_ref().map(|e| e.holder()), "started acting");
    info!(namespace = %args.namespace, "controller starting");
    let controller = controller::watch_and_reconcile(ctx, &args.namespace, shutdown.clone());
    let lost = tokio::select! {
        _ = controller => None,
        // Losing the Lease drops the controller future, which cancels every reconcile at once:
        // a graceful stop would let in-flight passes write after a standby took over.
        lost = &mut lost_leadership => Some(lost),
    };
    if let Some(lost) = lost {
        tracing::error!(reason = ?lost, "stopped acting");
        return Err(anyhow::anyhow!("leadership lost ({lost:?}); restarting as a candidate").into());
    }
    info!(reason = "shutdown", "stopped acting");
    info!("controller stopped");
    if let Some(renewal) = renewal {
        renewal.abort();
    }
    if let Some(releaser) = releaser {
        releaser.release().await;
    }
    match server.await {
        Ok(result) => result.map_err(|e| anyhow::Error::new(e).context("metrics server"))?,
        Err(join) => return Err(anyhow::Error::new(join).context("metrics server task").into()),
    }
    Ok(())
}

/// A future completing on SIGTERM (Kubernetes stopping the pod) or Ctrl-C. The handlers are
/// installed when this is called, not when the future is first polled, so a signal arriving
/// during startup is not lost.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + Sync + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM received, stopping"),
            _ = interrupt.recv() => info!("SIGINT received, stopping"),
        }
    })
}
