//! Output directories that appear whole or not at all: everything is written into a
//! hidden sibling, which is renamed to the target only after the last byte.

use std::path::{Path, PathBuf};

use super::error::{AdapterError, Result, io};

pub struct StagedDir {
    staging: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Refuses an existing `target`; creates the staging directory beside it.
    pub fn new(target: &Path) -> Result<Self> {
        if target.exists() {
            return Err(AdapterError::OutputExists { path: target.to_path_buf() });
        }
        let name = target.file_name().map_or("out".into(), |n| n.to_string_lossy().into_owned());
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
        std::fs::create_dir(&staging).map_err(io(&staging))?;
        Ok(StagedDir { staging, target: target.to_path_buf(), committed: false })
    }

    /// Where to write.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Moves the finished directory into place (an atomic rename on one file system).
    pub fn commit(mut self) -> Result<()> {
        if self.target.exists() {
            return Err(AdapterError::OutputExists { path: self.target.clone() });
        }
        std::fs::rename(&self.staging, &self.target).map_err(io(&self.target))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: an error here must not hide the error that got us here.
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}
