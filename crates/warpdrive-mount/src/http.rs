//! The daemon's HTTP listener: `/metrics` in the Prometheus text format (or OpenMetrics, when
//! the scraper asks for it). Loopback only unless the config says `allow_remote: true`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use warpdrive_metrics::Metrics;

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds the listener now (so a taken port fails the start with a clear error, before
/// anything is mounted). Serve it with [`serve`] inside the runtime.
pub(crate) fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| crate::ConfigProblem {
        field: "metrics.listen".into(),
        message: format!("cannot listen on {addr} ({e}); pick a free port"),
    })?;
    l.set_nonblocking(true)
        .context("setting the metrics listener non-blocking")?;
    Ok(l)
}

/// Serves `/metrics` until the runtime stops.
pub(crate) async fn serve(listener: std::net::TcpListener, metrics: Arc<Metrics>) {
    let app = Router::new()
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let m = metrics.clone();
                async move { render(&m, &headers) }
            }),
        )
        .route("/", get(|| async { "WarpDrive: metrics at /metrics\n" }));
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "metrics listener unusable; /metrics is not served");
            return;
        }
    };
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics listener stopped");
    }
}

fn render(m: &Metrics, headers: &HeaderMap) -> axum::response::Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let (body, ty) = if openmetrics {
        (m.render_openmetrics(), OPENMETRICS_TEXT)
    } else {
        (m.render(), PROMETHEUS_TEXT)
    };
    ([(header::CONTENT_TYPE, HeaderValue::from_static(ty))], body).into_response()
}
