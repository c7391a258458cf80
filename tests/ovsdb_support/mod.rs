//! A bare `ovsdb-server` on a temporary database made with `ovsdb-tool
//! create` from Debian's OVN NB or vswitch schema, for tests and benches of
//! the OVSDB client, with `ovn-nbctl`/`ovs-vsctl` as independent readers and
//! kill -9 / restart for reconnect tests. Dropping it kills the server.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";
pub const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

pub struct DbServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
    db: PathBuf,
    sock: PathBuf,
}

impl DbServer {
    /// An OVN_Northbound server with its NB_Global row.
    pub fn nb() -> DbServer {
        let s = DbServer::start(NB_SCHEMA);
        s.nbctl(&["init"]);
        s
    }

    /// An Open_vSwitch server with its root row.
    pub fn vswitch() -> DbServer {
        let s = DbServer::start(VSWITCH_SCHEMA);
        s.vsctl(&["init"]);
        s
    }

    pub fn start(schema: &str) -> DbServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("db");
        let out = Command::new("ovsdb-tool")
            .arg("create")
            .arg(&db)
            .arg(schema)
            .output()
            .expect("run ovsdb-tool");
        assert!(out.status.success(), "ovsdb-tool create: {:?}", out);
        let sock = dir.path().join("db.sock");
        let mut s = DbServer {
            dir,
            child: None,
            db,
            sock,
        };
        s.restart();
        s
    }

    pub fn endpoint(&self) -> String {
        format!("unix:{}", self.sock.display())
    }

    pub fn db_file(&self) -> &Path {
        &self.db
    }

    /// Starts (again) the server on the same database file and socket.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let _ = std::fs::remove_file(&self.sock);
        let d = self.dir.path();
        let child = Command::new("ovsdb-server")
            .arg(&self.db)
            .arg(format!("--remote=punix:{}", self.sock.display()))
            .arg(format!("--unixctl={}", d.join("ctl").display()))
            .arg(format!(
                "--log-file={}",
                d.join("ovsdb-server.log").display()
            ))
            .arg("--no-chdir")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ovsdb-server");
        self.child = Some(child);
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&self.sock).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "ovsdb-server did not listen on {}",
                self.sock.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, no cleanup: the socket file stays behind like after a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn tool(&self, program: &str, db_flag: String, args: &[&str]) -> String {
        let out = Command::new(program)
            .arg(db_flag)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn nbctl(&self, args: &[&str]) -> String {
        self.tool("ovn-nbctl", format!("--db={}", self.endpoint()), args)
    }

    pub fn vsctl(&self, args: &[&str]) -> String {
        let mut a = vec!["--no-wait"];
        a.extend_from_slice(args);
        self.tool("ovs-vsctl", format!("--db={}", self.endpoint()), &a)
    }

    /// `ovsdb-client transact` style change applied to the database file
    /// while the server is down.
    pub fn offline_transact(&self, txn: &str) -> String {
        assert!(self.child.is_none(), "server must be down");
        let out = Command::new("ovsdb-tool")
            .arg("transact")
            .arg(&self.db)
            .arg(txn)
            .output()
            .expect("run ovsdb-tool transact");
        assert!(out.status.success(), "ovsdb-tool transact: {:?}", out);
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for DbServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Values of one column of every row, via `--format=csv --no-headings`.
pub fn csv_column(output: &str) -> Vec<String> {
    let mut v: Vec<String> = output
        .lines()
        .map(|l| l.trim().trim_matches('"').to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}
