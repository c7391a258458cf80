//! The image recipe without building the image: hack/Containerfile and hack/image.sh make the
//! same image (one package list, one install script, one entrypoint, the binary in one place),
//! the list's packages are real Debian packages that provide every program and schema
//! src/ovn/daemons.rs runs and reads, and no package server's host name is written in.
//! hack/image.sh --check builds the image and runs it; this test is the cheap part.
//!
//! Needs dpkg and apt's package lists, as every OVS test here does (hack/install-deps.sh).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const LIST: &str = "hack/image-packages.txt";
const INSTALL: &str = "hack/image-install.sh";

fn read(path: &str) -> String {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn packages() -> BTreeSet<String> {
    read(LIST)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// The string literals of a line of Rust, in order (no escapes in the ones we read).
fn literals(line: &str) -> Vec<&str> {
    line.split('"').skip(1).step_by(2).collect()
}

/// The instructions of the Containerfile's last (runtime) stage, as (INSTRUCTION, rest).
fn runtime_stage(containerfile: &str) -> Vec<(String, String)> {
    let mut stage = Vec::new();
    let mut logical = String::new();
    for line in containerfile.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && logical.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => logical.push_str(part),
            None => {
                logical.push_str(line);
                let (op, rest) = logical.split_once(' ').unwrap_or((&logical, ""));
                let op = op.to_uppercase();
                if op == "FROM" {
                    stage.clear();
                }
                stage.push((op, rest.trim().to_string()));
                logical.clear();
            }
        }
    }
    stage
}

fn instruction<'a>(stage: &'a [(String, String)], op: &str, containing: &str) -> &'a str {
    stage
        .iter()
        .find(|(o, rest)| o == op && rest.contains(containing))
        .map(|(_, rest)| rest.as_str())
        .unwrap_or_else(|| {
            panic!("hack/Containerfile: no {op} with {containing:?} in the runtime stage")
        })
}

/// The words after the last `sh` that runs the install script: [script, list].
fn install_command(text: &str, file: &str) -> Vec<String> {
    let line = text
        .lines()
        .find(|l| l.contains("sh /tmp/image-install.sh"))
        .unwrap_or_else(|| panic!("{file}: never runs sh /tmp/image-install.sh"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "/tmp/image-install.sh")
        .expect("found above");
    words[at..].iter().take(2).map(|w| w.to_string()).collect()
}

#[test]
fn containerfile_and_image_sh_install_the_same_list_with_the_same_script() {
    let containerfile = read("hack/Containerfile");
    let image_sh = read("hack/image.sh");
    let stage = runtime_stage(&containerfile);

    // Both put the list and the script into /tmp of the root filesystem…
    let copy = instruction(&stage, "COPY", INSTALL);
    assert_eq!(copy, format!("{LIST} {INSTALL} /tmp/"));
    let cp = image_sh
        .lines()
        .find(|l| l.trim_start().starts_with("cp ") && l.contains(INSTALL))
        .expect("hack/image.sh copies the install script into the root filesystem");
    assert_eq!(
        cp.trim(),
        format!("cp \"$repo/{LIST}\" \"$repo/{INSTALL}\" \"$rootfs/tmp/\"")
    );
    // …and run the one with the other.
    let expected = ["/tmp/image-install.sh", "/tmp/image-packages.txt"];
    assert_eq!(
        install_command(&containerfile, "hack/Containerfile"),
        expected
    );
    assert_eq!(install_command(&image_sh, "hack/image.sh"), expected);
    assert!(
        instruction(&stage, "RUN", "image-install.sh").starts_with("sh /tmp/image-install.sh"),
        "the Containerfile runs the install script in the runtime stage"
    );
    // The cached root filesystem must be rebuilt when either changes.
    let key = image_sh
        .lines()
        .find(|l| l.trim_start().starts_with("key="))
        .expect("hack/image.sh keys its root filesystem cache");
    for file in [LIST, INSTALL] {
        assert!(key.contains(file), "the rootfs cache key ignores {file}");
    }
}

#[test]
fn containerfile_and_image_sh_configure_the_same_entrypoint_and_binary_path() {
    let stage = runtime_stage(&read("hack/Containerfile"));
    let image_sh = read("hack/image.sh");

    let entrypoint: Vec<String> =
        serde_json::from_str(instruction(&stage, "ENTRYPOINT", "")).expect("exec-form ENTRYPOINT");
    let line = image_sh
        .lines()
        .find(|l| l.starts_with("entrypoint="))
        .expect("hack/image.sh sets entrypoint=");
    let ours: Vec<String> = serde_json::from_str(literals_sh(line)).expect("a JSON array");
    assert_eq!(entrypoint, ours);
    assert_eq!(entrypoint, ["tini", "--", "kube-ovn"]);
    assert!(
        packages().contains("tini"),
        "the entrypoint's tini is not in {LIST}"
    );

    // The entrypoint finds kube-ovn in /usr/local/bin, where both builds put it, both without
    // the release profile's line tables (they would double the image).
    assert!(instruction(&stage, "COPY", "--from=build").ends_with(" /usr/local/bin/kube-ovn"));
    assert!(image_sh
        .lines()
        .any(|l| l.starts_with("buildah copy") && l.ends_with(" /usr/local/bin/kube-ovn")));
    let containerfile = read("hack/Containerfile");
    for (file, text) in [
        ("hack/Containerfile", &containerfile),
        ("hack/image.sh", &image_sh),
    ] {
        assert!(
            text.lines()
                .any(|l| !l.trim_start().starts_with('#') && l.contains("objcopy --strip-debug")),
            "{file} ships the binary with its debug info"
        );
    }
}

/// The single-quoted value of a shell assignment.
fn literals_sh(line: &str) -> &str {
    line.split('\'').nth(1).expect("a single-quoted value")
}

#[test]
fn the_recipe_names_no_package_server() {
    for file in ["hack/image.sh", "hack/Containerfile", INSTALL, LIST] {
        let text = read(file);
        for scheme in ["http://", "https://", "ftp://"] {
            assert!(
                !text.contains(scheme),
                "{file} has a {scheme} URL: the package source comes from apt's configuration"
            );
        }
    }
}

/// `dpkg -S PATH…`: the packages that own each file (files no package owns are left out).
fn owners(paths: &[PathBuf]) -> BTreeMap<PathBuf, BTreeSet<String>> {
    let out = Command::new("dpkg")
        .arg("-S")
        .args(paths)
        .output()
        .expect("dpkg runs (this test needs a Debian machine, as the OVS tests do)");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(names, path)| {
            let names = names
                .split(", ")
                .map(|n| n.split(':').next().expect("a name").to_string())
                .collect();
            (PathBuf::from(path), names)
        })
        .collect()
}

