//! The per-session table of open files and directories, keyed by the opaque
//! handle strings the client gets back from OPEN and OPENDIR.

use std::collections::HashMap;
use std::fs::{File, ReadDir};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Error;

/// What a handle refers to.
pub(super) enum Opened {
    File(OpenFile),
    Dir(OpenDir),
}

impl Opened {
    pub fn path(&self) -> &Path {
        match self {
            Opened::File(file) => &file.path,
            Opened::Dir(dir) => &dir.path,
        }
    }
}

pub(super) struct OpenFile {
    pub path: PathBuf,
    /// Shared with the blocking task doing a read or write; reads and writes
    /// are positional, so the file has no cursor to keep in step.
    pub file: Arc<File>,
}

pub(super) struct OpenDir {
    pub path: PathBuf,
    /// `None` while a batch is being read on the blocking pool.
    pub entries: Option<ReadDir>,
    /// Whether "." and ".." are still to be sent, as OpenSSH lists them first.
    pub dots: bool,
}

impl OpenDir {
    pub fn new(path: PathBuf, entries: ReadDir) -> Self {
        Self {
            path,
            entries: Some(entries),
            dots: true,
        }
    }
}

pub(super) struct Handles {
    /// Invariant: `open.len() <= limit`.
    open: HashMap<String, Opened>,
    limit: usize,
    /// Handles are never reused within a session, so a stale handle cannot
    /// reach a file opened later.
    next: u64,
}

impl Handles {
    pub fn new(limit: usize) -> Self {
        Self {
            open: HashMap::new(),
            limit,
            next: 0,
        }
    }

    /// How many more handles may be opened.
    pub fn room(&self) -> usize {
        self.limit - self.open.len()
    }

    /// Fails early, before the file is opened, when the table is full.
    pub fn check_room(&self) -> Result<(), Error> {
        if self.room() == 0 {
            return Err(Error::TooManyHandles);
        }
        Ok(())
    }

    pub fn insert(&mut self, opened: Opened) -> Result<String, Error> {
        self.check_room()?;
        self.next += 1;
        let handle = self.next.to_string();
        self.open.insert(handle.clone(), opened);
        Ok(handle)
    }

    pub fn get(&self, handle: &str) -> Result<&Opened, Error> {
        self.open.get(handle).ok_or(Error::BadHandle)
    }

    pub fn file(&self, handle: &str) -> Result<&OpenFile, Error> {
        match self.get(handle)? {
            Opened::File(file) => Ok(file),
            Opened::Dir(_) => Err(Error::BadHandle),
        }
    }

    pub fn dir(&mut self, handle: &str) -> Result<&mut OpenDir, Error> {
        match self.open.get_mut(handle) {
            Some(Opened::Dir(dir)) => Ok(dir),
            _ => Err(Error::BadHandle),
        }
    }

    pub fn remove(&mut self, handle: &str) -> Result<Opened, Error> {
        self.open.remove(handle).ok_or(Error::BadHandle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some_file() -> Opened {
        let file = tempfile::tempfile().expect("temp file");
        Opened::File(OpenFile {
            path: PathBuf::from("/tmp/x"),
            file: Arc::new(file),
        })
    }

    #[test]
    fn the_table_is_capped_and_handles_are_not_reused() {
        let mut handles = Handles::new(2);
        let a = handles.insert(some_file()).expect("first");
        let b = handles.insert(some_file()).expect("second");
        assert_ne!(a, b);
        assert!(matches!(
            handles.insert(some_file()),
            Err(Error::TooManyHandles)
        ));

        handles.remove(&a).expect("close");
        assert!(matches!(handles.file(&a), Err(Error::BadHandle)));
        let c = handles.insert(some_file()).expect("room again");
        assert!(c != a && c != b);
        assert!(matches!(handles.dir(&c), Err(Error::BadHandle)));
        assert!(matches!(handles.remove("nonsense"), Err(Error::BadHandle)));
    }
}
