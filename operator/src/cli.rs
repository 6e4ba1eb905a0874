//! Command line: `run` (default), `plan`, `crd`, `version`; every `run` flag has an environment
//! fallback so the Deployment can configure the operator through env.
//!
//! The flags of [`RunArgs`] belong to the top-level command and are made global by [`Cli::command`]
//! (not per field), so they are accepted before or after the subcommand, also when `run` is left
//! out, and a flag added later is global without anyone remembering to mark it.

use std::{ffi::OsString, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::{leader::Timings, reconcile::validate::parse_duration};

/// The namespace the operator serves in a cluster (MVO's).
pub const OPERATOR_NAMESPACE: &str = "openshift-velero";

/// Version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Git commit of this build (`unknown` when built outside a checkout).
pub const GIT_HASH: &str = env!("MVO_GIT_HASH");

/// The managed Velero operator: a hardened backup bucket and a configured Velero, no human step.
///
/// Parse with [`Cli::parse_global`] / [`Cli::try_parse_global`]: clap's own `parse` would leave the
/// flags top-level only.
#[derive(Debug, Parser)]
#[command(name = "managed-velero-operator", disable_version_flag = true)]
pub struct Cli {
    /// Print version, git commit and linked cloud providers (the same as `version`).
    #[arg(short = 'V', long = "version")]
    pub print_version: bool,

    /// Flags of `run` and `plan`.
    #[command(flatten)]
    pub run: RunArgs,

    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The clap command with every flag global.
    pub fn global_command() -> clap::Command {
        <Cli as CommandFactory>::command().mut_args(|arg| arg.global(true))
    }

    /// Parses `std::env::args`, exiting with clap's message on a usage error.
    pub fn parse_global() -> Cli {
        let matches = Cli::global_command().get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit())
    }

    /// Parses `args` (the first item is the program name).
    pub fn try_parse_global<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = Cli::global_command().try_get_matches_from(args)?;
        Cli::from_arg_matches(&matches)
    }
}

/// What `version` and `--version` print.
pub fn version_text(providers: &[&str]) -> String {
    format!("managed-velero-operator {VERSION} ({GIT_HASH})\nproviders: {}\n", providers.join(", "))
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator (the default).
    Run,
    /// Show what a reconcile would change in the cloud and in Kubernetes, changing nothing.
    Plan,
    /// Print the VeleroInstall CustomResourceDefinition as YAML.
    Crd,
    /// Print version, git commit and linked cloud providers.
    Version,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// JSON lines in a cluster (`KUBERNETES_SERVICE_HOST` set), text elsewhere.
    Auto,
    /// JSON lines (in cluster).
    Json,
    /// Human-readable text.
    Text,
}

/// Flags of `run` and `plan` (global: accepted before or after the subcommand).
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
        match Cli::try_parse_global(["managed-velero-operator"]) {
            Ok(cli) => cli.run,
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
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::global_command().debug_assert();
    }

    #[test]
    fn run_is_the_default_and_flags_parse() {
        let cli = Cli::try_parse_global(["mvo"]).expect("no args");
        assert!(cli.command.is_none());
        let cli = Cli::try_parse_global([
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
        assert!(matches!(cli.command, Some(Command::Run)));
        let args = cli.run;
        assert_eq!(args.namespace, "dev");
        assert!(args.allow_any_namespace && !args.leader_election);
        assert_eq!(args.log_format, LogFormat::Text);
        assert_eq!(args.lease_timings(), Ok(Timings::OPENSHIFT), "OpenShift timings by default");
    }

    #[test]
    fn flags_are_accepted_before_and_after_the_subcommand() {
        let forms: [&[&str]; 5] = [
            &["mvo", "--namespace", "dev", "--metrics-addr", "127.0.0.1:9", "--log-format", "text"],
            &["mvo", "--namespace", "dev", "run", "--metrics-addr", "127.0.0.1:9", "--log-format", "text"],
            &["mvo", "run", "--namespace", "dev", "--metrics-addr", "127.0.0.1:9", "--log-format", "text"],
            &["mvo", "--namespace", "dev", "--metrics-addr", "127.0.0.1:9", "--log-format", "text", "plan"],
            &["mvo", "plan", "--namespace=dev", "--metrics-addr=127.0.0.1:9", "--log-format=text"],
        ];
        for form in forms {
            let cli = Cli::try_parse_global(form).unwrap_or_else(|e| panic!("{form:?}: {e}"));
            assert_eq!(cli.run.namespace, "dev", "{form:?}");
            assert_eq!(cli.run.metrics_addr, SocketAddr::from(([127, 0, 0, 1], 9)), "{form:?}");
            assert_eq!(cli.run.log_format, LogFormat::Text, "{form:?}");
        }
    }

    #[test]
    fn version_flag_is_accepted_anywhere() {
        for form in [&["mvo", "--version"][..], &["mvo", "-V"], &["mvo", "run", "--version"]] {
            assert!(Cli::try_parse_global(form).expect("parses").print_version, "{form:?}");
        }
    }
}