/// Where this machine has PROGRAM; alternatives (ovs-vswitchd) are followed to the real file.
fn installed(program: &str) -> Vec<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]);
    let mut found = Vec::new();
    for dir in dirs {
        let p = Path::new(dir).join(program);
        if p.is_file() {
            found.push(p.clone());
            if let Ok(real) = p.canonicalize() {
                found.push(real);
            }
        }
    }
    found
}

#[test]
fn the_list_names_debian_packages() {
    let list = packages();
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions"])
        .args(&list)
        .output()
        .expect("apt-cache runs (this test needs a Debian machine, as the OVS tests do)");
    let known: BTreeSet<String> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .filter_map(|l| l.strip_prefix("Package: "))
        .map(str::to_string)
        .collect();
    let unknown: Vec<_> = list.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "{LIST}: apt knows no package {unknown:?} (apt-get update?)"
    );
}

#[test]
fn the_list_provides_every_program_and_schema_the_daemons_use() {
    // What src/ovn/daemons.rs spawns and reads.
    let source = read("src/ovn/daemons.rs");
    let mut programs = BTreeSet::new();
    let mut schemas = BTreeSet::new();
    for line in source.lines() {
        if line.contains("DaemonSpec::new(") {
            if let Some(program) = literals(line).last() {
                programs.insert(program.to_string());
            }
        }
        if let Some(call) = line.split("Command::new(\"").nth(1) {
            programs.insert(call.split('"').next().expect("a literal").to_string());
        }
        if line.trim_start().starts_with("pub const") && line.contains(".ovsschema\"") {
            schemas.extend(literals(line).into_iter().map(str::to_string));
        }
    }
    // The parse above must keep seeing what the daemons are known to need.
    for known in [
        "ovsdb-server",
        "ovs-vswitchd",
        "ovn-controller",
        "ovn-northd",
        "ovsdb-tool",
    ] {
        assert!(
            programs.contains(known),
            "src/ovn/daemons.rs: {known} not found"
        );
    }
    assert_eq!(
        schemas.len(),
        3,
        "the vswitch, NB and SB schemas: {schemas:?}"
    );

    let mut files: Vec<(String, Vec<PathBuf>)> =
        programs.iter().map(|p| (p.clone(), installed(p))).collect();
    files.extend(schemas.iter().map(|s| (s.clone(), vec![PathBuf::from(s)])));
    let all: Vec<PathBuf> = files.iter().flat_map(|(_, p)| p.clone()).collect();
    let owned = owners(&all);
    let list = packages();
    for (what, paths) in files {
        assert!(
            !paths.is_empty(),
            "{what} is not installed here (hack/install-deps.sh)"
        );
        let owners: BTreeSet<&String> = paths
            .iter()
            .filter_map(|p| owned.get(p))
            .flatten()
            .collect();
        assert!(!owners.is_empty(), "no package owns {what} ({paths:?})");
        assert!(
            owners.iter().any(|o| list.contains(*o)),
            "{what} comes from {owners:?}, none of which {LIST} lists"
        );
    }
}
