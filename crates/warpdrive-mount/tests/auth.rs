//! Identity without secrets: `auth: managed_identity` against Azurite over HTTPS with
//! `--oauth basic`, tokens from the test kit's IMDS emulator: refresh before expiry, outages
//! of the identity endpoint, and no key anywhere.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{Mount, ctl, runtime, sha256};
use warpdrive_config::{AuthMode, BackendConfig, BackendKind, IdentityConfig};
use warpdrive_testkit::{
    AZURITE_ACCOUNT, Emulator, Failure, Imds, Kind, Tls, random_bytes, upload_many,
};

const MIB: usize = 1 << 20;
/// Azurite's published development key: it must appear in no config of these tests.
const AZURITE_KEY_START: &str = "Eby8vdM02xNOcqFl";

struct Setup {
    _az: Emulator,
    _tls: Tls,
    imds: Imds,
    backend: BackendConfig,
    objects: Vec<(String, Vec<u8>)>,
}

/// Azurite seeded over HTTP, then serving HTTPS with OAuth; an IMDS emulator with tokens
/// of `lifetime`.
fn setup(n: usize, size: usize, lifetime: Duration) -> Setup {
    let tls = Tls::generate().expect("certificates");
    let mut az = Emulator::start(Kind::Azurite).expect("azurite");
    az.create_bucket("data").expect("container");
    let objects: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            (
                format!("d/obj-{i:02}.bin"),
                random_bytes(size, 900 + i as u64),
            )
        })
        .collect();
    runtime()
        .block_on(upload_many(
            &az.backend("seed", "data", ""),
            objects.clone(),
            8,
        ))
        .expect("upload");
    az.restart_tls_oauth(&tls).expect("https");
    let imds = Imds::start(lifetime).expect("imds");
    let backend = BackendConfig {
        name: "az".into(),
        kind: BackendKind::Azure {
            account: AZURITE_ACCOUNT.into(),
            container: "data".into(),
            endpoint: Some(az.endpoint()),
        },
        prefix: String::new(),
        auth: AuthMode::ManagedIdentity,
        identity: IdentityConfig {
            client_id: Some("11111111-2222-3333-4444-555555555555".into()),
            endpoint: Some(imds.azure_endpoint()),
            ..Default::default()
        },
        ca_file: Some(tls.ca.clone()),
        write: Default::default(),
        retry: Default::default(),
    };
    Setup {
        _az: az,
        _tls: tls,
        imds,
        backend,
        objects,
    }
}

fn read(m: &Mount, key: &str) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    std::fs::File::open(m.path(&format!("az/{key}")))?.read_to_end(&mut v)?;
    Ok(v)
}

fn metric(m: &Mount, name: &str) -> f64 {
    let text = m.metrics_text();
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{backend=\"az\"}}")))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} for az in:\n{text}"))
}

