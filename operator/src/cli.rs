//! Command line: `run` (default), `crd`, `version`; every `run` flag has an environment fallback
//! so the Deployment can configure the operator through env.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{leader::Timings, reconcile::validate::parse_duration};

/// The namespace the operator serves in a cluster (MVO's).
pub const OPERATOR_NAMESPACE: &str = "openshift-velero";

/// Version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Git commit of this build (`unknown` when built outside a checkout).
pub const GIT_HASH: &str = env!("MVO_GIT_HASH");

/// The managed Velero operator: a hardened backup bucket and a configured Velero, no human step.
#[derive(Debug, Parser)]
#[command(name = "managed-velero-operator", version = VERSION)]
pub struct Cli {
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator (the default).
    Run(RunArgs),
    /// Show what a reconcile would change in the cloud and in Kubernetes, changing nothing.
    Plan(RunArgs),
    /// Print the VeleroInstall CustomResourceDefinition as YAML.
    Crd,
    /// Print version, git commit and linked cloud providers.
    Version,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// JSON lines unless stderr is a terminal.
    Auto,
    /// JSON lines (in cluster).
    Json,
    /// Human-readable text.
    Text,
}

/// Flags of `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Namespace to manage Velero in.
    #[arg(long, env = "WATCH_NAMESPACE", default_value = OPERATOR_NAMESPACE)]
    pub namespace: String,

    /// Allow a namespace other than openshift-velero (development only).
    #[arg(long, env = "MVO_ALLOW_ANY_NAMESPACE")]
    pub allow_any_namespace: bool,

    /// Address of the metrics and health endpoints.
    #[arg(long, env = "MVO_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Take a coordination.k8s.io Lease before reconciling.
    #[arg(long, env = "MVO_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// How long a standby waits, from the last change of the Lease it saw, before taking it.
    #[arg(long, env = "MVO_LEASE_DURATION", default_value = "137s", value_parser = duration)]
    pub lease_duration: Duration,

    /// How long the leader keeps acting without renewing the Lease (shorter than the lease).
    #[arg(long, env = "MVO_RENEW_DEADLINE", default_value = "107s", value_parser = duration)]
    pub renew_deadline: Duration,

    /// How often the leader renews the Lease and a standby retries.
    #[arg(long, env = "MVO_RETRY_PERIOD", default_value = "26s", value_parser = duration)]
    pub retry_period: Duration,

    /// Log format.
    #[arg(long, env = "MVO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// Directory where the operator's cloud credentials secret is mounted.
    #[arg(long, env = "MVO_CREDENTIALS_DIR", default_value = "/var/run/secrets/managed-velero-operator")]
    pub credentials_dir: PathBuf,

    /// Cloud API endpoint override (S3-compatible servers, local environment).
    #[arg(long, env = "MVO_CLOUD_ENDPOINT")]
    pub cloud_endpoint: Option<String>,

    /// Velero's identity on token-based clusters, when the VeleroInstall spec gives none.
    #[command(flatten)]
    pub velero_identity: VeleroIdentityArgs,
}

/// Defaults for `VeleroInstall.spec.shortLivedCredentials`, used on clusters whose credential
/// operator only mints short-lived credentials (AWS STS, GCP workload identity federation).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct VeleroIdentityArgs {
    /// AWS: IAM role ARN Velero assumes (spec.shortLivedCredentials.roleARN wins).
    #[arg(long, env = "MVO_VELERO_ROLE_ARN")]
    pub velero_role_arn: Option<String>,

    /// GCP: service account email Velero impersonates (spec.shortLivedCredentials.serviceAccountEmail wins).
    #[arg(long, env = "MVO_VELERO_SERVICE_ACCOUNT_EMAIL")]
    pub velero_service_account_email: Option<String>,

    /// GCP: workload identity pool provider audience (spec.shortLivedCredentials.audience wins).
    #[arg(long, env = "MVO_VELERO_WIF_AUDIENCE")]
    pub velero_wif_audience: Option<String>,
}

impl VeleroIdentityArgs {
    /// The environment's defaults as provider input.
    pub fn input(&self) -> mvo_core::ShortLivedInput {
        mvo_core::ShortLivedInput {
            role_arn: self.velero_role_arn.clone(),
            service_account_email: self.velero_service_account_email.clone(),
            audience: self.velero_wif_audience.clone(),
        }
    }
}

/// Parses a Go-style duration flag (`137s`, `2m`).
fn duration(raw: &str) -> Result<Duration, String> {
    parse_duration(raw).ok_or_else(|| format!("{raw:?} is not a duration like 26s or 2m"))
}

impl RunArgs {
    /// The Lease timings of the flags, checked.
    pub fn lease_timings(&self) -> Result<Timings, String> {
        Timings {
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
        }
        .validate()
    }
}

impl Default for RunArgs {
    fn default() -> Self {
        // Parsing no arguments applies every default and env fallback.
        match Cli::try_parse_from(["managed-velero-operator", "run"]) {
            Ok(Cli { command: Some(Command::Run(args)) }) => args,
            _ => RunArgs {
                namespace: OPERATOR_NAMESPACE.into(),
                allow_any_namespace: false,
                metrics_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
                leader_election: true,
                lease_duration: Timings::OPENSHIFT.lease_duration,
                renew_deadline: Timings::OPENSHIFT.renew_deadline,
                retry_period: Timings::OPENSHIFT.retry_period,
                log_format: LogFormat::Auto,
                credentials_dir: "/var/run/secrets/managed-velero-operator".into(),
                cloud_endpoint: None,
                velero_identity: VeleroIdentityArgs::default(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_is_the_default_and_flags_parse() {
        let cli = Cli::try_parse_from(["mvo"]).expect("no args");
        assert!(cli.command.is_none());
        let cli = Cli::try_parse_from([
            "mvo",
            "run",
            "--namespace",
            "dev",
            "--allow-any-namespace",
            "--leader-election",
            "false",
            "--log-format",
            "text",
        ])
        .expect("flags");
        let Some(Command::Run(args)) = cli.command else { panic!("run expected") };
        assert_eq!(args.namespace, "dev");
        assert!(args.allow_any_namespace && !args.leader_election);
        assert_eq!(args.log_format, LogFormat::Text);
        assert_eq!(args.lease_timings(), Ok(Timings::OPENSHIFT), "OpenShift timings by default");
    }
}
