//! `campaign unsubscribe-server`: its flags, the secret from the environment, the listening
//! socket, signals and the exit code around [`campaign::server::serve`].

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::Args as ClapArgs;

use campaign::campaign::Campaign;
use campaign::exit::{Code, Error, escape_controls};
use campaign::server::{self, Endpoint, Limits, Routes, Stop, SuppressionList};
use campaign::unsubscribe::UnsubscribeSecret;

use super::values;

/// Flags of `campaign unsubscribe-server`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Address and port to listen on, e.g. 127.0.0.1:8025 behind a TLS proxy. Port 0 picks
    /// a free port; the address is printed as `listening on http://...`.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,

    /// The suppression list to append unsubscribed addresses to, one per line (created if
    /// missing): give it to `campaign segment --suppress` and `campaign send --suppress`.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// A campaign file whose `[message] unsubscribe_url` links to serve; repeat for several.
    #[arg(long = "campaign", value_name = "CAMPAIGN.toml", required = true)]
    pub campaigns: Vec<PathBuf>,

    /// Seconds a client has to send a request's headers (tests shorten it).
    #[arg(long, value_name = "SECONDS", value_parser = values::seconds, default_value = "10", hide = true)]
    pub header_timeout: Duration,

    /// Seconds a client has to send a request's body (tests shorten it).
    #[arg(long, value_name = "SECONDS", value_parser = values::seconds, default_value = "10", hide = true)]
    pub body_timeout: Duration,
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: Args) -> Result<Code, Error> {
    let campaigns = args
        .campaigns
        .iter()
        .map(|p| Campaign::load(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(super::usage)?;
    let routes = Routes::new(&campaigns).map_err(super::usage)?;
    let secret = UnsubscribeSecret::from_var_or_file(
        std::env::var_os(UnsubscribeSecret::ENV),
        std::env::var_os(UnsubscribeSecret::FILE_ENV),
    )
    .map_err(|e| super::usage(anyhow!(e)))?
    .ok_or_else(|| {
        super::usage(anyhow!(
            "no unsubscribe secret: set {} (or {} to a file holding it) to the value `campaign send` made the links with",
            UnsubscribeSecret::ENV,
            UnsubscribeSecret::FILE_ENV
        ))
    })?;
    let list = SuppressionList::open(&args.out).map_err(super::usage)?;
    let listener = TcpListener::bind(args.listen).map_err(|e| bind_error(args.listen, e))?;
    let addr = listener
        .local_addr()
        .context("reading the listening address")?;

    eprintln!("campaign: listening on http://{addr}");
    for (path, id) in routes.iter() {
        eprintln!(
            "campaign: serving {} for campaign {id}",
            escape_controls(path)
        );
    }
    eprintln!(
        "campaign: appending unsubscribed addresses to {}",
        list.path().display()
    );

    let stop = Stop::new();
    {
        let stop = stop.clone();
        let signals = AtomicUsize::new(0);
        // Every 200 was synced to disk before it was sent, so quitting at once on a second
        // signal loses no unsubscribe that was answered.
        let _ = ctrlc::set_handler(move || {
            if signals.fetch_add(1, Ordering::SeqCst) > 0 {
                std::process::exit(130);
            }
            eprintln!(
                "campaign: stopping after the requests in flight (signal again to quit at once)"
            );
            stop.stop();
        });
    }
    let limits = Limits {
        header_timeout: args.header_timeout,
        body_timeout: args.body_timeout,
        ..Limits::default()
    };
    let endpoint = Endpoint {
        routes,
        list,
        secret,
    };
    server::serve(listener, endpoint, limits, &stop, |line| {
        eprintln!("campaign: {}", escape_controls(line));
    })
    .with_context(|| format!("serving on {addr}"))?;
    Ok(Code::Success)
}

/// Why the socket could not be bound, with what to do about it.
fn bind_error(addr: SocketAddr, e: std::io::Error) -> Error {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "another process already listens there (an unsubscribe-server still running?); stop it or choose another port"
        }
        std::io::ErrorKind::PermissionDenied => {
            "ports below 1024 need privileges; listen on a high port such as 8025 behind the TLS proxy"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "that address is not one of this machine's; use 127.0.0.1 behind a proxy on the same machine"
        }
        _ => "check the --listen address",
    };
    Error::new(
        Code::Failure,
        anyhow!("cannot listen on {addr}: {e}; {hint}"),
    )
}
