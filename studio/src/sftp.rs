//! The built-in SFTP subsystem: SFTP v3 over the container's own filesystem,
//! behaving like OpenSSH's `sftp-server` (which `sftp`, modern `scp`, VS Code
//! and JetBrains are written against).
//!
//! russh-sftp decodes packets and calls `Session`, one request at a time;
//! `Session` resolves paths against the user's home (relative paths; there is
//! no chroot, the user owns the container), does the filesystem work on
//! tokio's blocking pool and answers with OpenSSH's status codes.
//!
//! File data moves with positional I/O (`read_at` / `write_all_at` on a shared
//! `std::fs::File` inside `spawn_blocking`): one syscall per request, no seek
//! state, and the data is not copied beyond russh-sftp's packet buffers. Reads are capped at
//! `MAX_READ_LEN`; the `limits@openssh.com` reply tells clients so, and
//! OpenSSH's client then moves 255 KiB per request.
//!
//! Layout: this file is the session and its request handlers; `ops.rs` the
//! filesystem calls with OpenSSH's semantics, `extensions.rs` the
//! `@openssh.com` extensions, `handles.rs` the per-session handle table,
//! `listing.rs` attributes and `ls -l` lines, `stream.rs` the stream adapter,
//! `tests.rs` end-to-end tests with russh-sftp's client.

mod extensions;
mod handles;
mod listing;
mod ops;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status, StatusCode, Version,
};
use russh_sftp::server::{self, StatusReply};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tracing::debug;

use self::handles::{Handles, OpenDir, OpenFile, Opened};
use self::listing::Owners;
use self::ops::{Target, open_options, realpath, rename_no_replace, set_attrs};
use self::stream::EndOnError;

/// Largest packet accepted from the client, as OpenSSH's `SFTP_MAX_MSG_LENGTH`.
const MAX_PACKET_LEN: u32 = 256 * 1024;
/// Largest read answered and write advertised: a packet minus room for headers.
const MAX_READ_LEN: u32 = MAX_PACKET_LEN - 1024;
/// Open files and directories per session.
const MAX_HANDLES: usize = 1024;

/// Serve one SFTP session on `stream` until the client closes it.
///
/// `home` is where relative paths start (OpenSSH: the initial directory).
/// All open files are closed when the session ends.
pub async fn serve<S>(stream: S, home: PathBuf)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    debug!(home = %home.display(), "sftp session start");
    let (ended, session_over) = oneshot::channel();
    let session = Session {
        home,
        handles: Handles::new(MAX_HANDLES),
        owners: Owners::default(),
        _ended: ended,
    };
    let config = server::Config {
        max_client_packet_len: MAX_PACKET_LEN,
    };
    // russh-sftp runs the session on a task of its own and drops the handler
    // (and with it every open file) when the stream ends.
    server::run_with_config(EndOnError::new(stream), session, config).await;
    let _ = session_over.await;
    debug!("sftp session end");
}

/// Why a request failed, as the client will see it.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("{}", describe(.0))]
    Io(#[from] io::Error),
    #[error("invalid handle")]
    BadHandle,
    #[error("too many open handles")]
    TooManyHandles,
    #[error("End of file")]
    Eof,
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("{0} is not supported")]
    Unsupported(String),
}

impl From<Error> for StatusReply {
    fn from(error: Error) -> Self {
        let code = match &error {
            Error::Io(err) => io_status(err),
            Error::BadHandle | Error::TooManyHandles => StatusCode::Failure,
            Error::Eof => StatusCode::Eof,
            Error::BadRequest(_) => StatusCode::BadMessage,
            Error::Unsupported(_) => StatusCode::OpUnsupported,
        };
        if code != StatusCode::Eof {
            debug!(%error, "sftp request failed");
        }
        StatusReply::new(code).with_message(error.to_string())
    }
}

