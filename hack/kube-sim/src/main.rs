//! The `kube-sim` binary: `kube-sim serve --kubeconfig PATH` runs the API server (and, with
//! `--nodes`, the node simulator) until SIGINT/SIGTERM; SIGUSR1 dumps the state to `--dump`.

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

    // Node simulator hook: start the nodes here (they talk to `server.url()` through `kube`).

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
    server.shutdown().await;
    Ok(())
}

fn dump(server: &ApiServer, path: Option<&PathBuf>) {
    let Some(path) = path else { return };
    match server.dump_to(path) {
        Ok(()) => tracing::info!(path = %path.display(), "state dumped"),
        Err(e) => tracing::error!(error = %e, "dump failed"),
    }
}
