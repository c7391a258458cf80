//! `kube-ovn`: one binary, three roles, plus CNI plugin mode. Dispatch only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kube_ovn::logging::{self, LogFormat};
use kube_ovn::{cni, natgw, node, olm, operator};

#[derive(Parser)]
#[command(name = "kube-ovn", version = kube_ovn::VERSION, about = "Kube-OVN secondary networks (OVN interfaces next to any primary CNI) as one operator binary.\nWith CNI_COMMAND set in the environment it acts as the CNI plugin.")]
struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level or filter (e.g. `debug`, `kube_ovn=trace`); overrides RUST_LOG.
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Write logs to this file instead of stderr.
    #[arg(long, global = true)]
    log_file: Option<PathBuf>,
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// The cluster operator: OVN central, controllers, IPAM and the status API.
    Operator(operator::OperatorArgs),
    /// One member of OVN central (NB/SB raft clusters and northd), run by the ovn-central StatefulSet.
    Central(operator::central::CentralArgs),
    /// The per-node agent: OVS/OVN chassis, CNI server and QoS, run by a DaemonSet.
    Node(Box<node::NodeArgs>),
    /// The node's Open vSwitch and ovn-controller, run by the `ovs-ovn` DaemonSet.
    Chassis(node::chassis_role::ChassisArgs),
    /// A VPC NAT gateway pod: EIP, SNAT, DNAT and FIP rules in its own netns.
    NatGw(natgw::NatGwArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Print the operator's manifests (CRDs, RBAC, Deployment, Service, a sample KubeOvn)
    /// for a cluster without OLM: `kube-ovn render | kubectl apply -f -`.
    Render(operator::install::plain::RenderArgs),
    /// Write the OLM bundle (CSV, CRDs, metadata, bundle.Dockerfile, file-based catalog) to
    /// a directory, or check one (--check).
    OlmBundle(olm::OlmBundleArgs),
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    if cni::plugin::invoked_as_plugin() {
        // Best effort: a plugin without logs must still answer on stdout.
        let file = std::env::var_os("KUBE_OVN_CNI_LOG").map(PathBuf::from);
        let _ = logging::init(LogFormat::Text, Some("warn"), file.as_deref());
        return cni::plugin::run();
    }
    let cli = Cli::parse();
    if let Err(e) = logging::init(
        cli.log_format,
        cli.log_level.as_deref(),
        cli.log_file.as_deref(),
    ) {
        eprintln!("kube-ovn: {e:#}");
        return ExitCode::FAILURE;
    }
    match run(cli.role) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("kube-ovn: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(role: Role) -> anyhow::Result<()> {
    let runtime = || tokio::runtime::Runtime::new();
    match role {
        Role::Operator(args) => runtime()?.block_on(operator::run(args)),
        Role::Central(args) => runtime()?.block_on(operator::central::run(args)),
        Role::Node(args) => runtime()?.block_on(node::run(*args)),
        Role::Chassis(args) => runtime()?.block_on(node::chassis_role::run(args)),
        Role::NatGw(args) => runtime()?.block_on(natgw::run(args)),
        Role::Crd => {
            print!("{}", kube_ovn::api::crds_yaml()?);
            Ok(())
        }
        Role::Render(args) => {
            print!("{}", operator::install::plain::render_plain(&args)?);
            Ok(())
        }
        Role::OlmBundle(args) => olm::run(&args),
        Role::Version => {
            println!("kube-ovn {}", kube_ovn::VERSION);
            Ok(())
        }
    }
}
