//! [`AzuriteEnv`]: a real Azurite blob service (Microsoft's Azure Storage emulator, from npm),
//! started on a random 127.0.0.1 port for the Azure provider's tests.
//!
//! It runs the way the provider talks to Azure: HTTPS (a throw-away CA and server certificate
//! made with `openssl` per instance; clients trust [`AzuriteEnv::ca_pem`]) and Entra ID bearer
//! tokens (`--oauth basic`: Azurite checks a token's issuer, audience and lifetime, not its
//! signature; [`AzuriteEnv::bearer_token`] makes one). Blob service only, in memory
//! (`--inMemoryPersistence`), well-known account `devstoreaccount1`.
//!
//! `--skipApiVersionCheck`: the Azure SDK for Rust sends a newer `x-ms-version` than the pinned
//! Azurite (3.35.0, the last release that runs on Node 20) knows; Azurite refuses unknown
//! versions unless told not to check. `--loose` is not used.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{EnvError, cached_bin_dir, free_port, io, spawn_watchdog};
use crate::scratch::{KEEP_SCRATCH, ScratchDir};

/// The emulator's well-known account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// How long Azurite may take to answer after start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Azurite blob service.
#[derive(Debug)]
pub struct AzuriteEnv {
    endpoint: String,
    ca_pem: Vec<u8>,
    child: Option<Child>,
    dir: ScratchDir,
}

static SHARED_AZURITE: OnceLock<Result<AzuriteEnv, String>> = OnceLock::new();

impl AzuriteEnv {
    /// The instance shared by every test of this test binary, started on first use.
    pub fn shared() -> Result<&'static AzuriteEnv, EnvError> {
        let env = SHARED_AZURITE.get_or_init(|| {
            let env = AzuriteEnv::start().map_err(|e| e.to_string())?;
            spawn_watchdog(std::process::id(), &[env.pid()], &env.dir).map_err(|e| e.to_string())?;
            Ok(env)
        });
        env.as_ref().map_err(|detail| EnvError::Start { what: "shared Azurite", detail: detail.clone() })
    }

    /// Starts a dedicated instance from the cached install, stopped when dropped.
    pub fn start() -> Result<AzuriteEnv, EnvError> {
        Self::start_from(&cached_bin_dir("install-azurite.sh")?)
    }

    /// Starts a dedicated instance from the npm bin directory `bin` (holding `azurite-blob`).
    pub fn start_from(bin: &Path) -> Result<AzuriteEnv, EnvError> {
        let azurite = bin.join("azurite-blob");
        if !azurite.is_file() {
            return Err(EnvError::MissingBinary { what: "Azurite", path: azurite, build: "make testenv" });
        }
        let dir = ScratchDir::new("mvo-azurite").map_err(io("creating the Azurite directory"))?;
        let (cert, key, ca_pem) = make_certificates(dir.path())?;
        let log =
            std::fs::File::create(dir.path().join("azurite.log")).map_err(io("creating azurite.log"))?;
        let log_err = log.try_clone().map_err(io("creating azurite.log"))?;
        let port = free_port()?;
        let port_arg = port.to_string();
        let mut command = Command::new(&azurite);
        if std::env::var_os(KEEP_SCRATCH).is_some() {
            // Kept instances are for debugging: log every request and answer.
            command.arg("--debug").arg(dir.path().join("debug.log"));
        }
        let child = command
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port_arg, "--inMemoryPersistence"])
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(["--oauth", "basic", "--skipApiVersionCheck", "--silent"])
            // In memory, nothing is written; anything Azurite still writes lands in the instance dir.
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io("starting Azurite"))?;
        let mut env =
            AzuriteEnv { endpoint: format!("https://127.0.0.1:{port}"), ca_pem, child: Some(child), dir };
        env.wait_ready()?;
        Ok(env)
    }

    fn wait_ready(&mut self) -> Result<(), EnvError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let address = self.endpoint.trim_start_matches("https://").to_owned();
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&address).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = std::fs::read_to_string(self.dir.path().join("azurite.log")).unwrap_or_default();
                return Err(EnvError::Start {
                    what: "Azurite",
                    detail: format!("exited with {status}: {log}"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(EnvError::Start {
            what: "Azurite",
            detail: format!("no answer on {address} in {START_TIMEOUT:?}"),
        })
    }

    /// The server's base URL (`https://127.0.0.1:PORT`); accounts are served path-style under it.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The Blob service URL of the well-known account (`https://127.0.0.1:PORT/devstoreaccount1`;
    /// no trailing slash: the SDK appends container names as path segments).
    pub fn account_url(&self) -> String {
        format!("{}/{AZURITE_ACCOUNT}", self.endpoint)
    }

    /// The PEM of the CA that signed the server's certificate.
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    /// The server's process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// An Entra ID-shaped bearer token Azurite accepts for the next `valid_for`: issuer
    /// `https://sts.windows.net/<tenant>/`, audience `https://storage.azure.com`, and a
    /// placeholder signature (Azurite's basic OAuth mode does not verify signatures).
    pub fn bearer_token(valid_for: Duration) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let header = r#"{"alg":"RS256","typ":"JWT"}"#;
        let claims = format!(
            r#"{{"aud":"https://storage.azure.com","iss":"https://sts.windows.net/00000000-0000-0000-0000-000000000000/","iat":{iat},"nbf":{iat},"exp":{exp},"oid":"mvo-test"}}"#,
            iat = now.saturating_sub(60),
            exp = now + valid_for.as_secs(),
        );
        format!(
            "{}.{}.{}",
            base64url(header.as_bytes()),
            base64url(claims.as_bytes()),
            base64url(b"unsigned")
        )
    }
}

impl Drop for AzuriteEnv {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the `openssl` CLI in
/// `dir`: (certificate path, key path, CA PEM).
fn make_certificates(dir: &Path) -> Result<(PathBuf, PathBuf, Vec<u8>), EnvError> {
    let path = |name: &str| dir.join(name);
    std::fs::write(
        path("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(io("writing server.ext"))?;
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let steps: [Vec<&str>; 3] = [
        [&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"]].concat(),
        [&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]]
            .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    ];
    for (i, args) in steps.iter().enumerate() {
        let mut command = Command::new("openssl");
        command.args(args).current_dir(dir).stdin(Stdio::null());
        if i == 0 {
            command.args(["-subj", "/CN=mvo-test-ca", "-addext", "basicConstraints=critical,CA:TRUE"]);
            command.args(["-addext", "keyUsage=critical,keyCertSign"]);
        }
        let output = command.output().map_err(io("running openssl (make testenv checks for it)"))?;
        if !output.status.success() {
            return Err(EnvError::Start {
                what: "Azurite certificates",
                detail: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
    }
    let ca_pem = std::fs::read(path("ca.pem")).map_err(io("reading ca.pem"))?;
    Ok((path("server.pem"), path("server.key"), ca_pem))
}

/// Unpadded base64url, for the token's three parts.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_the_rfc_vectors() {
        for (input, expected) in
            [("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE")]
        {
            assert_eq!(base64url(input.as_bytes()), expected);
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
