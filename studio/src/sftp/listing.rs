//! What a client sees of a file: SFTP attributes, and the `ls -l` style
//! `longname` that OpenSSH's sftp-server puts in directory listings (the
//! `sftp` client prints it verbatim for `ls -l`).

use std::collections::HashMap;
use std::fs::{self, Metadata, ReadDir};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::unistd::{Gid, Group, Uid, User};
use russh_sftp::protocol::{File, FileAttributes};

/// Entries per READDIR reply, as in OpenSSH.
const BATCH: usize = 100;

/// SFTP v3 attributes of `meta`. Times are 32-bit in v3; they are clamped.
pub(super) fn attrs(meta: &Metadata) -> FileAttributes {
    FileAttributes {
        size: Some(meta.size()),
        uid: Some(meta.uid()),
        user: None,
        gid: Some(meta.gid()),
        group: None,
        permissions: Some(meta.mode()),
        atime: Some(clamp_time(meta.atime())),
        mtime: Some(clamp_time(meta.mtime())),
    }
}

fn clamp_time(secs: i64) -> u32 {
    u32::try_from(secs.max(0)).unwrap_or(u32::MAX)
}

/// User and group names by id, looked up once per session.
#[derive(Default)]
pub(super) struct Owners {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Owners {
    fn user(&mut self, uid: u32) -> &str {
        self.users
            .entry(uid)
            .or_insert_with(|| user_name(uid).unwrap_or_else(|| uid.to_string()))
    }

    fn group(&mut self, gid: u32) -> &str {
        self.groups
            .entry(gid)
            .or_insert_with(|| group_name(gid).unwrap_or_else(|| gid.to_string()))
    }
}

pub(super) fn user_name(uid: u32) -> Option<String> {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|user| user.name)
}

pub(super) fn group_name(gid: u32) -> Option<String> {
    Group::from_gid(Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|group| group.name)
}

/// Reads the next batch of a directory listing (lstat of every entry, like
/// OpenSSH). An empty batch means the listing is over.
pub(super) fn read_batch(
    dir: &Path,
    entries: &mut ReadDir,
    dots: bool,
    owners: &mut Owners,
) -> io::Result<Vec<File>> {
    let now = unix_now();
    let mut files = Vec::with_capacity(BATCH);
    if dots {
        for name in [".", ".."] {
            if let Ok(meta) = fs::symlink_metadata(dir.join(name)) {
                files.push(entry(name.to_owned(), &meta, owners, now));
            }
        }
    }
    while files.len() < BATCH {
        let entry_result = match entries.next() {
            Some(result) => result,
            None => break,
        };
        let dirent = match entry_result {
            Ok(dirent) => dirent,
            Err(err) if files.is_empty() => return Err(err),
            Err(_) => break,
        };
        // Does not follow symlinks; an entry removed since it was listed is skipped.
        let Ok(meta) = dirent.metadata() else {
            continue;
        };
        // Known gap: russh-sftp carries names as UTF-8 strings.
        let name = dirent.file_name().to_string_lossy().into_owned();
        files.push(entry(name, &meta, owners, now));
    }
    Ok(files)
}

fn entry(name: String, meta: &Metadata, owners: &mut Owners, now: i64) -> File {
    let longname = longname(&name, meta, owners, now);
    File {
        filename: name,
        longname,
        attrs: attrs(meta),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// OpenSSH's `ls_file`: `"%s %3u %-*s %-*s %8llu %s %s"` where the mode
/// string carries a trailing space and names are padded to 8 columns.
/// Times are shown in UTC (containers run in UTC; OpenSSH uses local time).
fn longname(name: &str, meta: &Metadata, owners: &mut Owners, now: i64) -> String {
    let mode = mode_string(meta.mode());
    let nlink = meta.nlink();
    let user = owners.user(meta.uid()).to_owned();
    let group = owners.group(meta.gid());
    let size = meta.size();
    let time = ls_time(meta.mtime(), now);
    format!("{mode}  {nlink:>3} {user:<8} {group:<8} {size:>8} {time} {name}")
}

/// `strmode(3)` without the trailing space: "drwxr-xr-x", "-rwsr-x--T", ...
fn mode_string(mode: u32) -> String {
    let kind = match mode & 0o170_000 {
        0o040_000 => 'd',
        0o120_000 => 'l',
        0o020_000 => 'c',
        0o060_000 => 'b',
        0o010_000 => 'p',
        0o140_000 => 's',
        _ => '-',
    };
    let mut out = String::with_capacity(10);
    out.push(kind);
    for (shift, special, mark) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 0o7;
        out.push(if bits & 0o4 != 0 { 'r' } else { '-' });
        out.push(if bits & 0o2 != 0 { 'w' } else { '-' });
        out.push(match (mode & special != 0, bits & 0o1 != 0) {
            (true, true) => mark,
            (true, false) => mark.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    out
}

/// `ls -l` dates: "%b %e %H:%M" within the last six months, else "%b %e  %Y".
fn ls_time(mtime: i64, now: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day) = civil_from_days(mtime.div_euclid(86_400));
    let month = MONTHS[month as usize - 1];
    let recent = now - (365 * 24 * 60 * 60) / 2 < mtime && mtime <= now;
    if recent {
        let secs = mtime.rem_euclid(86_400);
        let (hour, minute) = (secs / 3600, secs % 3600 / 60);
        format!("{month} {day:>2} {hour:02}:{minute:02}")
    } else {
        format!("{month} {day:>2}  {year}")
    }
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic
/// Gregorian (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings_match_strmode() {
        assert_eq!(mode_string(0o040_755), "drwxr-xr-x");
        assert_eq!(mode_string(0o100_644), "-rw-r--r--");
        assert_eq!(mode_string(0o120_777), "lrwxrwxrwx");
        assert_eq!(mode_string(0o104_755), "-rwsr-xr-x");
        assert_eq!(mode_string(0o102_640), "-rw-r-S---");
        assert_eq!(mode_string(0o041_777), "drwxrwxrwt");
        assert_eq!(mode_string(0o020_620), "crw--w----");
    }

    #[test]
    fn dates_are_recent_or_with_year() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        // 2024-03-05 14:07:09 UTC
        let t = 1_709_647_629;
        assert_eq!(ls_time(t, t + 60), "Mar  5 14:07");
        assert_eq!(ls_time(t, t + 365 * 86_400), "Mar  5  2024");
        // In the future: shown with the year, like ls.
        assert_eq!(ls_time(t, t - 60), "Mar  5  2024");
    }

    #[test]
    fn longname_has_the_openssh_layout() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("notes.txt");
        fs::write(&path, b"hello")?;
        let meta = fs::symlink_metadata(&path)?;
        let mut owners = Owners::default();
        let line = longname("notes.txt", &meta, &mut owners, unix_now());
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 9, "{line}");
        assert_eq!(&fields[0][..1], "-");
        assert_eq!(fields[1], "1");
        assert_eq!(fields[4], "5");
        assert_eq!(fields[8], "notes.txt");
        assert!(line.starts_with(&format!("{}    1 ", fields[0])), "{line}");
        Ok(())
    }
}
