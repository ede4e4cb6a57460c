//! Whether a run directory's file system carries `flock` locks between hosts, judged from
//! the mount it is on (`/proc/self/mountinfo`), before `send --shard` relies on them.
//!
//! Owns the table of what is refused, warned about and passed: FUSE object stores (s3fs,
//! mountpoint-s3, gcsfuse) and SMB/CIFS are refused (their locks are local or absent), NFS
//! with `nolock` or `local_lock=flock|all` is refused (locks stay on the host), NFSv3 is
//! warned about (its locks need lockd and can be lost), and local file systems, NFSv4,
//! CephFS and Lustre mounted with `flock` pass. It never takes a lock itself.

use std::path::{Path, PathBuf};

/// What the mount means for sharding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Locks reach every host (or the file system is local).
    Fine,
    /// Usable, with a caveat for the operator.
    Warn(String),
    /// Locks do not fence other hosts: donors could be mailed twice.
    Refuse(String),
}

/// One line of mountinfo, the parts that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub point: PathBuf,
    /// The file system type (`ext4`, `nfs4`, `fuse.s3fs`, ...).
    pub fstype: String,
    /// The mount source (`server:/export`, `mountpoint-s3`, ...).
    pub source: String,
    /// Mount and super-block options, together.
    pub options: Vec<String>,
}

/// Parses one `/proc/self/mountinfo` line (see proc(5)).
pub fn parse_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let right: Vec<&str> = right.split(' ').collect();
    let point = unescape(left.get(4)?);
    let mut options: Vec<String> = left.get(5)?.split(',').map(str::to_owned).collect();
    options.extend(right.get(2).unwrap_or(&"").split(',').map(str::to_owned));
    Some(Mount {
        point: PathBuf::from(point),
        fstype: (*right.first()?).to_owned(),
        source: unescape(right.get(1).unwrap_or(&"")),
        options,
    })
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(char::from(v));
            i += 4;
        } else {
            out.push(char::from(b[i]));
            i += 1;
        }
    }
    out
}

/// The mount `path` (absolute, resolved) is on: the longest mount point that contains it.
pub fn mount_of<'m>(mounts: &'m [Mount], path: &Path) -> Option<&'m Mount> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.point))
        .max_by_key(|m| m.point.as_os_str().len())
}

/// What `m` means for locks between hosts.
pub fn judge(m: &Mount) -> Verdict {
    let name = format!("{} ({} from {})", m.point.display(), m.fstype, m.source);
    let has = |o: &str| m.options.iter().any(|x| x == o);
    let fs = m.fstype.as_str();
    let object_store = [
        "s3fs",
        "mountpoint-s3",
        "gcsfuse",
        "goofys",
        "rclone",
        "blobfuse",
    ];
    if fs.starts_with("fuse") {
        let what = fs.strip_prefix("fuse.").unwrap_or(&m.source);
        if object_store
            .iter()
            .any(|o| what.contains(o) || m.source.contains(o))
        {
            return Verdict::Refuse(format!(
                "{name} is an object store mounted through FUSE: it has no locks that other hosts see (and no atomic appends), so two shards could mail one donor; put the run on NFSv4, CephFS or Lustre"
            ));
        }
        return Verdict::Warn(format!(
            "{name} is a FUSE file system: check that its flock locks reach other hosts before running shards on several"
        ));
    }
    if matches!(fs, "cifs" | "smb3" | "smbfs") {
        return Verdict::Refuse(format!(
            "{name} is SMB/CIFS: its locks are not the flock locks shards fence each other with; put the run on NFSv4, CephFS or Lustre"
        ));
    }
    if fs == "nfs" || fs == "nfs4" {
        if has("nolock") {
            return Verdict::Refuse(format!(
                "{name} is mounted with nolock: locks stay on this host, so a shard on another host is not fenced; remount without nolock"
            ));
        }
        if has("local_lock=flock") || has("local_lock=all") {
            return Verdict::Refuse(format!(
                "{name} is mounted with local_lock=flock or all: flock locks stay on this host; remount with local_lock=none"
            ));
        }
        let v3 = fs == "nfs" && m.options.iter().any(|o| o == "vers=3" || o == "nfsvers=3");
        if v3 {
            return Verdict::Warn(format!(
                "{name} is NFSv3: its locks go through lockd and can be lost when a server or client restarts; NFSv4 is safer for shards"
            ));
        }
        return Verdict::Fine;
    }
    if fs == "lustre" && !has("flock") {
        return Verdict::Refuse(format!(
            "{name} is Lustre without the flock mount option: flock is local or refused; mount with -o flock"
        ));
    }
    Verdict::Fine
}

