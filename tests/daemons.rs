//! Supervised OVS daemons: started in the foreground, restarted when killed,
//! stopped cleanly.

mod support;

use std::process::Command;
use std::time::Duration;

use kube_ovn::ovn::daemons::{supervise, Backoff, ChassisLayout};

fn list_dbs(endpoint: &str) -> Option<String> {
    let out = Command::new("ovsdb-client")
        .args(["--timeout=5", "list-dbs", endpoint])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn eventually_lists(endpoint: &str) -> String {
    for _ in 0..100 {
        if let Some(dbs) = list_dbs(endpoint) {
            return dbs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{endpoint} never answered list-dbs");
}

#[tokio::test]
async fn a_killed_ovsdb_server_is_restarted_and_stop_ends_it() {
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let layout = ChassisLayout {
        run_dir: dir.path().join("ovs"),
    };
    layout.prepare().await.expect("create conf.db");
    let backoff = Backoff {
        initial: Duration::from_millis(50),
        ..Backoff::default()
    };
    let mut daemon = supervise(layout.ovsdb_server(), backoff);
    let first = daemon.wait_running(None).await.expect("first pid");
    assert!(eventually_lists(&layout.db_endpoint())
        .await
        .contains("Open_vSwitch"));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let second = daemon.wait_running(Some(first)).await.expect("restarted");
    assert_ne!(first, second);
    assert_eq!(daemon.restarts(), 1);
    assert!(eventually_lists(&layout.db_endpoint())
        .await
        .contains("Open_vSwitch"));

    daemon.stop().await;
    assert!(
        !support::process_alive(second as i32),
        "ovsdb-server still running after stop"
    );
}
