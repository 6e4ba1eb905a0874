//! [`ScratchDir`]: a uniquely named directory under the system temp dir, removed when dropped.

use std::path::{Path, PathBuf};

/// Set to keep scratch directories (test environments' etcd data and logs, mounted-secret
/// directories) after the test for a look.
pub const KEEP_SCRATCH: &str = "MVO_TESTENV_KEEP";

/// A directory `<temp>/<prefix>-<uuid>`, created on [`ScratchDir::new`] and removed with
/// everything in it when dropped (unless [`KEEP_SCRATCH`] is set). Derefs to its [`Path`].
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates a fresh directory named after `prefix`.
    pub fn new(prefix: &str) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        Ok(ScratchDir(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_SCRATCH).is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
