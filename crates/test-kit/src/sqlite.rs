//! A temporary data folder for embedded-mode fixtures (SQLite files, key files).

use std::path::Path;

use crate::FixtureError;

/// A data folder removed when dropped.
#[derive(Debug)]
pub struct DataDir {
    dir: tempfile::TempDir,
}

impl DataDir {
    /// A new, empty folder under the system's temporary directory.
    pub fn new() -> Result<DataDir, FixtureError> {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-test-")
            .tempdir()
            .map_err(|e| FixtureError::Start(format!("temp dir: {e}")))?;
        Ok(DataDir { dir })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The URL of the SQLite database `file` in the folder (created on first connect).
    pub fn sqlite_url(&self, file: &str) -> String {
        sqlite_url(&self.dir.path().join(file))
    }
}

/// The URL of an SQLite database file, created on first connect (`mode=rwc`).
pub fn sqlite_url(file: &Path) -> String {
    format!("sqlite://{}?mode=rwc", file.display())
}
