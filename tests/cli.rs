//! The binary's surface: roles in --help, CNI plugin mode by environment.

use std::io::Write;
use std::process::{Command, Stdio};

fn kube_ovn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kube-ovn"))
}

fn cni(command: &str, stdin: &str) -> (i32, serde_json::Value) {
    let mut child = kube_ovn()
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kube-ovn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().expect("exit code"), json)
}

#[test]
fn help_lists_the_three_roles() {
    let out = kube_ovn().arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for role in ["operator", "node", "nat-gw", "crd", "version"] {
        assert!(help.contains(role), "--help lacks {role}:\n{help}");
    }
}

#[test]
fn version_subcommand_prints_the_crate_version() {
    let out = kube_ovn().arg("version").output().expect("run");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("kube-ovn {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn cni_version_answers_with_every_supported_version() {
    let (code, json) = cni("VERSION", "");
    assert_eq!(code, 0);
    assert_eq!(json["cniVersion"], "1.1.0");
    assert_eq!(
        json["supportedVersions"],
        serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );

    let (_, json) = cni("VERSION", r#"{"cniVersion":"0.3.1"}"#);
    assert_eq!(json["cniVersion"], "0.3.1");
}

#[test]
fn cni_mode_wins_over_arguments() {
    let out = kube_ovn()
        .arg("operator")
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(json["supportedVersions"].is_array());
}

#[test]
fn unknown_cni_command_is_a_cni_error() {
    let (code, json) = cni("FROB", r#"{"cniVersion":"0.3.1"}"#);
    assert_eq!(code, 1);
    assert_eq!(json["code"], 4);
    assert_eq!(json["cniVersion"], "0.3.1");
    assert!(json["msg"].as_str().expect("msg").contains("FROB"));
}

#[test]
fn primary_mode_is_refused_clearly() {
    let out = kube_ovn()
        .args(["operator", "--non-primary-cni-mode=false"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("primary mode is not supported"));
}

#[test]
fn a_node_mtu_out_of_range_is_refused() {
    for bad in ["20", "70000", "big"] {
        let out = kube_ovn()
            .args([
                "node",
                "--node-name=n1",
                "--ovn-sb=tcp:127.0.0.1:6642",
                "--mtu",
                bad,
            ])
            .output()
            .expect("run");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--mtu") && err.contains(bad), "{bad}: {err}");
    }
}
