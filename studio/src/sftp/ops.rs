//! Filesystem operations whose SFTP meaning, as OpenSSH's sftp-server gives
//! it, is not what the obvious std call does: open flags, SETSTAT, REALPATH
//! of a path that does not exist yet, RENAME that must not replace, `~`.

use std::fs::{self, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag};
use nix::sys::stat::{UtimensatFlags, futimens, utimensat};
use nix::sys::time::TimeSpec;
use russh_sftp::protocol::{FileAttributes, OpenFlags};

/// OPEN's flags as OpenSSH maps them: no READ or WRITE means read-only, and
/// the creation flags go to open(2) as given (std's `OpenOptions` would
/// refuse CREAT or TRUNC without WRITE). The mode only matters on creation.
pub(super) fn open_options(flags: OpenFlags, permissions: Option<u32>) -> OpenOptions {
    let write = flags.contains(OpenFlags::WRITE);
    let mut extra = OFlag::empty();
    if flags.contains(OpenFlags::APPEND) {
        extra |= OFlag::O_APPEND;
    }
    if flags.contains(OpenFlags::CREATE) {
        extra |= OFlag::O_CREAT;
        if flags.contains(OpenFlags::EXCLUDE) {
            extra |= OFlag::O_EXCL;
        }
    }
    if flags.contains(OpenFlags::TRUNCATE) {
        extra |= OFlag::O_TRUNC;
    }
    let mut options = OpenOptions::new();
    options
        .read(flags.contains(OpenFlags::READ) || !write)
        .write(write)
        .custom_flags(extra.bits())
        .mode(permissions.map_or(0o666, |mode| mode & 0o7777));
    options
}

/// What SETSTAT changes: a path (through a final symlink) or an open file.
pub(super) enum Target<'a> {
    Path(&'a Path),
    File(&'a fs::File),
}

/// SETSTAT / FSETSTAT in OpenSSH's order: size, permissions, times, owner.
pub(super) fn set_attrs(target: Target<'_>, attrs: &FileAttributes) -> io::Result<()> {
    if let Some(size) = attrs.size {
        match target {
            Target::Path(path) => {
                let size = i64::try_from(size).map_err(|_| Errno::EINVAL)?;
                nix::unistd::truncate(path, size)?;
            }
            Target::File(file) => file.set_len(size)?,
        }
    }
    if let Some(mode) = attrs.permissions {
        let permissions = Permissions::from_mode(mode & 0o7777);
        match target {
            Target::Path(path) => fs::set_permissions(path, permissions)?,
            Target::File(file) => file.set_permissions(permissions)?,
        }
    }
    if attrs.atime.is_some() || attrs.mtime.is_some() {
        let time = |secs: Option<u32>| {
            secs.map_or(TimeSpec::UTIME_OMIT, |secs| {
                TimeSpec::from(Duration::from_secs(secs.into()))
            })
        };
        let (atime, mtime) = (time(attrs.atime), time(attrs.mtime));
        match target {
            Target::Path(path) => utimensat(
                AT_FDCWD,
                path,
                &atime,
                &mtime,
                UtimensatFlags::FollowSymlink,
            )?,
            Target::File(file) => futimens(file, &atime, &mtime)?,
        }
    }
    if attrs.uid.is_some() || attrs.gid.is_some() {
        match target {
            Target::Path(path) => std::os::unix::fs::chown(path, attrs.uid, attrs.gid)?,
            Target::File(file) => std::os::unix::fs::fchown(file, attrs.uid, attrs.gid)?,
        }
    }
    Ok(())
}

/// Canonical absolute path; like OpenSSH's, the last component need not exist.
pub(super) fn realpath(path: &Path) -> io::Result<PathBuf> {
    match fs::canonicalize(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            match (path.parent(), path.file_name()) {
                (Some(parent), Some(name)) => Ok(fs::canonicalize(parent)?.join(name)),
                _ => Err(err),
            }
        }
        result => result,
    }
}

/// RENAME must not replace an existing target (SFTP v3). As OpenSSH: a
/// regular file is linked to the new name and then unlinked, which fails
/// atomically if the target exists; otherwise, or where the filesystem has
/// no hard links, check then rename.
pub(super) fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    if fs::symlink_metadata(from)?.is_file() {
        match fs::hard_link(from, to) {
            Ok(()) => {
                if let Err(err) = fs::remove_file(from) {
                    let _ = fs::remove_file(to);
                    return Err(err);
                }
                return Ok(());
            }
            Err(err) => match err.raw_os_error().map(Errno::from_raw) {
                Some(Errno::EOPNOTSUPP | Errno::ENOSYS | Errno::EXDEV | Errno::EPERM) => {}
                _ => return Err(err),
            },
        }
    }
    if fs::symlink_metadata(to).is_ok() {
        return Err(Errno::EEXIST.into());
    }
    fs::rename(from, to)
}

/// `~`, `~/x` and `~user/x` as OpenSSH's expand-path; anything else is
/// resolved like every other path.
pub(super) fn expand_tilde(home: &Path, path: &str) -> io::Result<PathBuf> {
    let Some(rest) = path.strip_prefix('~') else {
        return Ok(home.join(path));
    };
    let (user, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let base = if user.is_empty() {
        home.to_path_buf()
    } else {
        home_of(user)?
    };
    Ok(base.join(rest.trim_start_matches('/')))
}

pub(super) fn home_of(user: &str) -> io::Result<PathBuf> {
    match nix::unistd::User::from_name(user)? {
        Some(user) => Ok(user.dir),
        None => Err(io::Error::new(io::ErrorKind::NotFound, "no such user")),
    }
}
