//! Logging: `tracing` with an `RUST_LOG`-style filter; JSON lines in a cluster, text elsewhere;
//! colour only when the log goes to a terminal.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::cli::LogFormat;

/// The filter when `RUST_LOG` is unset or invalid.
pub const DEFAULT_FILTER: &str = "info,kube=warn";

/// How the log is written, once the format is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStyle {
    /// JSON lines (otherwise human-readable text).
    pub json: bool,
    /// ANSI colour codes (text on a terminal only).
    pub ansi: bool,
}

impl LogStyle {
    /// Resolves `format` for a process that is (or is not) in a cluster, whose log stream is (or is
    /// not) a terminal, with or without `NO_COLOR`.
    pub fn resolve(format: LogFormat, in_cluster: bool, terminal: bool, no_color: bool) -> LogStyle {
        let json = match format {
            LogFormat::Json => true,
            LogFormat::Text => false,
            LogFormat::Auto => in_cluster,
        };
        LogStyle { json, ansi: !json && terminal && !no_color }
    }

    /// Resolves `format` for this process: in a cluster when Kubernetes injected
    /// `KUBERNETES_SERVICE_HOST`; the log goes to stderr.
    pub fn detect(format: LogFormat) -> LogStyle {
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty());
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        LogStyle::resolve(format, in_cluster, std::io::stderr().is_terminal(), no_color)
    }
}

/// Installs the global subscriber and returns the style it writes. Safe to call once; later calls
/// keep the first subscriber.
pub fn init_logging(format: LogFormat) -> LogStyle {
    let style = LogStyle::detect(format);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if style.json {
        registry.with(fmt::layer().json().with_writer(std::io::stderr)).try_init()
    } else {
        registry.with(fmt::layer().with_ansi(style.ansi).with_writer(std::io::stderr)).try_init()
    };
    style
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_json_in_a_cluster_and_text_elsewhere() {
        assert!(LogStyle::resolve(LogFormat::Auto, true, false, false).json);
        assert!(LogStyle::resolve(LogFormat::Auto, true, true, false).json, "in cluster even on a tty");
        assert!(!LogStyle::resolve(LogFormat::Auto, false, false, false).json, "piped outside a cluster");
        assert!(!LogStyle::resolve(LogFormat::Auto, false, true, false).json);
        assert!(!LogStyle::resolve(LogFormat::Text, true, false, false).json, "explicit format wins");
        assert!(LogStyle::resolve(LogFormat::Json, false, true, false).json, "explicit format wins");
    }

    #[test]
    fn colour_only_for_text_on_a_terminal_without_no_color() {
        assert!(LogStyle::resolve(LogFormat::Text, false, true, false).ansi);
        assert!(!LogStyle::resolve(LogFormat::Text, false, false, false).ansi, "piped");
        assert!(!LogStyle::resolve(LogFormat::Text, false, true, true).ansi, "NO_COLOR");
        assert!(!LogStyle::resolve(LogFormat::Json, false, true, false).ansi);
    }
}
