//! The OpenSSH extensions we answer (SSH_FXP_EXTENDED), advertised in the
//! VERSION reply with OpenSSH's version strings. `expand-path@openssh.com`
//! is what modern `scp` uses for `~` paths; `limits@openssh.com` lets
//! OpenSSH's client move 255 KiB per request instead of 32 KiB. Not
//! answered: `lsetstat@openssh.com`, `copy-data`.

use std::fs;
use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use nix::sys::statvfs::{FsFlags, fstatvfs, statvfs};
use russh_sftp::extensions::{
    ExpandPathExtension, FsyncExtension, HardlinkExtension, LimitsExtension, Statvfs,
    StatvfsExtension,
};
use russh_sftp::protocol::{ExtendedReply, Packet};
use tracing::debug;

use super::listing;
use super::ops::{expand_tilde, home_of, realpath};
use super::{Error, MAX_PACKET_LEN, MAX_READ_LEN, Session, blocking, ok, one_name};

pub(super) const ADVERTISED: [(&str, &str); 8] = [
    ("posix-rename@openssh.com", "1"),
    ("statvfs@openssh.com", "2"),
    ("fstatvfs@openssh.com", "2"),
    ("hardlink@openssh.com", "1"),
    ("fsync@openssh.com", "1"),
    ("limits@openssh.com", "1"),
    ("expand-path@openssh.com", "1"),
    ("home-directory", "1"),
    // Not advertised, though answered: `users-groups-by-id@openssh.com`.
    // A client that sees it (OpenSSH 8.7+) formats `ls -l` from SFTP v3
    // attributes, which have no link count, and prints `?` for it; without
    // it, `sftp` prints our longname, which has the count and the names.
];

/// The payload of `users-groups-by-id@openssh.com`: two strings, each a
/// packed list of big-endian u32 ids.
#[derive(serde::Deserialize)]
struct IdLists {
    uids: Vec<u8>,
    gids: Vec<u8>,
}

/// The payload of `home-directory`. (The other payloads have the shapes of
/// russh-sftp's client-side structs: `posix-rename` is the same two paths as
/// `hardlink`, `fstatvfs` the same handle as `fsync`.)
#[derive(serde::Deserialize)]
struct Username {
    name: String,
}

impl Session {
    pub(super) async fn extension(
        &mut self,
        id: u32,
        request: String,
        data: Vec<u8>,
    ) -> Result<Packet, Error> {
        debug!(request, "sftp extended");
        match request.as_str() {
            "posix-rename@openssh.com" => {
                let paths: HardlinkExtension = decode(data)?;
                let (from, to) = (self.resolve(&paths.oldpath), self.resolve(&paths.newpath));
                blocking(move || fs::rename(from, to)).await?;
                Ok(ok(id).into())
            }
            "hardlink@openssh.com" => {
                let paths: HardlinkExtension = decode(data)?;
                let (from, to) = (self.resolve(&paths.oldpath), self.resolve(&paths.newpath));
                blocking(move || fs::hard_link(from, to)).await?;
                Ok(ok(id).into())
            }
            "fsync@openssh.com" => {
                let FsyncExtension { handle } = decode(data)?;
                let file = self.handles.file(&handle)?.file.clone();
                blocking(move || file.sync_all()).await?;
                Ok(ok(id).into())
            }
            "statvfs@openssh.com" => {
                let StatvfsExtension { path } = decode(data)?;
                let path = self.resolve(&path);
                let stats = blocking(move || Ok(statvfs(&path)?)).await?;
                reply(id, &statvfs_reply(&stats))
            }
            "fstatvfs@openssh.com" => {
                let FsyncExtension { handle } = decode(data)?;
                let file = self.handles.file(&handle)?.file.clone();
                let stats = blocking(move || Ok(fstatvfs(&*file)?)).await?;
                reply(id, &statvfs_reply(&stats))
            }
            "limits@openssh.com" => {
                let limits = LimitsExtension {
                    max_packet_len: MAX_PACKET_LEN.into(),
                    max_read_len: MAX_READ_LEN.into(),
                    max_write_len: MAX_READ_LEN.into(),
                    max_open_handles: self.handles.room() as u64,
                };
                reply(id, &limits)
            }
            "expand-path@openssh.com" => {
                let ExpandPathExtension { path } = decode(data)?;
                let home = self.home.clone();
                let real = blocking(move || realpath(&expand_tilde(&home, &path)?)).await?;
                Ok(one_name(id, &real).into())
            }
            "home-directory" => {
                let Username { name } = decode(data)?;
                let home = if name.is_empty() {
                    self.home.clone()
                } else {
                    blocking(move || home_of(&name)).await?
                };
                Ok(one_name(id, &home).into())
            }
            "users-groups-by-id@openssh.com" => {
                let IdLists { uids, gids } = decode(data)?;
                let data = blocking(move || {
                    let mut data = BytesMut::new();
                    put_names(&mut data, &uids, listing::user_name);
                    put_names(&mut data, &gids, listing::group_name);
                    Ok(data.to_vec())
                })
                .await?;
                Ok(ExtendedReply { id, data }.into())
            }
            _ => Err(Error::Unsupported(request)),
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(data: Vec<u8>) -> Result<T, Error> {
    russh_sftp::de::from_bytes(&mut Bytes::from(data)).map_err(|e| Error::BadRequest(e.to_string()))
}

fn reply<T: serde::Serialize>(id: u32, reply: &T) -> Result<Packet, Error> {
    let data = russh_sftp::ser::to_bytes(reply).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(ExtendedReply {
        id,
        data: data.to_vec(),
    }
    .into())
}

/// A string holding one string per id: its name, or "" if it has none.
fn put_names(out: &mut BytesMut, ids: &[u8], name: fn(u32) -> Option<String>) {
    let mut names = BytesMut::new();
    for id in ids.chunks_exact(4) {
        let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
        let name = name(id).unwrap_or_default();
        names.put_u32(name.len() as u32);
        names.put_slice(name.as_bytes());
    }
    out.put_u32(names.len() as u32);
    out.put_slice(&names);
}

/// OpenSSH's reply layout; of the mount flags it reports read-only and nosuid.
fn statvfs_reply(stats: &nix::sys::statvfs::Statvfs) -> Statvfs {
    let mut flags = 0;
    if stats.flags().contains(FsFlags::ST_RDONLY) {
        flags |= 1;
    }
    if stats.flags().contains(FsFlags::ST_NOSUID) {
        flags |= 2;
    }
    Statvfs {
        block_size: stats.block_size(),
        fragment_size: stats.fragment_size(),
        blocks: stats.blocks(),
        blocks_free: stats.blocks_free(),
        blocks_avail: stats.blocks_available(),
        inodes: stats.files(),
        inodes_free: stats.files_free(),
        inodes_avail: stats.files_available(),
        fs_id: stats.filesystem_id(),
        flags,
        name_max: stats.name_max(),
    }
}
