//! The `kube-sim` binary: `kube-sim serve --kubeconfig PATH` runs the API server and the
//! workload controllers (and, with `--nodes`, the node simulator) until SIGINT/SIGTERM;
//! SIGUSR1 dumps the state to `--dump`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kube_sim::ApiServer;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(
    name = "kube-sim",
    about = "Kubernetes test bed: API emulator and node simulator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Kubernetes API on 127.0.0.1 and write a kubeconfig for it.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Where to write the kubeconfig pointing at this server.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Dump every object as JSON here on SIGUSR1 and on exit.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Simulated nodes (kubelet + Multus) to run; 0 serves the API only.
    #[arg(long, default_value_t = 0)]
    nodes: usize,
    /// The nodes' private directories live under here (default: a directory next to the
    /// kubeconfig).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Directory searched first for delegate CNI plugins (as a node sees it); repeatable.
    /// The node's /opt/cni/bin and /usr/lib/cni follow.
    #[arg(long)]
    cni_bin_dir: Vec<PathBuf>,
    /// A shell command run inside every node (its network and mount namespaces) once the
    /// nodes are up, e.g. the node agent of the CNI under test. It sees NODE_NAME, NODE_IP,
    /// TUNNEL_NIC, TUNNEL_IP (a /24 address free for the overlay) and KUBECONFIG; its output
    /// goes to <state-dir>/<node>/node-command.log. Stopped with SIGTERM at shutdown (start
    /// the agent with `exec` so that it is the one receiving it).
    #[arg(long)]
    node_command: Option<String>,
    /// Run containers of this image as a local program: `IMAGE=PROGRAM [ARG…]`, e.g.
    /// `kube-ovn:v1=target/debug/kube-ovn`; repeatable. Pods with no mapped image stay
    /// network sandboxes only.
    #[arg(long)]
    image_map: Vec<String>,
    /// A file of `--image-map` entries, one a line (`#` starts a comment).
    #[arg(long)]
    image_map_file: Option<PathBuf>,
    /// Put the nodes on an "external" network numbered from this /24 (e.g. 172.18.0.0): each
    /// node gets `ext0` on a bridge outside the cluster, with an external host (namespace
    /// `<prefix>-external`) holding the router address `.1` and 198.51.100.1 beyond it.
    #[arg(long)]
    external_net: Option<Ipv4Addr>,
}

/// The container runtime `--image-map` and `--image-map-file` ask for.
fn container_runtime(args: &ServeArgs) -> anyhow::Result<kube_sim::nodes::ContainerRuntime> {
    let mut entries = args.image_map.clone();
    if let Some(path) = &args.image_map_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --image-map-file {}", path.display()))?;
        entries.extend(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or_default().trim())
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
    }
    if entries.is_empty() {
        return Ok(kube_sim::nodes::ContainerRuntime::SandboxOnly);
    }
    kube_sim::nodes::ContainerRuntime::from_entries(entries.iter().map(String::as_str))
        .map_err(anyhow::Error::msg)
}

async fn start_nodes(
    server: &ApiServer,
    nodes: usize,
    args: &ServeArgs,
) -> anyhow::Result<kube_sim::nodes::Simulator> {
    let state_dir = match &args.state_dir {
        Some(dir) => dir.clone(),
        None => args.kubeconfig.with_extension("nodes"),
    };
    // Multus's deployment installs the NetworkAttachmentDefinition CRD; so does its emulation.
    let crds: kube::Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        kube::Api::all(server.client()?);
    match crds
        .create(&Default::default(), &kube_sim::nodes::nad::crd())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).context("installing the NetworkAttachmentDefinition CRD"),
    }
    let mut config = kube_sim::nodes::SimulatorConfig::new(nodes, &state_dir);
    config.fabric.cni_bin_dirs = args.cni_bin_dir.clone();
    config.fabric.external_net = args.external_net;
    config.api_server = Some(server.addr());
    config.runtime = container_runtime(args)?;
    let simulator = kube_sim::nodes::Simulator::start(server.client()?, config)
        .await
        .context("starting the node simulator")?;
    tracing::info!(nodes, state_dir = %state_dir.display(), netns_prefix = simulator.netns_prefix(), "nodes are up");
    if let Some(external) = simulator.external() {
        tracing::info!(netns = %external.netns, cidr = %external.cidr, router = %external.router, beyond = %external.beyond, "external network is up");
    }
    Ok(simulator)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let server = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port))).await?;
    server.write_kubeconfig(&args.kubeconfig)?;
    tracing::info!(url = %server.url(), kubeconfig = %args.kubeconfig.display(), "kube-sim is serving");
    let controllers = kube_sim::controllers::WorkloadControllers::start(server.client()?);

    let nodes = match args.nodes {
        0 => None,
        n => Some(start_nodes(&server, n, &args).await?),
    };
    let mut node_commands = Vec::new();
    if let (Some(sim), Some(command)) = (&nodes, &args.node_command) {
        for node in sim.nodes() {
            node_commands.push(spawn_node_command(node, command, &args.kubeconfig)?);
        }
    }

    let mut usr1 = signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = usr1.recv() => dump(&server, args.dump.as_ref()),
        }
    }
    dump(&server, args.dump.as_ref());
    for child in node_commands {
        stop_node_command(child).await;
    }
    controllers.shutdown().await;
    if let Some(nodes) = nodes {
        nodes.shutdown().await;
    }
    server.shutdown().await;
    Ok(())
}

/// Starts `--node-command` inside `node`.
fn spawn_node_command(
    node: &kube_sim::nodes::Node,
    command: &str,
    kubeconfig: &std::path::Path,
) -> anyhow::Result<tokio::process::Child> {
    let log_path = node.state_dir.join("node-command.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let kubeconfig = std::path::absolute(kubeconfig).context("resolving --kubeconfig")?;
    let child = node
        .command("sh")?
        .args(["-c", command])
        .env("NODE_NAME", &node.name)
        .env("NODE_IP", node.underlay_ip.to_string())
        .env("TUNNEL_NIC", kube_sim::nodes::TUNNEL_NIC)
        .env("TUNNEL_IP", format!("{}/24", node.tunnel_ip))
        .env("KUBECONFIG", kubeconfig)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("node {}: starting --node-command", node.name))?;
    tracing::info!(node = %node.name, pid = ?child.id(), log = %log_path.display(), "node command started");
    Ok(child)
}

/// SIGTERM, then SIGKILL after 10 s.
async fn stop_node_command(mut child: tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let waited = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait()).await;
    if waited.is_err() {
        let _ = child.kill().await;
    }
}

fn dump(server: &ApiServer, path: Option<&PathBuf>) {
    let Some(path) = path else { return };
    match server.dump_to(path) {
        Ok(()) => tracing::info!(path = %path.display(), "state dumped"),
        Err(e) => tracing::error!(error = %e, "dump failed"),
    }
}
