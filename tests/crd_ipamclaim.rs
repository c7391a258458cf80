//! The community IPAMClaim CRD ships in its own file, `crds/ipamclaims.k8s.cni.cncf.io.yaml`
//! (not in `crds/kube-ovn.yaml`: clusters with KubeVirt or OVN-Kubernetes may have it), and
//! that file is what the type generates.

use kube_ovn::api::ipamclaim::ipamclaim_crd_yaml;

const FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crds/ipamclaims.k8s.cni.cncf.io.yaml"
);

#[test]
fn committed_ipamclaim_crd_is_current_and_apart_from_ours() {
    let generated = ipamclaim_crd_yaml().unwrap();
    if std::env::var_os("KOVN_WRITE_CRDS").is_some() {
        std::fs::write(FILE, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(FILE).unwrap_or_default();
    assert!(
        committed == generated,
        "{FILE} is stale; regenerate with: KOVN_WRITE_CRDS=1 cargo test --test crd_ipamclaim"
    );
    assert!(generated.contains("name: ipamclaims.k8s.cni.cncf.io"));
    assert!(generated.contains("scope: Namespaced"));
    assert!(!kube_ovn::api::crds_yaml()
        .unwrap()
        .contains("ipamclaims.k8s.cni.cncf.io"));
}
