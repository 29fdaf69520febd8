use std::path::Path;
use std::time::Duration;

use super::*;

const GOOD: &str = r#"
mount_point: /wd
cache: { dir: /mnt/nvme/warpdrive-cache, max_size: 500GiB }
metrics: { listen: 127.0.0.1:9090 }
metadata_ttl: 60s
backends:
  - name: datasets-cac
    azure: { account: wdcac, container: datasets, prefix: "" }
    auth: managed_identity
  - name: datasets-wus3
    azure: { account: wdwus3, container: datasets }
    auth: managed_identity
  - name: s3-archive
    s3: { bucket: archive, region: us-east-1, prefix: imagenet/ }
    auth: environment
  - name: gcs-eval
    gcs: { bucket: evalsets }
  - name: scratch
    local: { path: /data/scratch }
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.yaml"))
}

#[test]
fn a_remote_metrics_listener_needs_allow_remote() {
    let c = parse(&GOOD.replace(
        "listen: 127.0.0.1:9090",
        "listen: 0.0.0.0:9090, allow_remote: true",
    ))
    .expect("explicitly allowed");
    assert!(c.metrics.allow_remote);
    assert!(!c.metrics.listen.ip().is_loopback());
    assert!(c.metrics.enabled, "on by default");
    let off = parse(&GOOD.replace(
        "listen: 127.0.0.1:9090",
        "listen: 127.0.0.1:9090, enabled: false",
    ))
    .expect("metrics off");
    assert!(!off.metrics.enabled);
}

#[test]
fn the_issue_example_parses() {
    let c = parse(GOOD).expect("example config parses");
    assert_eq!(c.mount_point, Path::new("/wd"));
    assert_eq!(c.cache.max_size, SizeLimit::Bytes(500 << 30));
    assert_eq!(c.metadata_ttl, MetadataTtl::For(Duration::from_secs(60)));
    assert_eq!(c.backends.len(), 5);
    assert_eq!(c.backends[2].prefix, "imagenet/");
    assert_eq!(c.backends[3].auth, AuthMode::Environment);
    assert_eq!(c.backends[4].kind.type_name(), "local");
    assert_eq!(c.fuse.threads, DEFAULT_FUSE_THREADS);
    assert!(!c.fuse.allow_other);
    assert_eq!(c.fuse.passthrough, Passthrough::Auto);
    assert!(
        !c.fuse.zero_message_opens,
        "opens reach the daemon by default"
    );
    assert!(c.fuse.control_file, "the control file is served by default");
    assert_eq!(c.cache.min_free, SizeLimit::PercentOfDisk(10.0));
    assert_eq!(c.cache.block_size, DEFAULT_BLOCK_SIZE);
    assert_eq!(c.cache.prefetch_budget, 256 << 20);
    // The resolved config names every backend and writes units back out.
    let yaml = c.to_yaml();
    assert!(yaml.contains("datasets-wus3"), "{yaml}");
    assert!(yaml.contains("max_size: 500GiB"), "{yaml}");
    assert!(yaml.contains("block_size: 1MiB"), "{yaml}");
    assert!(yaml.contains("passthrough: auto"), "{yaml}");
    assert!(yaml.contains("metadata_ttl: 1m"), "{yaml}");
    assert!(yaml.contains("type: s3"), "{yaml}");
}

#[test]
fn indefinite_ttl_and_percent_size() {
    let text = GOOD
        .replace("metadata_ttl: 60s", "metadata_ttl: indefinite")
        .replace("500GiB", "80%");
    let c = parse(&text).expect("parses");
    assert_eq!(c.metadata_ttl, MetadataTtl::Indefinite);
    assert_eq!(c.cache.max_size, SizeLimit::PercentOfDisk(80.0));
    assert_eq!(c.negative_ttl, DEFAULT_NEGATIVE_TTL);
}

