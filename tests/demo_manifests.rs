//! The demo applies the user guide's manifests verbatim: hack/demo/seed holds them
//! byte for byte as the guide (shared/seed) prints them.

use std::path::PathBuf;

fn guide() -> Option<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/seed");
    let entry = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "txt"))?;
    std::fs::read_to_string(entry.path()).ok()
}

/// The ```yaml blocks of the guide, in order.
fn yaml_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().expect("inside a block")),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn demo_seed_manifests_are_the_guides_blocks_verbatim() {
    let Some(text) = guide() else {
        // shared/ sits beside every checkout here (sessions and CI); say so loudly if not.
        panic!("../shared/seed/*.txt not found beside the repository");
    };
    let blocks = yaml_blocks(&text);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("hack/demo/seed");
    let expected = [
        (3, "01-nad.yaml"),
        (4, "02-vpc-subnet.yaml"),
        (5, "03-multi-network-pod.yaml"),
        (6, "04-frontend.yaml"),
        (7, "05-tenants.yaml"),
        (8, "06-vpc-nat-gw.yaml"),
        (9, "fragment-multi-provider.yaml"),
        (10, "fragment-static-ip.yaml"),
        (11, "fragment-qos.yaml"),
    ];
    assert_eq!(blocks.len(), 12, "the guide's YAML blocks changed");
    for (index, file) in expected {
        let ours = std::fs::read_to_string(dir.join(file)).expect(file);
        assert_eq!(
            ours, blocks[index],
            "hack/demo/seed/{file} differs from the guide"
        );
    }
}