/// OpenSSH's `errno_to_portable`.
fn io_status(err: &io::Error) -> StatusCode {
    match err.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ENOENT | Errno::ENOTDIR | Errno::EBADF | Errno::ELOOP) => {
            StatusCode::NoSuchFile
        }
        Some(Errno::EPERM | Errno::EACCES | Errno::EFAULT) => StatusCode::PermissionDenied,
        Some(Errno::ENAMETOOLONG | Errno::EINVAL) => StatusCode::BadMessage,
        Some(Errno::ENOSYS) => StatusCode::OpUnsupported,
        Some(_) => StatusCode::Failure,
        None => match err.kind() {
            io::ErrorKind::NotFound => StatusCode::NoSuchFile,
            io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
            _ => StatusCode::Failure,
        },
    }
}

/// "No such file or directory" rather than "... (os error 2)".
fn describe(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => Errno::from_raw(code).desc().to_owned(),
        None => err.to_string(),
    }
}

/// Runs filesystem work on the blocking pool.
async fn blocking<T, F>(work: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => Ok(result?),
        Err(join) => Err(io::Error::other(join.to_string()).into()),
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Success".to_owned(),
        language_tag: "en-US".to_owned(),
    }
}

/// A NAME reply with one path, as for REALPATH and READLINK.
fn one_name(id: u32, path: &Path) -> Name {
    let name = path.to_string_lossy().into_owned();
    Name {
        id,
        files: vec![File {
            longname: name.clone(),
            filename: name,
            attrs: FileAttributes::empty(),
        }],
    }
}

/// One SFTP session: russh-sftp's handler.
struct Session {
    home: PathBuf,
    handles: Handles,
    owners: Owners,
    /// Dropped with the session, which tells [`serve`] it is over.
    _ended: oneshot::Sender<()>,
}

impl Session {
    /// Relative paths start at home; "" means home, as in OpenSSH.
    fn resolve(&self, path: &str) -> PathBuf {
        self.home.join(path)
    }
}

impl server::Handler for Session {
    type Error = Error;

    fn unimplemented(&self) -> Error {
        Error::Unsupported("this request".to_owned())
    }