#[test]
fn writable_prefixes_are_directories_and_nothing_is_writable_by_default() {
    let c = parse(GOOD).expect("parses");
    assert!(c.backends.iter().all(|b| b.write.prefixes.is_empty()));
    let c = parse(&GOOD.replace(
        "    s3: { bucket: archive, region: us-east-1, prefix: imagenet/ }",
        "    s3: { bucket: archive, region: us-east-1, prefix: imagenet/ }\n    writable: [checkpoints, /runs/x/]\n    overwrite: true",
    ))
    .expect("parses");
    let w = &c.backends[2].write;
    assert_eq!(w.prefixes, ["checkpoints/", "runs/x/"]);
    assert!(w.overwrite && !w.delete);
    assert!(w.allows("checkpoints/step-100/model.pt"));
    assert!(
        !w.allows("checkpointsX/model.pt"),
        "a prefix is a directory"
    );
    assert!(!w.allows("train/a.tar"));
    assert!(w.allows_dir("checkpoints") && w.allows_dir("runs/x"));
    assert!(!w.allows_dir("runs"), "above a writable prefix");
    assert!(w.leads_to("runs") && w.leads_to("") && w.leads_to("checkpoints/a"));
    assert!(!w.leads_to("train") && !w.leads_to("runsx"));
    let yaml = c.to_yaml();
    assert!(
        yaml.contains("writable:") && yaml.contains("overwrite: true"),
        "{yaml}"
    );
    let whole = parse(&GOOD.replace(
        "    gcs: { bucket: evalsets }",
        "    gcs: { bucket: evalsets }\n    writable: [/]",
    ))
    .expect("parses");
    assert!(whole.backends[3].write.allows("anything/at/all"));
}

#[test]
fn zero_message_opens_are_asked_for_by_name() {
    let text = GOOD.replace(
        "metadata_ttl: 60s",
        "metadata_ttl: indefinite\nfuse: { zero_message_opens: true }",
    );
    let c = parse(&text).expect("parses");
    assert!(c.fuse.zero_message_opens);
    assert!(c.to_yaml().contains("zero_message_opens: true"));
}

#[test]
fn a_name_is_never_known_absent_longer_than_present() {
    let c = parse(GOOD).expect("parses");
    assert_eq!(c.negative_ttl, DEFAULT_NEGATIVE_TTL);
    let short = GOOD.replace("metadata_ttl: 60s", "metadata_ttl: 2s");
    assert_eq!(
        parse(&short).expect("parses").negative_ttl,
        Duration::from_secs(2)
    );
    let long = GOOD.replace("metadata_ttl: 60s", "metadata_ttl: 60s\nnegative_ttl: 5m");
    assert_eq!(
        parse(&long).expect("parses").negative_ttl,
        Duration::from_secs(60)
    );
    let off = GOOD.replace("metadata_ttl: 60s", "metadata_ttl: 60s\nnegative_ttl: 0s");
    assert_eq!(parse(&off).expect("parses").negative_ttl, Duration::ZERO);
}

