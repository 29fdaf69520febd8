//! An instance-metadata emulator on loopback: Azure IMDS's token endpoint (with its
//! `Metadata: true` check), AWS IMDSv2 (session token, role, role credentials) and GCP's
//! metadata token endpoint. Tokens live for a settable lifetime; the endpoint can be made
//! to fail (HTTP 503) or hang, to test refresh and outages.
//!
//! Azure tokens are JWT-shaped with the claims Azurite's `--oauth basic` checks (audience,
//! issuer, `iat`/`nbf`/`exp`), so Azurite accepts them while valid and rejects them after.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use base64::Engine;
use parking_lot::Mutex;

const TENANT: &str = "72f988bf-0000-4000-8000-2d7cd011db47";
const AWS_ROLE: &str = "warpdrive-test-role";

/// How the endpoint misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    None = 0,
    /// Every request answers 503.
    Unavailable = 1,
    /// Requests get no answer (for a minute).
    Hang = 2,
}

#[derive(Debug, Default)]
struct ImdsState {
    lifetime_secs: AtomicU64,
    /// The next this many Azure tokens are already expired inside (their claims), while the
    /// answer says they live `lifetime`: a token the store rejects.
    stale_tokens: AtomicU64,
    failure: AtomicU8,
    azure_tokens: AtomicU64,
    aws_credentials: AtomicU64,
    gcp_tokens: AtomicU64,
    rejected: AtomicU64,
    last_azure_query: Mutex<Vec<(String, String)>>,
    aws_session: Mutex<String>,
    /// The federated tokens presented to the Azure AD and STS emulations, in order.
    assertions: Mutex<Vec<String>>,
    stopping: AtomicBool,
}

/// A running metadata emulator on 127.0.0.1.
#[derive(Debug)]
pub struct Imds {
    pub port: u16,
    state: Arc<ImdsState>,
    rt: Option<tokio::runtime::Runtime>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A JWT-shaped Azure AD token for Azure Storage with the claims Azurite checks, valid from
/// `nbf` until `exp` (Unix seconds).
fn jwt(subject: &str, nbf: u64, exp: u64) -> String {
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    let claims = serde_json::json!({
        "aud": "https://storage.azure.com",
        "iss": format!("https://sts.windows.net/{TENANT}/"),
        "iat": nbf,
        "nbf": nbf,
        "exp": exp,
        "oid": subject,
        "tid": TENANT,
        "sub": subject,
        "ver": "1.0"
    });
    format!("{}.{}.c2lnbmF0dXJl", b64(&header), b64(&claims))
}

/// An Azure token valid from now for `lifetime` seconds.
pub fn azure_jwt(lifetime: u64, subject: &str) -> String {
    let t = now();
    jwt(subject, t - 5, t + lifetime)
}

/// An Azure token whose claims expired a minute ago.
fn expired_jwt(subject: &str) -> String {
    let t = now();
    jwt(subject, t - 3600, t - 60)
}

async fn gate(s: &ImdsState) -> Option<Response> {
    match s.failure.load(Ordering::Relaxed) {
        1 => Some((StatusCode::SERVICE_UNAVAILABLE, "down for the test").into_response()),
        2 => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Some(StatusCode::GATEWAY_TIMEOUT.into_response())
        }
        _ => None,
    }
}

async fn azure(
    State(s): State<Arc<ImdsState>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = gate(&s).await {
        return r;
    }
    if headers.get("Metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        s.rejected.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": "invalid_request", "error_description": "Required metadata header not specified"})),
        )
            .into_response();
    }
    let resource = q
        .iter()
        .find(|(k, _)| k == "resource")
        .map(|(_, v)| v.clone());
    if resource.as_deref() != Some("https://storage.azure.com") {
        s.rejected.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::BAD_REQUEST,
            "resource must be https://storage.azure.com",
        )
            .into_response();
    }
    let subject = q
        .iter()
        .find(|(k, _)| k == "client_id" || k == "object_id" || k == "msi_res_id")
        .map_or_else(|| "system-assigned".to_string(), |(_, v)| v.clone());
    *s.last_azure_query.lock() = q;
    let life = s.lifetime_secs.load(Ordering::Relaxed);
    s.azure_tokens.fetch_add(1, Ordering::Relaxed);
    let stale = s
        .stale_tokens
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok();
    let token = if stale {
        expired_jwt(&subject)
    } else {
        azure_jwt(life, &subject)
    };
    axum::Json(serde_json::json!({
        "access_token": token,
        "expires_in": life.to_string(),
        "expires_on": (now() + life).to_string(),
        "resource": "https://storage.azure.com",
        "token_type": "Bearer"
    }))
    .into_response()
}

async fn aws_session(State(s): State<Arc<ImdsState>>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&s).await {
        return r;
    }
    if headers
        .get("X-aws-ec2-metadata-token-ttl-seconds")
        .is_none()
    {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let token = format!("imds-session-{}", now());
    *s.aws_session.lock() = token.clone();
    token.into_response()
}

