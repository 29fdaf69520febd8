//! doc/openapi.yaml, `api::ROUTES` and the router agree: every documented route is served
//! (a 2xx answer, on a real server over a local backend) and nothing else is.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::Method;
use warpdrive_cache::{Cache, CacheConfig};
use warpdrive_config::Config;
use warpdrive_control::api::ROUTES;
use warpdrive_control::client::Client;
use warpdrive_control::server::{self, Control};

fn documented() -> BTreeSet<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../doc/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("doc/openapi.yaml");
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("valid YAML");
    let mut out = BTreeSet::new();
    for (p, item) in doc["paths"].as_mapping().expect("paths").iter() {
        for (m, _) in item.as_mapping().expect("path item").iter() {
            let m = m.as_str().expect("key");
            if ["get", "put", "post", "delete", "patch"].contains(&m) {
                out.insert((m.to_uppercase(), p.as_str().expect("path").to_string()));
            }
        }
    }
    out
}

#[test]
fn openapi_lists_exactly_the_served_routes() {
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented(),
        routes,
        "doc/openapi.yaml and api::ROUTES differ"
    );

    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("d")).expect("data");
    std::fs::write(data.join("d/f.bin"), vec![7u8; 300_000]).expect("file");
    // A shared tier in a directory, for a cloud backend no request reaches here.
    std::fs::create_dir_all(dir.path().join("tier/wd1")).expect("tier");
    let yaml = format!(
        "mount_point: {}\ncache: {{ dir: {} }}\nbackends:\n  - name: b\n    local: {{ path: {} }}\n  - name: s\n    s3: {{ bucket: x, region: us-east-1, endpoint: \"http://127.0.0.1:9\" }}\n    auth: anonymous\nshared_cache:\n  local: {{ path: {} }}\n",
        dir.path().join("mnt").display(),
        dir.path().join("cache").display(),
        data.display(),
        dir.path().join("tier").display()
    );
    let cfg_path = dir.path().join("config.yaml");
    std::fs::write(&cfg_path, yaml).expect("config");
    let config = Config::load(&cfg_path).expect("config");
    let cache = Arc::new(
        Cache::open(CacheConfig {
            dir: config.cache.dir.clone(),
            block_size: config.cache.block_size,
        })
        .expect("cache"),
    );
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let control = Control::standalone(&config, cache, "t").expect("control");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr").to_string();
    let token = "route-test-token-0123456789";
    rt.spawn(server::serve_tcp(
        listener,
        server::require_token(server::router(control), token.into()),
    ));
    let client = Client::tcp(&addr, token).expect("client");

    // One concrete request per route, in an order that makes each meaningful (the warm job
    // exists before it is read and cancelled).
    let requests: &[(&str, &str, &str, Option<&str>)] = &[
        ("GET", "/api/v1/status", "/api/v1/status", None),
        ("GET", "/api/v1/stats", "/api/v1/stats", None),
        (
            "GET",
            "/api/v1/usage",
            "/api/v1/usage?by=path&depth=2",
            None,
        ),
        ("GET", "/api/v1/stale", "/api/v1/stale?older_than=1d", None),
        (
            "POST",
            "/api/v1/warm",
            "/api/v1/warm",
            Some(r#"{"paths":["b/d"]}"#),
        ),
        ("GET", "/api/v1/jobs", "/api/v1/jobs", None),
        ("GET", "/api/v1/jobs/{id}", "/api/v1/jobs/1", None),
        ("DELETE", "/api/v1/jobs/{id}", "/api/v1/jobs/1", None),
        ("POST", "/api/v1/verify", "/api/v1/verify", Some("{}")),
        (
            "POST",
            "/api/v1/copy",
            "/api/v1/copy",
            Some(r#"{"src":"b/d","dst":"b/e","dry_run":true}"#),
        ),
        (
            "POST",
            "/api/v1/evict",
            "/api/v1/evict",
            Some(r#"{"path":"b","dry_run":true}"#),
        ),
        (
            "PUT",
            "/api/v1/quotas/{team}",
            "/api/v1/quotas/ml",
            Some(r#"{"paths":["b/d"],"max":"1MiB"}"#),
        ),
        ("GET", "/api/v1/quotas", "/api/v1/quotas", None),
        ("GET", "/api/v1/usage", "/api/v1/usage?by=team", None),
        ("DELETE", "/api/v1/quotas/{team}", "/api/v1/quotas/ml", None),
        ("GET", "/api/v1/fleet/status", "/api/v1/fleet/status", None),
        (
            "POST",
            "/api/v1/fleet/gc",
            "/api/v1/fleet/gc",
            Some(r#"{"older_than":"7d","dry_run":true}"#),
        ),
        (
            "POST",
            "/api/v1/fleet/warm",
            "/api/v1/fleet/warm",
            Some(r#"{"path":"s/d"}"#),
        ),
        (
            "POST",
            "/api/v1/plans",
            "/api/v1/plans",
            Some(r#"{"job":"j","rank":0,"epoch":1,"entries":[{"path":"b/d/f.bin"}]}"#),
        ),
        ("GET", "/api/v1/plans", "/api/v1/plans", None),
        (
            "DELETE",
            "/api/v1/plans/{job}",
            "/api/v1/plans/j?rank=0",
            None,
        ),
        // Without a mount (warpdrive-ctl serve) there is nothing to restart: a clear 409.
        (
            "POST",
            "/api/v1/restart",
            "/api/v1/restart",
            Some(r#"{"wait_seconds":1}"#),
        ),
    ];
    let exercised: BTreeSet<(String, String)> = requests
        .iter()
        .map(|(m, p, _, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(exercised, routes, "the test sends one request per route");
    for (m, _, uri, body) in requests {
        let method = Method::from_bytes(m.as_bytes()).expect("method");
        let (status, bytes) = client
            .raw(method, uri, body.map(|b| b.as_bytes().to_vec()))
            .expect("request");
        if *uri == "/api/v1/restart" {
            assert_eq!(status, axum::http::StatusCode::CONFLICT);
            assert!(
                String::from_utf8_lossy(&bytes).contains("no mount to restart"),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
            continue;
        }
        assert!(
            status.is_success(),
            "{m} {uri}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
        serde_json::from_slice::<serde_json::Value>(&bytes).expect("JSON answer");
    }
    let (status, bytes) = client
        .raw(Method::GET, "/api/v2/stats", None)
        .expect("request");
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&bytes).contains("/api/v1"));
    let (status, _) = client
        .raw(Method::GET, "/api/v1/usage?by=nonsense", None)
        .expect("request");
    assert_eq!(status, 400, "a bad parameter is a client error");
}