/// Each malformed case: (what is changed, the replacement, words the message must contain).
#[test]
fn malformed_configs_name_the_field() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "metadata_ttl: 60s",
            "metdata_ttl: 60s",
            &["unknown field `metdata_ttl`"],
        ),
        (
            "s3: { bucket: archive,",
            "s3: { bukket: archive,",
            &["unknown field `bukket`"],
        ),
        (
            "gcs: { bucket: evalsets }",
            "hdfs: { bucket: evalsets }",
            &["unknown field `hdfs`"],
        ),
        (
            "name: scratch",
            "name: datasets-cac",
            &["backends[4].name", "used by two backends"],
        ),
        ("name: scratch", "name: a/b", &["backends[4].name", "'/'"]),
        (
            "name: scratch",
            "name: ..",
            &["backends[4].name", "cannot be a directory name"],
        ),
        (
            "    local: { path: /data/scratch }",
            "    local: { path: /data/scratch }\n    writable: [\"\"]",
            &["(scratch).writable[0]", "`/` for the whole backend"],
        ),
        (
            "    local: { path: /data/scratch }",
            "    local: { path: /data/scratch }\n    writable: [a/../b]",
            &["(scratch).writable[0]", "`..` segment"],
        ),
        (
            "    local: { path: /data/scratch }",
            "    local: { path: /data/scratch }\n    writable: [out/]\nfuse: { zero_message_opens: true }",
            &["backends[4].writable", "zero_message_opens"],
        ),
        (
            "    local: { path: /data/scratch }",
            "    local: { path: /data/scratch }\n    delete: true",
            &["(scratch).delete", "there are none"],
        ),
        (
            "name: scratch",
            "name: .warpdrive",
            &["backends[4].name", "control directory"],
        ),
        (
            "name: scratch",
            "name: \"\"",
            &["backends[4].name", "empty"],
        ),
        ("mount_point: /wd", "", &["mount_point", "missing"]),
        (
            "mount_point: /wd",
            "mount_point: wd",
            &["mount_point", "relative"],
        ),
        ("500GiB", "500 parsecs", &["cache.max_size", "unknown unit"]),
        ("500GiB", "lots", &["cache.max_size", "not a size"]),
        ("500GiB", "150%", &["cache.max_size", "between"]),
        (
            "max_size: 500GiB",
            "max_size: 500GiB, min_free: lots%",
            &["cache.min_free", "not a percentage"],
        ),
        (
            "max_size: 500GiB",
            "max_size: 500GiB, block_size: 3MiB",
            &["cache.block_size", "power of two"],
        ),
        (
            "max_size: 500GiB",
            "max_size: 500GiB, block_size: 32KiB",
            &["cache.block_size", "64KiB to 16MiB"],
        ),
        (
            "max_size: 500GiB",
            "max_size: 500GiB, prefetch_budget: 4KiB",
            &["cache.prefetch_budget", "smaller than one block"],
        ),
        (
            "mount_point: /wd",
            "mount_point: /wd\nfuse: { passthrough: always }",
            &["unknown variant `always`"],
        ),
        (
            "mount_point: /wd",
            "mount_point: /wd\nfuse: { zero_message_opens: sometimes }",
            &["zero_message_opens", "boolean"],
        ),
        (
            "metadata_ttl: 60s",
            "metadata_ttl: soon",
            &["metadata_ttl", "not a duration"],
        ),
        (
            "metadata_ttl: 60s",
            "metadata_ttl: 60s\nnegative_ttl: briefly",
            &["negative_ttl", "not a duration", "0s"],
        ),
        (
            "listen: 127.0.0.1:9090",
            "listen: nine",
            &["metrics.listen", "not an address"],
        ),
        (
            "listen: 127.0.0.1:9090",
            "listen: 0.0.0.0:9090",
            &[
                "metrics.listen",
                "not a loopback address",
                "allow_remote: true",
            ],
        ),
        ("{ bucket: evalsets }", "{ }", &["gcs.bucket", "missing"]),
        (
            "container: datasets, prefix",
            "prefix",
            &["azure.container", "missing"],
        ),
        (
            "auth: environment",
            "auth: password",
            &["is not an auth mode"],
        ),
        ("auth: environment", "auth: emulator", &["auth", "loopback"]),
        (
            "prefix: imagenet/",
            "prefix: a/../b",
            &["s3.prefix", "`..`"],
        ),
        (
            "local: { path: /data/scratch }",
            "local: { path: data }",
            &["local.path", "relative"],
        ),
        (
            "gcs: { bucket: evalsets }",
            "gcs: { bucket: evalsets }\n    local: { path: /x }",
            &["exactly one of"],
        ),
        (
            "backends:",
            "backends: []\nunused:",
            &["unknown field `unused`"],
        ),
        (
            "local: { path: /data/scratch }",
            "local: { path: /data/scratch }\n    auth: managed_identity",
            &["(scratch).auth", "no identity"],
        ),
    ];
    for (from, to, words) in cases {
        assert!(GOOD.contains(from), "case pattern {from:?} must exist");
        let text = GOOD.replacen(from, to, 1);
        let err = parse(&text).expect_err(&format!("{from:?} -> {to:?} must fail"));
        let msg = err.to_string();
        for w in *words {
            assert!(msg.contains(w), "{from:?} -> {to:?}: {msg:?} lacks {w:?}");
        }
        assert!(msg.contains("test.yaml"), "message names the file: {msg}");
    }
}

#[test]
fn empty_backend_list_is_an_error() {
    let text = "mount_point: /wd\ncache: { dir: /c }\nbackends: []\n";
    let msg = parse(text).expect_err("no backends").to_string();
    assert!(
        msg.contains("backends") && msg.contains("at least one"),
        "{msg}"
    );
}

#[test]
fn unreadable_file_is_an_error() {
    let err = Config::load(Path::new("/nonexistent/warpdrive.yaml")).expect_err("missing file");
    assert!(matches!(err, ConfigError::Unreadable { .. }));
    assert!(err.to_string().contains("--config"));
}

#[test]
fn emulator_auth_on_loopback_is_allowed() {
    let text = r#"
mount_point: /wd
cache: { dir: /c }
backends:
  - name: az
    azure: { account: devstoreaccount1, container: c, endpoint: "http://127.0.0.1:10000/devstoreaccount1/" }
    auth: emulator
"#;
    let c = parse(text).expect("parses");
    assert_eq!(
        c.backends[0].kind.endpoint(),
        Some("http://127.0.0.1:10000/devstoreaccount1")
    );
}

