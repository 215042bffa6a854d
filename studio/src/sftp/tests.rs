//! End to end: [`serve`] on one end of an in-memory pipe, russh-sftp's own
//! client on the other, over a temporary home directory. (The real OpenSSH
//! clients are driven through the whole SSH server by the crate's
//! integration tests.)

use std::fmt::Debug;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use russh_sftp::client::error::Error as ClientError;
use russh_sftp::client::{RawSftpSession, SftpSession};
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;

use super::serve;

fn start(home: &Path) -> (DuplexStream, JoinHandle<()>) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let served = tokio::spawn(serve(server, home.to_path_buf()));
    (client, served)
}

async fn session(home: &Path) -> anyhow::Result<SftpSession> {
    Ok(SftpSession::new(start(home).0).await?)
}

async fn raw(home: &Path) -> anyhow::Result<RawSftpSession> {
    let raw = RawSftpSession::new(start(home).0);
    raw.init().await?;
    Ok(raw)
}

fn status<T: Debug>(result: Result<T, ClientError>) -> StatusCode {
    match result {
        Err(ClientError::Status(status)) => status.status_code,
        other => panic!("expected an error status, got {other:?}"),
    }
}

fn canonical(path: &Path) -> String {
    fs::canonicalize(path)
        .expect("canonical path")
        .to_string_lossy()
        .into_owned()
}

#[tokio::test]
async fn a_few_megabytes_go_up_and_come_back_intact() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let sftp = session(home.path()).await?;
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 123u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();

    let mut file = sftp.create("big.bin").await?;
    for chunk in data.chunks(100_000) {
        file.write_all(chunk).await?;
    }
    file.flush().await?; // fsync@openssh.com
    file.close().await?;
    assert!(fs::read(home.path().join("big.bin"))? == data);
    assert_eq!(
        sftp.metadata("big.bin").await?.size,
        Some(data.len() as u64)
    );

    let mut back = Vec::new();
    sftp.open("big.bin").await?.read_to_end(&mut back).await?;
    assert!(back == data, "read back {} bytes", back.len());
    Ok(())
}

#[tokio::test]
async fn reads_are_capped_and_end_with_eof() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    fs::write(home.path().join("f"), vec![7u8; 600_000])?;
    let raw = raw(home.path()).await?;
    let handle = raw
        .open("f", OpenFlags::READ, FileAttributes::empty())
        .await?
        .handle;
    let data = raw.read(handle.as_str(), 0, u32::MAX).await?.data;
    assert_eq!(data.len(), super::MAX_READ_LEN as usize);
    let tail = raw.read(handle.as_str(), 599_990, 100).await?.data;
    assert_eq!(tail.len(), 10);
    assert_eq!(
        status(raw.read(handle.as_str(), 600_000, 100).await),
        StatusCode::Eof
    );
    // Past off_t, as OpenSSH: EINVAL.
    assert_eq!(
        status(raw.read(handle.as_str(), u64::MAX, 100).await),
        StatusCode::BadMessage
    );
    raw.close(handle).await?;
    Ok(())
}

#[tokio::test]
async fn bad_handles_and_missing_files_are_errors_not_crashes() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let raw = raw(home.path()).await?;
    assert_eq!(status(raw.read("nope", 0, 10).await), StatusCode::Failure);
    assert_eq!(
        status(raw.write("nope", 0, b"x".to_vec()).await),
        StatusCode::Failure
    );
    assert_eq!(status(raw.close("nope").await), StatusCode::Failure);
    assert_eq!(status(raw.readdir("nope").await), StatusCode::Failure);
    let missing = raw.open("missing", OpenFlags::READ, FileAttributes::empty());
    assert_eq!(status(missing.await), StatusCode::NoSuchFile);
    assert_eq!(status(raw.stat("missing").await), StatusCode::NoSuchFile);
    assert_eq!(status(raw.opendir("missing").await), StatusCode::NoSuchFile);
    assert_eq!(status(raw.stat("nul\0byte").await), StatusCode::Failure);
    let unknown = raw
        .extended("no-such-extension@example.com", vec![])
        .await?;
    assert!(
        matches!(&unknown, Packet::Status(s) if s.status_code == StatusCode::OpUnsupported),
        "{unknown:?}"
    );
    // The session is still serving.
    assert_eq!(
        raw.realpath(".").await?.files[0].filename,
        canonical(home.path())
    );
    Ok(())
}