fn aws_authorised(s: &ImdsState, headers: &HeaderMap) -> bool {
    let t = headers
        .get("X-aws-ec2-metadata-token")
        .and_then(|v| v.to_str().ok());
    t.is_some() && t == Some(s.aws_session.lock().as_str())
}

async fn aws_roles(State(s): State<Arc<ImdsState>>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&s).await {
        return r;
    }
    if !aws_authorised(&s, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    AWS_ROLE.into_response()
}

async fn aws_role(State(s): State<Arc<ImdsState>>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&s).await {
        return r;
    }
    if !aws_authorised(&s, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let life = s.lifetime_secs.load(Ordering::Relaxed);
    let n = s.aws_credentials.fetch_add(1, Ordering::Relaxed);
    let exp = SystemTime::now() + Duration::from_secs(life);
    axum::Json(serde_json::json!({
        "Code": "Success",
        "Type": "AWS-HMAC",
        "AccessKeyId": format!("ASIATESTKEY{n:08}"),
        "SecretAccessKey": format!("test-secret-{n}"),
        "Token": format!("test-session-token-{n}"),
        "Expiration": humantime::format_rfc3339_seconds(exp).to_string(),
    }))
    .into_response()
}

async fn gcp(State(s): State<Arc<ImdsState>>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&s).await {
        return r;
    }
    if headers.get("Metadata-Flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        s.rejected.fetch_add(1, Ordering::Relaxed);
        return StatusCode::FORBIDDEN.into_response();
    }
    let life = s.lifetime_secs.load(Ordering::Relaxed);
    let n = s.gcp_tokens.fetch_add(1, Ordering::Relaxed);
    bearer(format!("ya29.test-token-{n}"), life)
}

/// A form field's value.
fn field(f: &[(String, String)], k: &str) -> Option<String> {
    f.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

/// An OAuth token answer.
fn bearer(token: String, life: u64) -> Response {
    axum::Json(serde_json::json!({
        "access_token": token,
        "expires_in": life,
        "token_type": "Bearer"
    }))
    .into_response()
}

impl ImdsState {
    /// Records an accepted assertion (federated token, web identity, subject token) and
    /// returns the lifetime of what it is exchanged for.
    fn accept(&self, assertion: String) -> u64 {
        self.assertions.lock().push(assertion);
        self.lifetime_secs.load(Ordering::Relaxed)
    }
}

/// Counts a refused request and answers 400.
fn refuse(s: &ImdsState) -> Response {
    s.rejected.fetch_add(1, Ordering::Relaxed);
    (StatusCode::BAD_REQUEST, "invalid_request").into_response()
}

/// Azure AD's token endpoint for workload identity: a federated client assertion in, an
/// access token out.
async fn azure_ad(
    State(s): State<Arc<ImdsState>>,
    axum::Form(f): axum::Form<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = gate(&s).await {
        return r;
    }
    let get = |k: &str| field(&f, k);
    let ok = get("grant_type").as_deref() == Some("client_credentials")
        && get("client_assertion_type").as_deref()
            == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        && get("scope").as_deref() == Some("https://storage.azure.com/.default");
    let (Some(assertion), Some(client), true) = (get("client_assertion"), get("client_id"), ok)
    else {
        return refuse(&s);
    };
    let life = s.accept(assertion);
    s.azure_tokens.fetch_add(1, Ordering::Relaxed);
    bearer(azure_jwt(life, &client), life)
}

/// STS `AssumeRoleWithWebIdentity`: a web identity token in, temporary credentials out.
async fn sts(
    State(s): State<Arc<ImdsState>>,
    axum::Form(f): axum::Form<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = gate(&s).await {
        return r;
    }
    let get = |k: &str| field(&f, k);
    let (Some("AssumeRoleWithWebIdentity"), Some(_role), Some(token)) = (
        get("Action").as_deref(),
        get("RoleArn"),
        get("WebIdentityToken"),
    ) else {
        s.rejected.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::BAD_REQUEST,
            "<ErrorResponse><Error><Code>InvalidParameterValue</Code></Error></ErrorResponse>",
        )
            .into_response();
    };
    let life = s.accept(token);
    let n = s.aws_credentials.fetch_add(1, Ordering::Relaxed);
    let exp = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(life));
    format!(
        "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>\
         <AccessKeyId>ASIATESTKEY{n:08}</AccessKeyId><SecretAccessKey>test-secret-{n}</SecretAccessKey>\
         <SessionToken>test-session-token-{n}</SessionToken><Expiration>{exp}</Expiration>\
         </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
    )
    .into_response()
}

/// Google's STS token exchange (workload identity federation): a subject token in, an
/// access token out.
async fn google_sts(
    State(s): State<Arc<ImdsState>>,
    axum::Form(f): axum::Form<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = gate(&s).await {
        return r;
    }
    let get = |k: &str| field(&f, k);
    let ok = get("grant_type").as_deref()
        == Some("urn:ietf:params:oauth:grant-type:token-exchange")
        && get("audience").is_some()
        && get("subject_token_type").is_some();
    let Some(subject) = get("subject_token").filter(|_| ok) else {
        return refuse(&s);
    };
    let life = s.accept(subject);
    let n = s.gcp_tokens.fetch_add(1, Ordering::Relaxed);
    bearer(format!("ya29.test-token-{n}"), life)
}