/// Judges the run directory's mount on this machine; `Fine` where there is no mountinfo.
pub fn check(run: &Path) -> Verdict {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Verdict::Fine;
    };
    let Ok(path) = run.canonicalize() else {
        return Verdict::Fine;
    };
    let mounts: Vec<Mount> = text.lines().filter_map(parse_line).collect();
    mount_of(&mounts, &path).map_or(Verdict::Fine, judge)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines captured from real machines (paths and servers changed).
    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
40 22 0:44 / /mnt/nfs4 rw,relatime shared:20 - nfs4 files.example:/runs rw,vers=4.2,rsize=1048576,hard,proto=tcp,local_lock=none,addr=192.0.2.5
41 22 0:45 / /mnt/nfs3 rw,relatime shared:21 - nfs files.example:/old rw,vers=3,hard,proto=tcp,local_lock=none,addr=192.0.2.5
42 22 0:46 / /mnt/nolock rw,relatime shared:22 - nfs files.example:/x rw,vers=3,nolock,proto=tcp,local_lock=all,addr=192.0.2.5
43 22 0:47 / /mnt/flock rw,relatime shared:23 - nfs4 files.example:/y rw,vers=4.1,local_lock=flock,addr=192.0.2.5
44 22 0:48 / /mnt/s3 rw,nosuid,nodev,relatime shared:24 - fuse.s3fs s3fs rw,user_id=0,group_id=0
45 22 0:49 / /mnt/mps3 rw,nosuid,nodev,relatime shared:25 - fuse mountpoint-s3 rw,user_id=0,group_id=0
46 22 0:50 / /mnt/gcs rw,nosuid,nodev,relatime shared:26 - fuse.gcsfuse bucket rw,user_id=0,group_id=0
47 22 0:51 / /mnt/smb rw,relatime shared:27 - cifs //fs.example/share rw,vers=3.1.1,cache=strict
48 22 0:52 / /mnt/ceph rw,relatime shared:28 - ceph 192.0.2.7:6789:/ rw,name=admin,acl
49 22 0:53 / /mnt/lustre rw,flock shared:29 - lustre 192.0.2.8@tcp:/fs rw,flock,lazystatfs
50 22 0:54 / /mnt/lustre-noflock rw shared:30 - lustre 192.0.2.8@tcp:/fs rw,lazystatfs
51 22 0:55 / /mnt/with\\040space rw shared:31 - nfs4 files.example:/z rw,vers=4.2,local_lock=none
";

    fn verdict(path: &str) -> Verdict {
        let mounts: Vec<Mount> = MOUNTINFO.lines().filter_map(parse_line).collect();
        judge(mount_of(&mounts, Path::new(path)).unwrap())
    }

    #[test]
    fn mounts_are_judged_by_type_and_options() {
        assert_eq!(verdict("/srv/runs/spring"), Verdict::Fine);
        assert_eq!(verdict("/mnt/nfs4/spring"), Verdict::Fine);
        assert_eq!(verdict("/mnt/ceph/spring"), Verdict::Fine);
        assert_eq!(verdict("/mnt/lustre/spring"), Verdict::Fine);
        assert_eq!(verdict("/mnt/with space/spring"), Verdict::Fine);
        assert!(matches!(verdict("/mnt/nfs3/spring"), Verdict::Warn(w) if w.contains("NFSv3")));
        for (path, why) in [
            ("/mnt/nolock/r", "nolock"),
            ("/mnt/flock/r", "local_lock=flock"),
            ("/mnt/s3/r", "object store"),
            ("/mnt/mps3/r", "object store"),
            ("/mnt/gcs/r", "object store"),
            ("/mnt/smb/r", "SMB/CIFS"),
            ("/mnt/lustre-noflock/r", "-o flock"),
        ] {
            match verdict(path) {
                Verdict::Refuse(r) => {
                    assert!(r.contains(why), "{path}: {r}");
                    assert!(r.contains(path.rsplit_once('/').unwrap().0), "{r}");
                }
                other => panic!("{path}: {other:?}"),
            }
        }
    }
}