#[tokio::test]
async fn open_honours_create_exclusive_truncate_and_mode() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let raw = raw(home.path()).await?;
    let create = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE;
    let attrs = FileAttributes {
        permissions: Some(0o600),
        ..FileAttributes::empty()
    };
    let handle = raw.open("new", create, attrs.clone()).await?.handle;
    raw.write(handle.as_str(), 0, b"hello world".to_vec())
        .await?;
    raw.close(handle).await?;
    let mode = fs::metadata(home.path().join("new"))?.permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        status(raw.open("new", create, attrs).await),
        StatusCode::Failure
    );

    let truncate = OpenFlags::WRITE | OpenFlags::TRUNCATE;
    let handle = raw.open("new", truncate, FileAttributes::empty()).await?;
    raw.write(handle.handle.as_str(), 0, b"bye".to_vec())
        .await?;
    raw.close(handle.handle).await?;
    assert_eq!(fs::read(home.path().join("new"))?, b"bye");

    let read_only = raw
        .open("new", OpenFlags::READ, FileAttributes::empty())
        .await?;
    assert!(
        raw.write(read_only.handle.as_str(), 0, b"x".to_vec())
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn directories_list_make_and_remove() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    for i in 0..250 {
        fs::write(home.path().join(format!("file{i:03}")), b"x")?;
    }
    let sftp = session(home.path()).await?;
    sftp.create_dir("sub").await?;
    assert!(sftp.metadata("sub").await?.is_dir());

    let mut names: Vec<String> = sftp.read_dir(".").await?.map(|e| e.file_name()).collect();
    names.sort();
    assert_eq!(
        names.len(),
        250 + 1,
        "files and sub (the client hides dots)"
    );
    assert_eq!(names[0], "file000");
    assert_eq!(names.last().map(String::as_str), Some("sub"));

    // The longname is an `ls -l` line.
    let raw = raw(home.path()).await?;
    let handle = raw.opendir("").await?.handle;
    let batch = raw.readdir(handle.as_str()).await?.files;
    assert_eq!(batch.len(), 100, "OpenSSH's batch size");
    assert_eq!(
        (batch[0].filename.as_str(), batch[1].filename.as_str()),
        (".", "..")
    );
    let sub = raw.opendir("sub").await?.handle;
    let listed = raw.readdir(sub.as_str()).await?.files;
    assert!(listed.iter().all(|f| f.longname.starts_with('d')));
    assert_eq!(status(raw.readdir(sub.as_str()).await), StatusCode::Eof);

    assert_eq!(
        status(sftp.remove_dir("missing").await),
        StatusCode::NoSuchFile
    );
    sftp.remove_dir("sub").await?;
    assert!(!home.path().join("sub").exists());
    sftp.remove_file("file000").await?;
    assert_eq!(
        status(sftp.metadata("file000").await),
        StatusCode::NoSuchFile
    );
    Ok(())
}

#[tokio::test]
async fn mkdir_uses_the_requested_mode() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let raw = raw(home.path()).await?;
    let attrs = FileAttributes {
        permissions: Some(0o700),
        ..FileAttributes::empty()
    };
    raw.mkdir("private", attrs).await?;
    let mode = fs::metadata(home.path().join("private"))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    Ok(())
}

#[tokio::test]
async fn rename_refuses_to_replace_but_posix_rename_does() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let (a, b, c) = (
        home.path().join("a"),
        home.path().join("b"),
        home.path().join("c"),
    );
    fs::write(&a, b"A")?;
    fs::write(&b, b"B")?;
    let raw = raw(home.path()).await?;

    assert_eq!(status(raw.rename("a", "b").await), StatusCode::Failure);
    assert_eq!(
        (fs::read(&a)?, fs::read(&b)?),
        (b"A".to_vec(), b"B".to_vec())
    );
    fs::create_dir(home.path().join("d"))?;
    assert_eq!(status(raw.rename("d", "b").await), StatusCode::Failure);

    raw.rename("a", "c").await?;
    assert!(!a.exists());
    assert_eq!(fs::read(&c)?, b"A");

    let paths = russh_sftp::extensions::HardlinkExtension {
        oldpath: "c".to_owned(),
        newpath: "b".to_owned(),
    };
    raw.extended("posix-rename@openssh.com", paths.try_into()?)
        .await?;
    assert!(!c.exists());
    assert_eq!(fs::read(&b)?, b"A");

    raw.hardlink("b", "e").await?;
    assert_eq!(fs::read(home.path().join("e"))?, b"A");
    Ok(())
}

#[tokio::test]
async fn paths_resolve_against_home() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let real_home = canonical(home.path());
    fs::create_dir(home.path().join("dir"))?;
    let raw = raw(home.path()).await?;
    let realpath = async |path: &str| -> Result<String, ClientError> {
        Ok(raw.realpath(path).await?.files[0].filename.clone())
    };
    assert_eq!(realpath(".").await?, real_home);
    assert_eq!(realpath("").await?, real_home);
    assert_eq!(realpath("dir/../dir/.").await?, format!("{real_home}/dir"));
    assert_eq!(realpath("not-yet").await?, format!("{real_home}/not-yet"));
    assert_eq!(realpath("/").await?, "/");
    assert_eq!(
        status(realpath("no/such/thing").await),
        StatusCode::NoSuchFile
    );

    let expanded = raw.expand_path("~/dir").await?.files[0].filename.clone();
    assert_eq!(expanded, format!("{real_home}/dir"));
    let expanded = raw.expand_path("~").await?.files[0].filename.clone();
    assert_eq!(expanded, real_home);
    Ok(())
}

