//! `sim-workload`: the small program kube-sim's process-pod tests run as a container image.
//! It writes what it sees to stdout (its container log: chosen environment variables and
//! files, ticks, signals), serves HTTP on a port (`/healthz`; `/ready`, which follows a file;
//! `/exit/<code>` to exit on demand), can crash after a delay, ignore SIGTERM, and check that
//! `kube::Client::try_default()` reaches the API from inside the pod. Stdout is its product
//! here, so it prints rather than logs through `tracing`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser, Debug)]
struct Args {
    /// Print `NAME=value` for each of these environment variables.
    #[arg(long, value_delimiter = ',')]
    show_env: Vec<String>,
    /// Print `file PATH: content` for each of these files.
    #[arg(long)]
    show_file: Vec<PathBuf>,
    /// Serve HTTP on this port (all addresses).
    #[arg(long)]
    serve: Option<u16>,
    /// `/ready` answers 200 while this file exists (always, without it).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Print `tick N` this often.
    #[arg(long)]
    tick_ms: Option<u64>,
    /// Exit after this long, with `--exit-code`.
    #[arg(long)]
    exit_after_ms: Option<u64>,
    #[arg(long, default_value_t = 0)]
    exit_code: i32,
    /// Keep running on SIGTERM (only SIGKILL stops it).
    #[arg(long)]
    ignore_sigterm: bool,
    /// List pods through `kube::Client::try_default()` and print `api ok: N pods`.
    #[arg(long)]
    check_api: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    say(format!("started pid {}", std::process::id()));
    for name in &args.show_env {
        say(format!(
            "{name}={}",
            std::env::var(name).unwrap_or_default()
        ));
    }
    for path in &args.show_file {
        let content = std::fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"));
        say(format!("file {}: {}", path.display(), content.trim()));
    }
    if args.check_api {
        let client = kube::Client::try_default().await?;
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::default_namespaced(client);
        let list = pods.list(&Default::default()).await?;
        say(format!("api ok: {} pods", list.items.len()));
    }
    if let Some(port) = args.serve {
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
        say(format!("serving on {port}"));
        tokio::spawn(serve(listener, args.ready_file.clone()));
    }
    if let Some(ms) = args.tick_ms {
        tokio::spawn(async move {
            for n in 1.. {
                say(format!("tick {n}"));
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        });
    }
    let exit_after = async {
        match args.exit_after_ms {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => std::future::pending().await,
        }
    };
    let mut term = signal(SignalKind::terminate())?;
    tokio::pin!(exit_after);
    loop {
        tokio::select! {
            _ = &mut exit_after => {
                say(format!("exiting with {}", args.exit_code));
                std::process::exit(args.exit_code);
            }
            _ = term.recv() => {
                if args.ignore_sigterm {
                    say("ignoring SIGTERM".into());
                } else {
                    say("SIGTERM received, exiting".into());
                    return Ok(());
                }
            }
        }
    }
}

fn say(line: String) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn serve(listener: tokio::net::TcpListener, ready_file: Option<PathBuf>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let ready_file = ready_file.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 1024];
            let n = stream.read(&mut buffer).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buffer[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
            let ready = ready_file.as_ref().is_none_or(|f| f.exists());
            let (status, exit) = match path.as_str() {
                "/healthz" => ("200 OK", None),
                "/ready" if ready => ("200 OK", None),
                "/ready" => ("503 Service Unavailable", None),
                p => match p.strip_prefix("/exit/").and_then(|c| c.parse::<i32>().ok()) {
                    Some(code) => ("200 OK", Some(code)),
                    None => ("404 Not Found", None),
                },
            };
            let response =
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(response.as_bytes()).await;
            if let Some(code) = exit {
                say(format!("exiting with {code} on request"));
                std::process::exit(code);
            }
        });
    }
}