#[test]
fn managed_identity_reads_azurite_over_https_with_no_key() {
    let s = setup(3, MIB + 17, Duration::from_secs(3600));
    let m = Mount::start(std::slice::from_ref(&s.backend), "");
    let config = std::fs::read_to_string(&m.config).expect("config");
    assert!(!config.contains(AZURITE_KEY_START), "{config}");
    assert!(config.contains("managed_identity"), "{config}");
    for (k, d) in &s.objects {
        let got = read(&m, k).unwrap_or_else(|e| panic!("read {k}: {e}\n{}", m.log()));
        assert_eq!(sha256(&got), sha256(d), "{k}");
    }
    assert!(s.imds.issued() >= 1);
    assert_eq!(s.imds.rejected(), 0, "the Metadata header was sent");
    let q = s.imds.last_azure_query();
    assert!(
        q.iter()
            .any(|(k, v)| k == "client_id" && v.starts_with("11111111")),
        "the user-assigned identity was asked for: {q:?}"
    );
    assert!(metric(&m, "warpdrive_auth_refreshes_total") >= 1.0);
    assert!(metric(&m, "warpdrive_auth_token_expiry_seconds") > 3000.0);
    let st: serde_json::Value =
        serde_json::from_str(&ctl(&m, &["status", "--json"])).expect("json");
    let auth = &st["daemon"]["backends"][0]["auth"];
    assert_eq!(auth["mode"], "managed_identity", "{st}");
    assert!(
        auth["identity"].as_str().unwrap_or("").contains("11111111"),
        "{st}"
    );
    assert!(
        auth["expires_in_seconds"].as_i64().unwrap_or(0) > 3000,
        "{st}"
    );
    let text = ctl(&m, &["status"]);
    assert!(text.contains("token valid"), "{text}");
    // The metrics dashboard's auth section shows the refresh and the token's lifetime.
    let dash = ctl(&m, &["metrics"]);
    let line = dash
        .lines()
        .find(|l| l.trim_start().starts_with("az ") && l.contains("refreshes"))
        .unwrap_or_else(|| panic!("no auth line for az:\n{dash}"));
    assert!(
        line.contains("refreshes 1,") || line.contains("refreshes 1 "),
        "{line}"
    );
    assert!(!line.contains("no token"), "{line}");
    // No token, no secret in the log or in what ctl prints.
    for out in [m.log(), text, st.to_string()] {
        assert!(!out.contains("eyJ"), "a JWT leaked: {out}");
    }
}

/// 4 s tokens, refreshed about every 2 s, during 30 s of reads that keep reaching the store
/// (the same coverage as minutes of 15 s tokens: at least eight refreshes under load).
#[test]
fn short_lived_tokens_refresh_while_reads_go_on() {
    const LOOP: Duration = Duration::from_secs(30);
    let s = setup(12, MIB, Duration::from_secs(4));
    // A cache smaller than the data: reads keep going to the store.
    let m = Mount::start_with_cache(
        std::slice::from_ref(&s.backend),
        "metadata_ttl: 1s\nfuse: { passthrough: off }\n",
        "max_size: 4MiB, min_free: 0",
    );
    let started = Instant::now();
    let (mut reads, mut failures, mut slowest) = (0u64, 0u64, Duration::ZERO);
    let mut i = 0;
    while started.elapsed() < LOOP {
        let (k, d) = &s.objects[i % s.objects.len()];
        i += 1;
        let t = Instant::now();
        match read(&m, k) {
            Ok(got) if sha256(&got) == sha256(d) => {}
            Ok(_) => panic!("{k}: wrong bytes"),
            Err(e) => {
                eprintln!("read {k} failed: {e}");
                failures += 1;
            }
        }
        slowest = slowest.max(t.elapsed());
        reads += 1;
        if i % s.objects.len() == 0 {
            common::drop_page_cache();
        }
    }
    let refreshes = metric(&m, "warpdrive_auth_refreshes_total");
    eprintln!(
        "{reads} reads in {LOOP:?}, slowest {slowest:?}, {refreshes} refreshes, {} tokens issued",
        s.imds.issued()
    );
    assert_eq!(failures, 0, "no read failed\n{}", m.log());
    assert!(
        refreshes >= 8.0,
        "a 4 s token refreshed about every 2 s: {refreshes}"
    );
    assert_eq!(metric(&m, "warpdrive_auth_refresh_failures_total"), 0.0);
    assert!(
        slowest < warpdrive_store::auth::FETCH_TIMEOUT,
        "no read waited for a refresh: slowest {slowest:?}"
    );
}