impl Imds {
    /// Starts the emulator on a free loopback port; tokens live `lifetime`.
    pub fn start(lifetime: Duration) -> Result<Imds> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("IMDS emulator runtime")?;
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .context("binding the IMDS emulator")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(ImdsState::default());
        state
            .lifetime_secs
            .store(lifetime.as_secs(), Ordering::Relaxed);
        let app = Router::new()
            .route("/metadata/identity/oauth2/token", get(azure))
            .route("/latest/api/token", put(aws_session))
            .route(
                "/latest/meta-data/iam/security-credentials/",
                get(aws_roles),
            )
            .route(
                &format!("/latest/meta-data/iam/security-credentials/{AWS_ROLE}"),
                get(aws_role),
            )
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/token",
                get(gcp),
            )
            .route("/{tenant}/oauth2/v2.0/token", axum::routing::post(azure_ad))
            .route("/sts", axum::routing::post(sts))
            .route("/v1/token", axum::routing::post(google_sts))
            .with_state(state.clone());
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Imds {
            port,
            state,
            rt: Some(rt),
        })
    }

    /// The base URL (for AWS and GCP `auth.endpoint`).
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Azure's token URL (for Azure `auth.endpoint`).
    pub fn azure_endpoint(&self) -> String {
        format!("{}/metadata/identity/oauth2/token", self.base())
    }

    pub fn set_lifetime(&self, d: Duration) {
        self.state
            .lifetime_secs
            .store(d.as_secs(), Ordering::Relaxed);
    }

    /// The next `n` Azure tokens are ones the store rejects (expired inside, though the
    /// answer says otherwise).
    pub fn issue_stale_tokens(&self, n: u64) {
        self.state.stale_tokens.store(n, Ordering::Relaxed);
    }

    pub fn set_failure(&self, f: Failure) {
        self.state.failure.store(f as u8, Ordering::Relaxed);
    }

    /// Tokens (Azure, GCP) and credentials (AWS) handed out so far.
    pub fn issued(&self) -> u64 {
        self.state.azure_tokens.load(Ordering::Relaxed)
            + self.state.aws_credentials.load(Ordering::Relaxed)
            + self.state.gcp_tokens.load(Ordering::Relaxed)
    }

    /// Requests refused for a missing header or a wrong resource.
    pub fn rejected(&self) -> u64 {
        self.state.rejected.load(Ordering::Relaxed)
    }

    /// Azure AD's token URL for workload identity (tenant `t`).
    pub fn azure_ad_endpoint(&self) -> String {
        format!("{}/{TENANT}/oauth2/v2.0/token", self.base())
    }

    /// The STS endpoint for AWS web identity.
    pub fn sts_endpoint(&self) -> String {
        format!("{}/sts", self.base())
    }

    /// Google's STS token URL for workload identity federation.
    pub fn google_sts_endpoint(&self) -> String {
        format!("{}/v1/token", self.base())
    }

    /// The federated tokens presented so far (workload identity), oldest first.
    pub fn assertions(&self) -> Vec<String> {
        self.state.assertions.lock().clone()
    }

    /// The query of the last Azure token request (which identity was asked for).
    pub fn last_azure_query(&self) -> Vec<(String, String)> {
        self.state.last_azure_query.lock().clone()
    }
}

impl Drop for Imds {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::Relaxed);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost, as PEM files in a temporary
/// directory (for emulators served over HTTPS; the client trusts `ca`).
#[derive(Debug)]
pub struct Tls {
    pub dir: tempfile::TempDir,
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl Tls {
    pub fn generate() -> Result<Tls> {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "WarpDrive test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let leaf_key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()])?;
        leaf.subject_alt_names
            .push(rcgen::SanType::IpAddress(std::net::IpAddr::from([
                127, 0, 0, 1,
            ])));
        let cert = leaf.signed_by(&leaf_key, &ca)?;
        let dir = tempfile::Builder::new().prefix("wd-tls-").tempdir()?;
        let (ca_path, cert_path, key_path) = (
            dir.path().join("ca.pem"),
            dir.path().join("cert.pem"),
            dir.path().join("key.pem"),
        );
        std::fs::write(&ca_path, ca.pem())?;
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, leaf_key.serialize_pem())?;
        Ok(Tls {
            dir,
            ca: ca_path,
            cert: cert_path,
            key: key_path,
        })
    }

    /// One self-signed certificate that is a CA (`basicConstraints CA:TRUE`) and the
    /// server's certificate at once, as `openssl req -x509` makes it by default (and as
    /// Azurite's docs suggest): `ca` and `cert` are the same file.
    pub fn ca_as_server() -> Result<Tls> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(std::net::IpAddr::from([
                127, 0, 0, 1,
            ])));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key)?;
        let dir = tempfile::Builder::new().prefix("wd-tls-").tempdir()?;
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        Ok(Tls {
            dir,
            ca: cert_path.clone(),
            cert: cert_path,
            key: key_path,
        })
    }
}
