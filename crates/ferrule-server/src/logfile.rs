//! Log files that can be reopened in place: after logrotate renames a file, SIGUSR1
//! makes every process write to a fresh file at the configured path.

use crate::sink::{Destination, Torn};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// An append-only log file shared by the threads that write to it.
pub struct LogFile {
    path: PathBuf,
    file: Mutex<(File, Torn)>,
}

/// Every log file opened in this process, for [`reopen_all`].
static OPEN: Mutex<Vec<Weak<LogFile>>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl LogFile {
    pub fn open(path: &Path) -> io::Result<Arc<LogFile>> {
        let log = Arc::new(LogFile {
            path: path.to_path_buf(),
            file: Mutex::new((open_append(path)?, Torn::new())),
        });
        let mut open = lock(&OPEN);
        open.retain(|w| w.strong_count() > 0);
        open.push(Arc::downgrade(&log));
        Ok(log)
    }

    /// Appends one whole line: `O_APPEND` and the lock keep lines from different
    /// threads and processes whole; a line a full disk cut short is finished before
    /// the next ([`Torn`]).
    pub fn write_line(&self, line: &[u8]) -> io::Result<()> {
        let mut guard = lock(&self.file);
        let (file, torn) = &mut *guard;
        torn.write_line(line, |b| file.write(b))
    }

    fn reopen(&self) -> io::Result<()> {
        let fresh = open_append(&self.path)?;
        // The end of a torn line belongs to the old file.
        *lock(&self.file) = (fresh, Torn::new());
        Ok(())
    }
}

impl Destination for Arc<LogFile> {
    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        LogFile::write_line(self, line)
    }

    fn finish(&self) -> io::Result<()> {
        LogFile::write_line(self, b"")
    }
}

/// Reopens every log file of this process; the first failure is returned after all
/// were tried.
pub fn reopen_all() -> io::Result<()> {
    let files: Vec<Arc<LogFile>> = lock(&OPEN).iter().filter_map(Weak::upgrade).collect();
    let mut result = Ok(());
    for f in files {
        if let Err(e) = f.reopen() {
            if result.is_ok() {
                result = Err(io::Error::new(
                    e.kind(),
                    format!("{}: {e}", f.path.display()),
                ));
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_writes_to_a_new_file_after_a_rename() {
        let dir = std::env::temp_dir().join(format!("ferrule-logfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        let log = LogFile::open(&path).unwrap();
        log.write_line(b"one\n").unwrap();
        std::fs::rename(&path, dir.join("a.log.1")).unwrap();
        reopen_all().unwrap();
        log.write_line(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(
            std::fs::read_to_string(dir.join("a.log.1")).unwrap(),
            "one\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