#[test]
fn sizes_parse() {
    let table: &[(&str, u64)] = &[
        ("1048576", 1 << 20),
        ("1KiB", 1024),
        ("1KB", 1000),
        ("1.5GiB", 3 << 29),
        ("2 TB", 2_000_000_000_000),
        ("64M", 64 << 20),
    ];
    for (s, want) in table {
        assert_eq!(parse_size(s), Ok(*want), "{s}");
    }
}

#[test]
fn auth_as_a_map_names_the_identity_and_its_endpoint() {
    let with = |auth: &str| GOOD.replacen("auth: managed_identity", auth, 1);
    let c = parse(&with(
        "auth: { mode: managed_identity, client_id: abc-123, endpoint: \"http://127.0.0.1:9/metadata/identity/oauth2/token\" }",
    ))
    .expect("valid");
    let b = &c.backends[0];
    assert_eq!(b.auth, AuthMode::ManagedIdentity);
    assert_eq!(b.identity.client_id.as_deref(), Some("abc-123"));
    assert_eq!(b.identity.describe(), "client_id abc-123");
    assert!(
        b.identity
            .endpoint
            .as_deref()
            .unwrap_or("")
            .starts_with("http://127.0.0.1:9/")
    );
    let err = |auth: &str| parse(&with(auth)).expect_err("invalid").to_string();
    let e = err("auth: { mode: managed_identity, client_id: a, object_id: b }");
    assert!(
        e.contains("backends[0]") && e.contains("one of client_id"),
        "{e}"
    );
    let e = err("auth: { mode: environment, client_id: a }");
    assert!(e.contains("does not take these fields"), "{e}");
    let e = err("auth: { mode: managed_identity, token_file: /var/run/token }");
    assert!(e.contains("does not take these fields"), "{e}");
    let c = parse(&with(
        "auth: { mode: workload_identity, client_id: app, tenant_id: t, token_file: /var/run/token }",
    ))
    .expect("valid workload identity");
    assert_eq!(c.backends[0].identity.tenant_id.as_deref(), Some("t"));
    let e = err("auth: { mode: workload_identity, token_file: relative/token }");
    assert!(e.contains("token_file") && e.contains("relative"), "{e}");
    let e = err("auth: { mode: managed_identity, key: s3cr3t }");
    assert!(e.contains("unknown field `key`"), "{e}");
    assert!(
        !e.contains("s3cr3t"),
        "the value of an unknown field is not echoed: {e}"
    );
    let e = err("auth: password");
    assert!(e.contains("is not an auth mode"), "{e}");
    let e = err("auth: { mode: managed_identity, endpoint: ftp://x }");
    assert!(e.contains("auth.endpoint"), "{e}");
}

#[test]
fn retry_defaults_limits_and_errors() {
    let c = parse(GOOD).expect("defaults");
    assert_eq!(c.retry, RetryPolicy::default());
    assert_eq!(c.retry.deadline, DEFAULT_RETRY_DEADLINE);
    assert!(
        c.backends.iter().all(|b| b.retry == c.retry),
        "every backend gets it"
    );
    let set = parse(&format!(
        "{GOOD}retry: {{ deadline: 5m, unreachable: 30s }}\n"
    ))
    .expect("set");
    assert_eq!(set.retry.deadline, Duration::from_secs(300));
    assert_eq!(set.backends[0].retry.unreachable, Duration::from_secs(30));
    for (yaml, field, says) in [
        ("retry: { deadline: 0s }", "retry.deadline", "zero"),
        (
            "retry: { unreachable: soon }",
            "retry.unreachable",
            "not a duration",
        ),
        (
            "retry: { deadline: 5s, unreachable: 10s }",
            "retry.unreachable",
            "longer than retry.deadline",
        ),
        ("retry: { attempts: 3 }", "", "unknown field"),
    ] {
        let e = parse(&format!("{GOOD}{yaml}\n"))
            .expect_err(yaml)
            .to_string();
        assert!(e.contains(field) && e.contains(says), "{yaml}: {e}");
    }
}

