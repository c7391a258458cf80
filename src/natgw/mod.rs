//! The `nat-gw` role: EIP/SNAT/DNAT/FIP rules (nftables) in the gateway pod's netns.

/// Flags of `kube-ovn nat-gw`.
#[derive(Debug, Clone, clap::Args)]
pub struct NatGwArgs {
    /// Name of the VpcNatGateway this pod serves.
    #[arg(long, env = "GATEWAY_NAME")]
    pub gateway: Option<String>,
}

/// Runs the NAT gateway role until it is stopped.
pub async fn run(_args: NatGwArgs) -> anyhow::Result<()> {
    anyhow::bail!("the nat-gw role is not implemented yet")
}
