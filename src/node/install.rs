//! CNI install: puts this executable at `<cni-bin-dir>/kube-ovn` so that a runtime exec'ing it
//! never sees a half-written file — written under a temporary name in the same directory,
//! fsynced, made 0755, then renamed over the old one (rename is atomic within a filesystem).
//! No CNI conf file is written: kube-ovn never becomes a primary network.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The plugin's file name in the CNI bin dir (the NAD config's `"type"`).
pub const PLUGIN_NAME: &str = "kube-ovn";

#[derive(Debug, thiserror::Error)]
#[error("installing the CNI plugin {target}: {op}: {source}")]
pub struct InstallError {
    pub target: PathBuf,
    pub op: &'static str,
    #[source]
    pub source: io::Error,
}

/// Copies the running executable to `<bin_dir>/kube-ovn`; returns the installed path.
pub fn install_self(bin_dir: &Path) -> Result<PathBuf, InstallError> {
    let target = bin_dir.join(PLUGIN_NAME);
    let exe = std::env::current_exe().map_err(|source| InstallError {
        target: target.clone(),
        op: "find own executable",
        source,
    })?;
    install_file(&exe, bin_dir)
}

/// Copies `source` to `<bin_dir>/kube-ovn` atomically; returns the installed path.
pub fn install_file(source: &Path, bin_dir: &Path) -> Result<PathBuf, InstallError> {
    let target = bin_dir.join(PLUGIN_NAME);
    let fail = |op: &'static str| {
        let target = target.clone();
        move |source| InstallError { target, op, source }
    };
    fs::create_dir_all(bin_dir).map_err(fail("create the bin dir"))?;
    let tmp = bin_dir.join(format!(".{PLUGIN_NAME}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let written = (|| {
        let mut from = File::open(source).map_err(fail("open the source"))?;
        let mut to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&tmp)
            .map_err(fail("create the temporary file"))?;
        io::copy(&mut from, &mut to).map_err(fail("copy"))?;
        to.set_permissions(fs::Permissions::from_mode(0o755))
            .map_err(fail("chmod 0755"))?;
        to.sync_all().map_err(fail("fsync"))?;
        drop(to);
        fs::rename(&tmp, &target).map_err(fail("rename into place"))?;
        // Make the rename itself durable.
        File::open(bin_dir)
            .and_then(|d| d.sync_all())
            .map_err(fail("fsync the bin dir"))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map(|()| target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn readers_only_ever_see_a_whole_binary_and_the_result_is_identical() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = tempfile::tempdir().expect("src dir");
        // Two distinct "binaries", big enough that a plain copy would be seen half-written.
        let a: Vec<u8> = (0..8_000_000u32).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = (0..12_000_000u32).map(|i| (i % 241) as u8).collect();
        let (pa, pb) = (src.path().join("a"), src.path().join("b"));
        fs::write(&pa, &a).expect("write a");
        fs::write(&pb, &b).expect("write b");
        let target = install_file(&pa, dir.path()).expect("first install");
        assert_eq!(target, dir.path().join("kube-ovn"));

        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (stop, target, a, b) = (stop.clone(), target.clone(), a.clone(), b.clone());
            std::thread::spawn(move || {
                let mut reads = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let seen = fs::read(&target).expect("the plugin path always exists");
                    assert!(
                        seen == a || seen == b,
                        "a reader saw a partial binary of {} bytes",
                        seen.len()
                    );
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..10 {
            install_file(if i % 2 == 0 { &pb } else { &pa }, dir.path()).expect("reinstall");
        }
        stop.store(true, Ordering::Relaxed);
        let reads = reader.join().expect("reader saw only whole binaries");
        assert!(reads > 0);

        assert_eq!(
            fs::read(&target).expect("read"),
            a,
            "last install wins, byte-identical"
        );
        let mode = fs::metadata(&target).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("kube-ovn")],
            "no temporary file left"
        );
    }

    #[test]
    fn a_missing_source_names_the_target_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = install_file(Path::new("/nonexistent/kube-ovn-src"), dir.path())
            .expect_err("no source");
        assert!(
            err.to_string().contains("kube-ovn") && err.to_string().contains("open the source"),
            "{err}"
        );
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 0);
    }

    #[test]
    fn install_self_copies_the_running_executable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = install_self(dir.path()).expect("install self");
        let exe = std::env::current_exe().expect("exe");
        assert_eq!(
            fs::read(&target).expect("installed"),
            fs::read(exe).expect("exe")
        );
    }
}