#[test]
fn regression_a_cache_dir_inside_the_mount_point_was_accepted() {
    for dir in ["/wd", "/wd/cache", "/wd/datasets-cac/.cache"] {
        let e = parse(&GOOD.replace("dir: /mnt/nvme/warpdrive-cache", &format!("dir: {dir}")))
            .expect_err(dir)
            .to_string();
        assert!(
            e.contains("cache.dir") && e.contains("inside mount_point"),
            "{e}"
        );
    }
    parse(&GOOD.replace("dir: /mnt/nvme/warpdrive-cache", "dir: /wdcache"))
        .expect("a sibling is fine");
}

const SHARED: &str = "shared_cache:\n  s3: { bucket: fleet-cache, region: us-east-1, prefix: warpdrive }\n  auth: environment\n";

#[test]
fn a_shared_cache_serves_every_cloud_backend_by_default() {
    let c = parse(&format!("{GOOD}{SHARED}")).expect("parses");
    let s = c.shared_cache.expect("shared_cache");
    assert_eq!(s.store.name, "shared_cache");
    assert_eq!(s.store.prefix, "warpdrive/");
    assert_eq!(s.chunk_size, DEFAULT_CHUNK_SIZE);
    assert_eq!(s.lease_ttl, DEFAULT_LEASE_TTL);
    assert_eq!(s.mode, SharedMode::ReadWrite);
    assert_eq!(
        s.backends,
        ["datasets-cac", "datasets-wus3", "s3-archive", "gcs-eval"],
        "every backend but the local one"
    );
    let c = parse(&format!(
        "{GOOD}{SHARED}  chunk_size: 16MiB\n  lease_ttl: 1m\n  mode: read_only\n  backends: [s3-archive]\n"
    ))
    .expect("parses");
    let s = c.shared_cache.clone().expect("shared_cache");
    assert_eq!(
        (s.chunk_size, s.lease_ttl),
        (16 << 20, Duration::from_secs(60))
    );
    assert_eq!(
        (s.mode, s.backends),
        (SharedMode::ReadOnly, vec!["s3-archive".to_string()])
    );
    assert!(
        c.to_yaml().contains("shared_cache"),
        "--check-config shows it"
    );
    assert!(s.leases, "leases on by default");
    let off = parse(&format!("{GOOD}{SHARED}  leases: false\n")).expect("parses");
    assert!(!off.shared_cache.expect("shared_cache").leases);
    assert!(parse(GOOD).expect("parses").shared_cache.is_none());
}

#[test]
fn a_malformed_shared_cache_names_the_field() {
    let cases: &[(&str, &[&str])] = &[
        (
            "  chunk_size: 3500KiB\n",
            &["shared_cache.chunk_size", "whole number of cache blocks"],
        ),
        ("  chunk_size: 1GiB\n", &["shared_cache.chunk_size"]),
        (
            "  lease_ttl: 0s\n",
            &["shared_cache.lease_ttl", "1s to 10m"],
        ),
        ("  mode: sometimes\n", &["unknown variant `sometimes`"]),
        (
            "  backends: [nope]\n",
            &["shared_cache.backends", "`nope` is not a backend"],
        ),
        (
            "  backends: [scratch]\n",
            &["shared_cache.backends", "local backend"],
        ),
        ("  endpoint: x\n", &["unknown field `endpoint`"]),
    ];
    for (extra, words) in cases {
        let msg = parse(&format!("{GOOD}{SHARED}{extra}"))
            .expect_err(extra)
            .to_string();
        for w in *words {
            assert!(msg.contains(w), "{extra:?}: {msg:?} lacks {w:?}");
        }
    }
    // Two kinds of store, or none.
    let msg = parse(&format!("{GOOD}shared_cache:\n  auth: environment\n"))
        .expect_err("no store")
        .to_string();
    assert!(
        msg.contains("shared_cache") && msg.contains("exactly one"),
        "{msg}"
    );
    // Chunks inside a backend's tree would appear under the mount point.
    let inside =
        "shared_cache:\n  s3: { bucket: archive, region: us-east-1, prefix: imagenet/cache }\n";
    let msg = parse(&format!("{GOOD}{inside}"))
        .expect_err("overlap")
        .to_string();
    assert!(
        msg.contains("s3-archive") && msg.contains("inside backend"),
        "{msg}"
    );
    let beside = "shared_cache:\n  s3: { bucket: archive, region: us-east-1, prefix: chunks }\n";
    assert!(
        parse(&format!("{GOOD}{beside}")).is_ok(),
        "a prefix beside the backend's is fine"
    );
}
