//! `warpdrive-ctl serve`: the control API on TCP, for automation and remote governance.
//!
//! Every request needs the bearer token. With a daemon running, requests are handed to its
//! Unix socket (the daemon owns the cache); without one, this process opens the cache and
//! the backends itself and answers (including `warm`, fetching with the same code as the
//! daemon, without a mount).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use axum::Router;
use warpdrive_config::Config;
use warpdrive_control::server::{self, Control};
use warpdrive_control::{client, token};

use crate::{api, exit};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 stopped with Ctrl-C or SIGTERM; 1 cannot listen, no usable token, or the cache cannot be opened; 2 bad config."
)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback needs --allow-remote.
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// A file (mode 0600) with the bearer token. Otherwise $WARPDRIVE_TOKEN, otherwise a
    /// token generated into `control.token` in the cache directory.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Allow a listener other machines can reach (the token is required either way).
    #[arg(long)]
    allow_remote: bool,
}

pub fn run(config: &Config, a: &ServeArgs) -> Result<u8> {
    if !a.listen.ip().is_loopback() && !a.allow_remote {
        bail!(
            "--listen {} is not a loopback address; add --allow-remote to serve the control API to the network (always behind the token)",
            a.listen
        );
    }
    let file = a
        .token_file
        .as_deref()
        .or(config.control.token_file.as_deref());
    let (tok, source) = token::load(file, &config.cache.dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let listener = std::net::TcpListener::bind(a.listen).with_context(|| {
        format!(
            "cannot listen on {}; pick a free port with --listen",
            a.listen
        )
    })?;
    listener.set_nonblocking(true)?;
    let (router, mode) = match api::daemon(config) {
        Some(_) => {
            let socket = config.control.socket.clone();
            let r = Router::new().fallback(move |req: axum::extract::Request| {
                let socket = socket.clone();
                async move { client::forward(&socket, req).await }
            });
            (
                r,
                format!(
                    "forwarding to the daemon at {}",
                    config.control.socket.display()
                ),
            )
        }
        None => {
            let _guard = rt.enter();
            (
                standalone(config)?,
                "no daemon running: serving the cache directly".into(),
            )
        }
    };
    let router = server::require_token(router, tok);
    eprintln!(
        "warpdrive-ctl: control API at http://{}/api/v1 ({source}; {mode}); Ctrl-C stops",
        a.listen
    );
    rt.block_on(async {
        tokio::select! {
            _ = server::serve_tcp(listener, router) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    });
    Ok(exit::OK)
}

/// The API over this process's own cache and backends.
fn standalone(config: &Config) -> Result<Router> {
    let cache = Arc::new(api::open_cache(config)?);
    warpdrive_control::quotas::apply_saved(&cache, &config.cache.dir)?;
    let c = Control::standalone(config, cache, env!("CARGO_PKG_VERSION"))?;
    Ok(server::router(c))
}
