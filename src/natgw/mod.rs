//! The `nat-gw` role, the process of a VpcNatGateway's pod. Not implemented yet: it refuses to
//! start and says so. What it will do (program the gateway's EIP/SNAT/DNAT/FIP rules as one
//! nftables table in its own netns) is described in ../shared/ARCHITECTURE.md, "VPC NAT
//! gateway, step by step".

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