#[tokio::test]
async fn symlinks_follow_openssh_argument_order() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    fs::write(home.path().join("target"), b"T")?;
    let raw = raw(home.path()).await?;
    // OpenSSH's `ln -s target link` sends ("target", "link").
    raw.symlink("target", "link").await?;
    assert_eq!(
        fs::read_link(home.path().join("link"))?,
        Path::new("target")
    );
    assert_eq!(raw.readlink("link").await?.files[0].filename, "target");
    let lstat = raw.lstat("link").await?.attrs;
    assert!(lstat.is_symlink());
    assert_eq!(raw.stat("link").await?.attrs.size, Some(1));
    Ok(())
}

#[tokio::test]
async fn setstat_truncates_chmods_and_sets_times() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let path = home.path().join("f");
    fs::write(&path, b"0123456789")?;
    let raw = raw(home.path()).await?;
    let attrs = FileAttributes {
        size: Some(4),
        permissions: Some(0o640),
        atime: Some(1_000_000_000),
        mtime: Some(1_234_567_890),
        ..FileAttributes::empty()
    };
    raw.setstat("f", attrs).await?;
    let meta = fs::metadata(&path)?;
    assert_eq!(meta.len(), 4);
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    let mtime = meta.modified()?.duration_since(std::time::UNIX_EPOCH)?;
    assert_eq!(mtime, Duration::from_secs(1_234_567_890));

    let handle = raw
        .open("f", OpenFlags::WRITE, FileAttributes::empty())
        .await?;
    let grow = FileAttributes {
        size: Some(100),
        ..FileAttributes::empty()
    };
    raw.fsetstat(handle.handle.as_str(), grow).await?;
    assert_eq!(
        raw.fstat(handle.handle.as_str()).await?.attrs.size,
        Some(100)
    );
    Ok(())
}

#[tokio::test]
async fn limits_and_statvfs_answer() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let raw = raw(home.path()).await?;
    let limits = raw.limits().await?;
    assert_eq!(limits.max_read_len, u64::from(super::MAX_READ_LEN));
    assert_eq!(limits.max_open_handles, super::MAX_HANDLES as u64);
    let stats = raw.statvfs(".").await?;
    assert!(stats.blocks > 0 && stats.name_max > 0);
    let home_dir = raw.extended("home-directory", vec![0, 0, 0, 0]).await?;
    let Packet::Name(name) = home_dir else {
        panic!("expected a name, got {home_dir:?}");
    };
    assert_eq!(name.files[0].filename, home.path().to_string_lossy());

    // uids [0, 4000000000], gids [0]: names, "" for the unknown one.
    let mut ids = vec![0, 0, 0, 8, 0, 0, 0, 0];
    ids.extend(4_000_000_000u32.to_be_bytes());
    ids.extend([0, 0, 0, 4, 0, 0, 0, 0]);
    let names = raw.extended("users-groups-by-id@openssh.com", ids).await?;
    let Packet::ExtendedReply(names) = names else {
        panic!("expected an extended reply, got {names:?}");
    };
    let root = b"\0\0\0\x04root";
    let users = [&[0, 0, 0, 12][..], root, &[0, 0, 0, 0]].concat();
    let groups = [&[0, 0, 0, 8][..], root].concat();
    assert_eq!(names.data, [users, groups].concat());
    Ok(())
}

#[tokio::test]
async fn serve_returns_when_the_client_goes_away() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    fs::write(home.path().join("f"), b"x")?;
    let (client, served) = start(home.path());
    let raw = RawSftpSession::new(client);
    raw.init().await?;
    raw.open("f", OpenFlags::READ, FileAttributes::empty())
        .await?;
    drop(raw);
    tokio::time::timeout(Duration::from_secs(10), served).await??;
    Ok(())
}

/// A stream that fails every read, as a reset connection does.
struct Reset;

impl tokio::io::AsyncRead for Reset {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()))
    }
}

impl tokio::io::AsyncWrite for Reset {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

// Without `EndOnError` this never returns: russh-sftp retries the failed
// read in a loop that never yields.
#[tokio::test]
async fn serve_returns_when_the_stream_fails() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let served = serve(Reset, home.path().to_path_buf());
    tokio::time::timeout(Duration::from_secs(10), served).await?;
    Ok(())
}