#[test]
fn identity_endpoint_outages() {
    let s = setup(16, MIB / 4, Duration::from_secs(40));
    let m = Mount::start_with_cache(
        std::slice::from_ref(&s.backend),
        "metadata_ttl: 1s\nfuse: { passthrough: off }\n",
        "max_size: 1GiB",
    );
    let evict_all = |m: &Mount| {
        ctl(m, &["evict", "--all"]);
        common::drop_page_cache();
    };
    let read_all = |m: &Mount| -> Vec<std::io::Result<()>> {
        s.objects
            .iter()
            .map(|(k, d)| read(m, k).map(|got| assert_eq!(sha256(&got), sha256(d), "{k}")))
            .collect()
    };
    assert!(read_all(&m).iter().all(|r| r.is_ok()), "{}", m.log());

    // Down for 30 s while the 40 s token is valid: reads go on.
    s.imds.set_failure(Failure::Unavailable);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        evict_all(&m);
        let r = read_all(&m);
        assert!(
            r.iter().all(|r| r.is_ok()),
            "a read failed while the token was valid: {r:?}\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(
        metric(&m, "warpdrive_auth_refresh_failures_total") >= 1.0,
        "the refresher tried"
    );
    s.imds.set_failure(Failure::None);
    std::thread::sleep(Duration::from_secs(4));

    // Short tokens, then down past expiry: reads fail with EIO, quickly, and recover.
    s.imds.set_lifetime(Duration::from_secs(8));
    let issued = s.imds.issued();
    while s.imds.issued() == issued {
        std::thread::sleep(Duration::from_millis(200));
    }
    // The 40 s token is still being used until the refresher swaps it; wait for the 8 s one.
    std::thread::sleep(Duration::from_secs(1));
    for failure in [Failure::Unavailable, Failure::Hang] {
        s.imds.set_failure(failure);
        std::thread::sleep(Duration::from_secs(10));
        evict_all(&m);
        let t = Instant::now();
        let r = read(&m, &s.objects[0].0);
        let took = t.elapsed();
        let e = r.expect_err("a read after the token expired fails");
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
        assert!(
            took < Duration::from_secs(20),
            "{failure:?}: failed after {took:?}"
        );
        s.imds.set_failure(Failure::None);
        let t = Instant::now();
        loop {
            if read_all(&m).iter().all(|r| r.is_ok()) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "did not recover\n{}",
                m.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let log = m.log();
    assert!(log.contains("cannot refresh the token"), "{log}");
    assert!(log.contains("token has expired"), "{log}");
}

#[test]
fn aws_and_gcp_instance_identities_sign_with_metadata_credentials() {
    let imds = Imds::start(Duration::from_secs(900)).expect("imds");
    let s3 = Emulator::start(Kind::Moto).expect("moto");
    s3.create_bucket("idb").expect("bucket");
    let gcs = Emulator::start(Kind::Gcs).expect("fake-gcs");
    gcs.create_bucket("idg").expect("bucket");
    let data = random_bytes(MIB + 3, 77);
    let mut backends = Vec::new();
    for (em, name, bucket) in [(&s3, "s3", "idb"), (&gcs, "gcs", "idg")] {
        let seed = em.backend("seed", bucket, "");
        runtime()
            .block_on(upload_many(
                &seed,
                vec![("x/a.bin".into(), data.clone())],
                1,
            ))
            .expect("upload");
        let mut b = em.backend(name, bucket, "");
        b.auth = AuthMode::ManagedIdentity;
        b.identity.endpoint = Some(imds.base());
        backends.push(b);
    }
    let m = Mount::start(&backends, "");
    for name in ["s3", "gcs"] {
        let before = imds.issued();
        let got = std::fs::read(m.path(&format!("{name}/x/a.bin")))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", m.log()));
        assert_eq!(sha256(&got), sha256(&data), "{name}");
        assert!(imds.issued() >= before, "{name}");
    }
    assert!(
        imds.issued() >= 2,
        "one credential per backend: {}",
        imds.issued()
    );
    assert_eq!(
        imds.rejected(),
        0,
        "IMDSv2 session token and Metadata-Flavor sent"
    );
    let st: serde_json::Value =
        serde_json::from_str(&ctl(&m, &["status", "--json"])).expect("json");
    for b in st["daemon"]["backends"].as_array().expect("backends") {
        assert_eq!(b["auth"]["mode"], "managed_identity", "{st}");
        assert!(
            b["auth"]["expires_in_seconds"].as_i64().unwrap_or(0) > 800,
            "{st}"
        );
    }
    let log = m.log();
    assert!(
        !log.contains("test-secret-") && !log.contains("test-session-token"),
        "{log}"
    );
}

#[test]
fn workload_identity_uses_the_rotated_federated_token() {
    let imds = Imds::start(Duration::from_secs(6)).expect("imds");
    let s3 = Emulator::start(Kind::Moto).expect("moto");
    s3.create_bucket("wid-bucket").expect("bucket");
    let data = random_bytes(MIB / 2, 78);
    runtime()
        .block_on(upload_many(
            &s3.backend("seed", "wid-bucket", ""),
            vec![("a.bin".into(), data.clone())],
            1,
        ))
        .expect("upload");
    let dir = tempfile::tempdir().expect("tmp");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "federated-token-one").expect("token");
    let mut b = s3.backend("s3", "wid-bucket", "");
    b.auth = AuthMode::WorkloadIdentity;
    b.identity = IdentityConfig {
        endpoint: Some(imds.sts_endpoint()),
        role_arn: Some("arn:aws:iam::123456789012:role/warpdrive".into()),
        token_file: Some(token_file.clone()),
        ..Default::default()
    };
    let m = Mount::start_with_cache(
        std::slice::from_ref(&b),
        "metadata_ttl: 1s\n",
        "max_size: 1GiB",
    );
    assert_eq!(
        sha256(&std::fs::read(m.path("s3/a.bin")).expect("read")),
        sha256(&data)
    );
    assert_eq!(
        imds.assertions().first().map(String::as_str),
        Some("federated-token-one")
    );
    // The platform rotates the file; the next refresh (a 6 s token) presents the new one.
    std::fs::write(&token_file, "federated-token-two").expect("rotate");
    let t0 = Instant::now();
    while !imds.assertions().iter().any(|a| a == "federated-token-two") {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the rotated token was never used"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::read_dir(m.path("s3"))
        .expect("list")
        .for_each(drop);
    let st: serde_json::Value =
        serde_json::from_str(&ctl(&m, &["status", "--json"])).expect("json");
    let auth = &st["daemon"]["backends"][0]["auth"];
    assert_eq!(auth["mode"], "workload_identity", "{st}");
    assert!(
        auth["identity"].as_str().unwrap_or("").contains("role"),
        "{st}"
    );
    assert!(
        !m.log().contains("federated-token-"),
        "the federated token is never logged"
    );
}

#[test]
fn azure_workload_identity_exchanges_the_federated_token() {
    let mut s = setup(2, MIB, Duration::from_secs(3600));
    let dir = tempfile::tempdir().expect("tmp");
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "aks-federated-token").expect("token");
    s.backend.auth = AuthMode::WorkloadIdentity;
    s.backend.identity = IdentityConfig {
        client_id: Some("aks-app-client".into()),
        endpoint: Some(s.imds.azure_ad_endpoint()),
        token_file: Some(token_file),
        ..Default::default()
    };
    let m = Mount::start(std::slice::from_ref(&s.backend), "");
    for (k, d) in &s.objects {
        let got = read(&m, k).unwrap_or_else(|e| panic!("read {k}: {e}\n{}", m.log()));
        assert_eq!(sha256(&got), sha256(d), "{k}");
    }
    assert_eq!(s.imds.assertions(), vec!["aks-federated-token".to_string()]);
    assert_eq!(s.imds.rejected(), 0);
}

#[test]
fn a_rejected_token_is_refreshed_once_and_the_request_retried() {
    let s = setup(2, MIB, Duration::from_secs(3600));
    // The first token handed out is one Azurite rejects as expired.
    s.imds.issue_stale_tokens(1);
    let m = Mount::start(std::slice::from_ref(&s.backend), "");
    for (k, d) in &s.objects {
        let got = read(&m, k).unwrap_or_else(|e| panic!("read {k}: {e}\n{}", m.log()));
        assert_eq!(sha256(&got), sha256(d), "{k}");
    }
    assert_eq!(s.imds.issued(), 2, "one forced refresh");
    assert!(
        m.log()
            .contains("the store rejected the token; refreshing it once"),
        "{}",
        m.log()
    );
    // A store that keeps rejecting gets EACCES, not a loop of refreshes.
    s.imds.issue_stale_tokens(u64::MAX);
    ctl(&m, &["evict", "--all"]);
    common::drop_page_cache();
    std::thread::sleep(Duration::from_millis(1100));
    let issued = s.imds.issued();
    let forced = read(&m, "d/obj-00.bin");
    // The valid token is still cached: reading works without asking for a new one.
    assert!(forced.is_ok(), "{forced:?}");
    assert_eq!(s.imds.issued(), issued);
}

#[test]
fn a_shared_key_comes_from_a_private_file_and_is_never_printed() {
    use std::os::unix::fs::PermissionsExt;
    let az = Emulator::start(Kind::Azurite).expect("azurite");
    az.create_bucket("keyed").expect("container");
    let data = random_bytes(MIB, 31);
    let mut b = az.backend("az", "keyed", "");
    runtime()
        .block_on(upload_many(&b, vec![("k.bin".into(), data.clone())], 1))
        .expect("upload");
    let dir = tempfile::tempdir().expect("tmp");
    let key_file = dir.path().join("azure.key");
    // Azurite's account key, used here as a user's own shared key.
    std::fs::write(
        &key_file,
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==\n",
    )
    .expect("key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    b.auth = AuthMode::SharedKey;
    b.identity = IdentityConfig {
        secret_file: Some(key_file.clone()),
        ..Default::default()
    };
    // A key file others can read is refused, naming the fix.
    let m = Mount::prepare(std::slice::from_ref(&b), "", "max_size: 1GiB");
    let (code, err) = common::refused_start(&m.config, "a readable key file");
    // regression: this exited 1 with two lines; it is a config problem like any other.
    assert_eq!(code, Some(2), "{err}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("warpdrive-mount:"))
        .collect();
    assert_eq!(errors.len(), 1, "one sentence: {err}");
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!err.contains(AZURITE_KEY_START), "{err}");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let m = Mount::start(std::slice::from_ref(&b), "");
    let got = std::fs::read(m.path("az/k.bin")).unwrap_or_else(|e| panic!("{e}\n{}", m.log()));
    assert_eq!(sha256(&got), sha256(&data));
    let config = std::fs::read_to_string(&m.config).expect("config");
    assert!(!config.contains(AZURITE_KEY_START), "{config}");
    let check = std::process::Command::new(common::BIN)
        .arg("--config")
        .arg(&m.config)
        .arg("--check-config")
        .output()
        .expect("check-config");
    let status = ctl(&m, &["status"]);
    for out in [
        String::from_utf8_lossy(&check.stdout).into_owned(),
        status.clone(),
        m.log(),
        m.metrics_text(),
    ] {
        assert!(!out.contains(AZURITE_KEY_START), "the key leaked: {out}");
    }
    assert!(status.contains("shared key from secret_file"), "{status}");
}

#[test]
fn gcp_workload_identity_federation_from_application_default_credentials() {
    let imds = Imds::start(Duration::from_secs(600)).expect("imds");
    let gcs = Emulator::start(Kind::Gcs).expect("fake-gcs");
    gcs.create_bucket("wif").expect("bucket");
    let data = random_bytes(MIB, 55);
    runtime()
        .block_on(upload_many(
            &gcs.backend("seed", "wif", ""),
            vec![("f.bin".into(), data.clone())],
            1,
        ))
        .expect("upload");
    let dir = tempfile::tempdir().expect("tmp");
    let subject = dir.path().join("oidc-token");
    std::fs::write(&subject, "k8s-service-account-token").expect("subject");
    let adc = dir.path().join("adc.json");
    std::fs::write(
        &adc,
        serde_json::json!({
            "type": "external_account",
            "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": imds.google_sts_endpoint(),
            "credential_source": { "file": subject }
        })
        .to_string(),
    )
    .expect("adc");
    let mut b = gcs.backend("gcs", "wif", "");
    b.auth = AuthMode::WorkloadIdentity;
    b.identity = IdentityConfig {
        token_file: Some(adc),
        ..Default::default()
    };
    let m = Mount::start(std::slice::from_ref(&b), "");
    let got = std::fs::read(m.path("gcs/f.bin")).unwrap_or_else(|e| panic!("{e}\n{}", m.log()));
    assert_eq!(sha256(&got), sha256(&data));
    assert_eq!(
        imds.assertions(),
        vec!["k8s-service-account-token".to_string()]
    );
    let st: serde_json::Value =
        serde_json::from_str(&ctl(&m, &["status", "--json"])).expect("json");
    let auth = &st["daemon"]["backends"][0]["auth"];
    assert!(
        auth["identity"]
            .as_str()
            .unwrap_or("")
            .contains("federation"),
        "{st}"
    );
    assert!(
        auth["expires_in_seconds"].as_i64().unwrap_or(0) > 500,
        "{st}"
    );
}

/// A self-signed certificate made as `openssl req -x509` makes it (a CA certificate used as
/// the server's own), given as `ca_file`, was refused with only "backend unreachable" in the
/// log. TLS clients outside OpenSSL refuse a CA certificate as a server's; the log now says
/// exactly that and how to make a certificate that works.
#[test]
fn regression_a_ca_certificate_used_as_the_servers_was_refused_without_a_reason() {
    let tls = Tls::ca_as_server().expect("certificate");
    let mut az = Emulator::start(Kind::Azurite).expect("azurite");
    az.create_bucket("data").expect("container");
    az.restart_tls_oauth(&tls).expect("https");
    let backend = BackendConfig {
        name: "az".into(),
        kind: BackendKind::Azure {
            account: AZURITE_ACCOUNT.into(),
            container: "data".into(),
            endpoint: Some(az.endpoint()),
        },
        prefix: String::new(),
        auth: AuthMode::Emulator,
        identity: IdentityConfig::default(),
        ca_file: Some(tls.ca.clone()),
        write: Default::default(),
        retry: Default::default(),
    };
    let m = Mount::start(std::slice::from_ref(&backend), "");
    let t0 = std::time::Instant::now();
    assert!(
        std::fs::read_dir(m.path("az"))
            .and_then(|mut d| d.next().transpose())
            .is_err(),
        "the listing should fail"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "a refused certificate is not retried: {:?}",
        t0.elapsed()
    );
    let log = m.log();
    assert!(
        log.contains("is a CA certificate (basicConstraints CA:TRUE) used as the server's own"),
        "{log}"
    );
    assert!(log.contains("basicConstraints=critical,CA:FALSE"), "{log}");
    drop(m);

    // The advice, followed to the letter, works.
    let advice = log
        .split('`')
        .find(|s| s.starts_with("openssl req -x509 -newkey"))
        .expect("the advised command");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(advice)
        .current_dir(dir.path())
        .output()
        .expect("openssl (make deps installs it)");
    assert!(out.status.success(), "{advice}: {out:?}");
    let fixed = Tls {
        ca: dir.path().join("cert.pem"),
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
        dir,
    };
    az.restart_tls_oauth(&fixed)
        .expect("https with the advised certificate");
    let backend = BackendConfig {
        ca_file: Some(fixed.ca.clone()),
        ..backend
    };
    let m = Mount::start(std::slice::from_ref(&backend), "");
    for entry in std::fs::read_dir(m.path("az")).unwrap_or_else(|e| panic!("ls: {e}\n{}", m.log()))
    {
        entry.unwrap_or_else(|e| panic!("ls: {e}\n{}", m.log()));
    }
}
