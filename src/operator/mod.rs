//! The `operator` role: controllers, IPAM ownership, install/upgrade, status API.

pub mod attachment;

/// Flags of `kube-ovn operator`.
#[derive(Debug, Clone, clap::Args)]
pub struct OperatorArgs {
    /// Run as a secondary CNI next to the cluster's primary one. Primary mode is
    /// not supported: `false` makes the operator exit with an error.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub non_primary_cni_mode: bool,
}

/// Runs the operator role until it is stopped.
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    if !args.non_primary_cni_mode {
        anyhow::bail!(
            "primary mode is not supported: kube-ovn only runs as a secondary CNI \
             (--non-primary-cni-mode=true)"
        );
    }
    anyhow::bail!("the operator role is not implemented yet")
}
