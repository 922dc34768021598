//! Atomic, all-or-nothing output files.
//!
//! Every file is first written to a temporary file in its target folder, created with its final
//! mode (so a key file is 0600 from its first byte), fsynced, and only when *all* files of a run
//! are staged are they renamed into place. A failure before that removes the temporaries and
//! leaves old files untouched; a crash leaves at most a stray `.p11ca-tmp` file, never a
//! truncated output.
//!
//! Layer: on `error` (and `fault` in tests) only; it knows nothing of certificates or tokens.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Mode for public outputs (certificates, CSRs, key handles).
pub const PUBLIC_MODE: u32 = 0o644;
/// Mode for software private keys (node keys, never the CA key).
pub const SECRET_MODE: u32 = 0o600;

/// A set of files to be written together.
#[derive(Debug, Default)]
pub struct OutputSet {
    files: Vec<(PathBuf, Vec<u8>, u32)>,
}

impl OutputSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a file with its contents and mode.
    pub fn add(&mut self, path: impl Into<PathBuf>, contents: impl Into<Vec<u8>>, mode: u32) {
        self.files.push((path.into(), contents.into(), mode));
    }

    /// Paths that will be written, in order.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _, _)| p.as_path())
    }

    /// Each file's path and contents, in order.
    pub fn contents(&self) -> impl Iterator<Item = (&Path, &[u8])> {
        self.files
            .iter()
            .map(|(p, c, _)| (p.as_path(), c.as_slice()))
    }

    /// Stage every file, then rename them all into place.
    pub fn commit(self) -> Result<()> {
        let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
        for (path, contents, mode) in &self.files {
            match stage(path, contents, *mode) {
                Ok(tmp) => staged.push((tmp, path.clone())),
                Err(e) => {
                    for (tmp, _) in &staged {
                        let _ = fs::remove_file(tmp);
                    }
                    return Err(e);
                }
            }
        }
        for (i, (tmp, path)) in staged.iter().enumerate() {
            #[cfg(feature = "fault-injection")]
            if i == 1 {
                crate::fault::crash_point("between-renames");
            }
            if let Err(e) = fs::rename(tmp, path) {
                for (t, _) in &staged[i..] {
                    let _ = fs::remove_file(t);
                }
                return Err(Error::output(format!(
                    "{}: cannot move the finished file into place: {e}",
                    path.display()
                )));
            }
        }
        // Make the renames durable too.
        let mut dirs: Vec<PathBuf> = staged.iter().map(|(_, p)| parent_of(p)).collect();
        dirs.dedup();
        for d in dirs {
            if let Ok(f) = File::open(&d) {
                let _ = f.sync_all();
            }
        }
        Ok(())
    }
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn stage(path: &Path, contents: &[u8], mode: u32) -> Result<PathBuf> {
    let dir = parent_of(path);
    let name = path
        .file_name()
        .ok_or_else(|| Error::output(format!("{}: not a file name", path.display())))?;
    // Unique per call, not only per process: the threads of a batch stage files at once.
    static STAGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = STAGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{}.p11ca-tmp-{}-{n}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let fail = |what: &str, e: std::io::Error| {
        let _ = fs::remove_file(&tmp);
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => "; check that the folder is writable",
            std::io::ErrorKind::NotFound => "; create the folder first",
            _ if e.raw_os_error() == Some(28) => "; free some space and run again",
            _ => "",
        };
        Error::output(format!(
            "{}: cannot {what} in {}: {e}{hint}; nothing was written",
            path.display(),
            dir.display()
        ))
    };
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| fail("create a file", e))?;
    f.write_all(contents).map_err(|e| fail("write", e))?;
    f.sync_all().map_err(|e| fail("sync", e))?;
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_all_with_modes() {
        let d = tempfile::tempdir().unwrap();
        let mut s = OutputSet::new();
        s.add(d.path().join("a.pem"), "A", PUBLIC_MODE);
        s.add(d.path().join("a-key.pem"), "K", SECRET_MODE);
        // An old world-readable key file must not keep its mode.
        fs::write(d.path().join("a-key.pem"), "old").unwrap();
        fs::set_permissions(
            d.path().join("a-key.pem"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        s.commit().unwrap();
        assert_eq!(fs::read_to_string(d.path().join("a.pem")).unwrap(), "A");
        let m = fs::metadata(d.path().join("a-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o600);
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            2,
            "no temp files left"
        );
    }

    #[test]
    fn failure_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a.pem"), "old").unwrap();
        let mut s = OutputSet::new();
        s.add(d.path().join("a.pem"), "new", PUBLIC_MODE);
        s.add(d.path().join("missing/b.pem"), "B", PUBLIC_MODE);
        let e = s.commit().unwrap_err();
        assert!(e.message().contains("missing/b.pem"), "{e}");
        assert_eq!(fs::read_to_string(d.path().join("a.pem")).unwrap(), "old");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