    async fn init(&mut self, version: u32, _: HashMap<String, String>) -> Result<Version, Error> {
        debug!(version, "sftp init");
        let mut reply = Version::new();
        reply.extensions = extensions::ADVERTISED
            .iter()
            .map(|&(name, version)| (name.to_owned(), version.to_owned()))
            .collect();
        Ok(reply)
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Error> {
        let path = self.resolve(&filename);
        debug!(path = %path.display(), flags = pflags.bits(), "sftp open");
        self.handles.check_room()?;
        let options = open_options(pflags, attrs.permissions);
        let file = blocking({
            let path = path.clone();
            move || options.open(path)
        })
        .await?;
        let file = Arc::new(file);
        let handle = self.handles.insert(Opened::File(OpenFile { path, file }))?;
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Error> {
        let opened = self.handles.remove(&handle)?;
        debug!(path = %opened.path().display(), "sftp close");
        // close(2) can block on network filesystems.
        blocking(move || {
            drop(opened);
            Ok(())
        })
        .await?;
        Ok(ok(id))
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Error> {
        let file = self.handles.file(&handle)?.file.clone();
        let len = len.min(MAX_READ_LEN) as usize;
        let data = blocking(move || {
            let mut buf = vec![0; len];
            let n = loop {
                match file.read_at(&mut buf, offset) {
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    result => break result?,
                }
            };
            buf.truncate(n);
            Ok(buf)
        })
        .await?;
        if data.is_empty() {
            return Err(Error::Eof);
        }
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Error> {
        let file = self.handles.file(&handle)?.file.clone();
        blocking(move || file.write_all_at(&data, offset)).await?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Error> {
        let path = self.resolve(&path);
        debug!(path = %path.display(), "sftp lstat");
        let meta = blocking(move || fs::symlink_metadata(path)).await?;
        let attrs = listing::attrs(&meta);
        Ok(Attrs { id, attrs })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Error> {
        let path = self.resolve(&path);
        debug!(path = %path.display(), "sftp stat");
        let meta = blocking(move || fs::metadata(path)).await?;
        let attrs = listing::attrs(&meta);
        Ok(Attrs { id, attrs })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Error> {
        let meta = match self.handles.get(&handle)? {
            Opened::File(open) => {
                let file = open.file.clone();
                blocking(move || file.metadata()).await?
            }
            Opened::Dir(dir) => {
                let path = dir.path.clone();
                blocking(move || fs::metadata(path)).await?
            }
        };
        let attrs = listing::attrs(&meta);
        Ok(Attrs { id, attrs })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Error> {
        let path = self.resolve(&path);
        debug!(path = %path.display(), "sftp setstat");
        blocking(move || set_attrs(Target::Path(&path), &attrs)).await?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Error> {
        match self.handles.get(&handle)? {
            Opened::File(open) => {
                let file = open.file.clone();
                blocking(move || set_attrs(Target::File(&file), &attrs)).await?;
            }
            Opened::Dir(dir) => {
                let path = dir.path.clone();
                blocking(move || set_attrs(Target::Path(&path), &attrs)).await?;
            }
        }
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Error> {
        let path = self.resolve(&path);
        debug!(path = %path.display(), "sftp opendir");
        self.handles.check_room()?;
        let entries = blocking({
            let path = path.clone();
            move || fs::read_dir(path)
        })
        .await?;
        let handle = self
            .handles
            .insert(Opened::Dir(OpenDir::new(path, entries)))?;
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Error> {
        let dir = self.handles.dir(&handle)?;
        let Some(mut entries) = dir.entries.take() else {
            return Err(Error::Eof);
        };
        let path = dir.path.clone();
        let dots = std::mem::take(&mut dir.dots);
        let mut owners = std::mem::take(&mut self.owners);
        let (entries, owners, batch) = blocking(move || {
            let batch = listing::read_batch(&path, &mut entries, dots, &mut owners);
            Ok((entries, owners, batch))
        })
        .await?;
        self.owners = owners;
        let files = batch?;
        if files.is_empty() {
            return Err(Error::Eof);
        }
        self.handles.dir(&handle)?.entries = Some(entries);
        Ok(Name { id, files })
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Error> {
        let path = self.resolve(&filename);
        debug!(path = %path.display(), "sftp remove");
        blocking(move || fs::remove_file(path)).await?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Error> {
        let path = self.resolve(&path);
        debug!(path = %path.display(), "sftp mkdir");
        let mode = attrs.permissions.map_or(0o777, |mode| mode & 0o7777);
        blocking(move || DirBuilder::new().mode(mode).create(path)).await?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Error> {
        let path = self.resolve(&path);
        debug!(path = %path.display(), "sftp rmdir");
        blocking(move || fs::remove_dir(path)).await?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Error> {
        let path = self.resolve(&path);
        debug!(path = %path.display(), "sftp realpath");
        let real = blocking(move || realpath(&path)).await?;
        Ok(one_name(id, &real))
    }

    async fn rename(&mut self, id: u32, oldpath: String, newpath: String) -> Result<Status, Error> {
        let (from, to) = (self.resolve(&oldpath), self.resolve(&newpath));
        debug!(from = %from.display(), to = %to.display(), "sftp rename");
        blocking(move || rename_no_replace(&from, &to)).await?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Error> {
        let path = self.resolve(&path);
        debug!(path = %path.display(), "sftp readlink");
        let target = blocking(move || fs::read_link(path)).await?;
        Ok(one_name(id, &target))
    }

    /// OpenSSH sends the link's target first and the new link's path second,
    /// the reverse of the draft; its clients rely on it, so do we.
    async fn symlink(
        &mut self,
        id: u32,
        linkpath: String,
        targetpath: String,
    ) -> Result<Status, Error> {
        let (target, link) = (PathBuf::from(linkpath), self.resolve(&targetpath));
        debug!(link = %link.display(), target = %target.display(), "sftp symlink");
        blocking(move || std::os::unix::fs::symlink(target, link)).await?;
        Ok(ok(id))
    }

    async fn extended(&mut self, id: u32, request: String, data: Vec<u8>) -> Result<Packet, Error> {
        self.extension(id, request, data).await
    }
}
