//! Identity-based credentials (`auth: managed_identity`): tokens from the machine's identity
//! endpoint, refreshed before they expire.
//!
//! One [`Credentials`] per backend holds the current token and a refresher task:
//!
//! * **Proactive refresh.** A token is refreshed when less than a margin of its life is left
//!   (half its lifetime, at most five minutes): requests never wait for a refresh while the
//!   current token is valid.
//! * **Outages.** While the identity endpoint is down the current token keeps being used and
//!   the refresher retries every few seconds. Once the token has expired, a request asks the
//!   endpoint itself for at most [`FETCH_TIMEOUT`] and then fails (the reader gets `EIO`): never
//!   a hang. One log line when the endpoint starts failing, one when the token expires, one
//!   when it recovers.
//! * **Rejected tokens.** A request the store rejects as unauthorized forces one refresh and
//!   is retried once ([`crate::Backend`]).
//!
//! Sources: Azure IMDS (`/metadata/identity/oauth2/token`, system- or user-assigned), AWS
//! IMDSv2 (session token, then the instance role's credentials), GCP's metadata server.
//! Tokens and keys are never logged: [`Secret`]'s `Debug` is redacted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use object_store::aws::AwsCredential;
use object_store::azure::AzureCredential;
use object_store::gcp::GcpCredential;
use parking_lot::Mutex;
use serde::Deserialize;
use warpdrive_config::{BackendConfig, BackendKind, IdentityConfig};
use warpdrive_metrics::BackendMetrics;

/// How long one request to the identity endpoint may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Refresh when less than this share of a token's life is left...
const MARGIN_SHARE: f64 = 0.5;
/// ...or at most this long before it expires.
const MAX_MARGIN: Duration = Duration::from_secs(300);
/// Between failed refreshes.
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// The refresher's tick (it also updates the expiry gauge).
const TICK: Duration = Duration::from_millis(500);

const AZURE_IMDS: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
const AZURE_RESOURCE: &str = "https://storage.azure.com";
const AWS_IMDS: &str = "http://169.254.169.254";
const GCP_METADATA: &str = "http://metadata.google.internal";

/// A credential. Its `Debug` never shows the secret.
#[derive(Clone)]
pub enum Secret {
    Bearer(String),
    Aws {
        key_id: String,
        secret_key: String,
        token: Option<String>,
    },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secret::Bearer(_) => "Bearer(<redacted>)",
            Secret::Aws { .. } => "Aws(<redacted>)",
        })
    }
}

/// Where tokens come from.
#[derive(Debug, Clone)]
enum Source {
    AzureImds {
        url: String,
        /// `client_id=…`, `object_id=…` or `msi_res_id=…`, if user-assigned.
        identity: Option<(&'static str, String)>,
    },
    AwsImds {
        base: String,
    },
    GcpMetadata {
        base: String,
    },
    /// Azure workload identity (AKS): the federated token exchanged at Azure AD.
    AzureFederated {
        token_url: String,
        client_id: String,
        token_file: PathBuf,
    },
    /// GCP workload identity federation: a subject token file exchanged at Google's STS.
    GcpExternal {
        token_url: String,
        audience: String,
        subject_token_type: String,
        token_file: PathBuf,
    },
    /// AWS web identity (EKS): the federated token exchanged at STS.
    AwsWebIdentity {
        sts_url: String,
        role_arn: String,
        session: String,
        token_file: PathBuf,
    },
}

/// Why a credential could not be had. `Clone`: the last failure is kept, and handed to every
/// caller that asks within the retry pause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The identity settings cannot work (a missing setting, an unreadable or empty token
    /// file, a credentials file of another kind): the config or the environment must change.
    #[error("{0}")]
    Config(String),
    /// The identity endpoint or token service answered with a failure status.
    #[error("{who} answered {status}{}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Refused {
        who: String,
        status: u16,
        /// The service's error code, when it gives one (AWS STS).
        code: Option<String>,
    },
    /// The identity endpoint could not be reached, or did not answer within the fetch timeout.
    #[error("{0}")]
    Unreachable(String),
    /// The answer could not be read as a credential.
    #[error("{0}")]
    BadAnswer(String),
    /// No valid credential: the last one expired and refreshing it fails.
    #[error("{backend}: no valid token: {cause}")]
    NoToken {
        backend: String,
        cause: Box<AuthError>,
    },
}

fn refused(who: &str, status: reqwest::StatusCode) -> AuthError {
    AuthError::Refused {
        who: who.to_string(),
        status: status.as_u16(),
        code: None,
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Reads a federated token file (again at every refresh: the platform rotates it).
fn read_token_file(path: &std::path::Path) -> Result<String, AuthError> {
    let t = std::fs::read_to_string(path)
        .map_err(|e| AuthError::Config(format!("federated token file {}: {e}", path.display())))?;
    let t = t.trim().to_string();
    if t.is_empty() {
        return Err(AuthError::Config(format!(
            "federated token file {} is empty",
            path.display()
        )));
    }
    Ok(t)
}

/// Reads an application-default-credentials file of type `external_account` (GCP workload
/// identity federation with a file credential source).
fn external_account(path: &std::path::Path) -> Result<(Source, String), AuthError> {
    #[derive(Deserialize)]
    struct CredentialSource {
        file: Option<PathBuf>,
    }
    #[derive(Deserialize)]
    struct External {
        #[serde(rename = "type")]
        kind: String,
        audience: String,
        subject_token_type: String,
        token_url: String,
        credential_source: CredentialSource,
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| AuthError::Config(format!("credentials file {}: {e}", path.display())))?;
    let x: External = serde_json::from_str(&text).map_err(|e| {
        AuthError::Config(format!(
            "credentials file {}: not an external_account file ({e})",
            path.display()
        ))
    })?;
    if x.kind != "external_account" {
        return Err(AuthError::Config(format!(
            "credentials file {} is of type {}; workload identity needs external_account (use `environment` for other kinds)",
            path.display(),
            x.kind
        )));
    }
    let file = x.credential_source.file.ok_or_else(|| {
        AuthError::Config(format!(
            "credentials file {}: only a `file` credential source is supported",
            path.display()
        ))
    })?;
    Ok((
        Source::GcpExternal {
            token_url: x.token_url,
            audience: x.audience.clone(),
            subject_token_type: x.subject_token_type,
            token_file: file,
        },
        x.audience,
    ))
}

/// The `<tag>…</tag>` text in an XML answer.
fn xml_field<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].trim())
}

pub use warpdrive_config::AuthState;

#[derive(Debug, Default)]
struct State {
    current: Option<(Secret, SystemTime, Duration)>,
    failing_since: Option<SystemTime>,
    expired_logged: bool,
    last_error: Option<AuthError>,
    /// When the last fetch failed: callers within [`RETRY_EVERY`] of it fail at once instead
    /// of each waiting for the endpoint in turn.
    failed_at: Option<std::time::Instant>,
    /// When a rejected token last forced a refresh: requests that were in flight with the
    /// same token, and are rejected too, retry with the new one instead of each forcing
    /// another refresh.
    forced_at: Option<std::time::Instant>,
    refreshes: u64,
    failures: u64,
}

/// The token of one backend and its refresher.
#[derive(Debug)]
pub struct Credentials {
    backend: String,
    mode: &'static str,
    source: Source,
    describe: String,
    http: reqwest::Client,
    state: Mutex<State>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    refresher: AtomicBool,
    metrics: BackendMetrics,
}

/// An OAuth token answer (Azure IMDS, Azure AD, Google STS, the GCP metadata server).
#[derive(Deserialize)]
struct BearerToken {
    access_token: String,
    /// Seconds, as a string (Azure IMDS) or a number.
    expires_in: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AwsRoleCredentials {
    access_key_id: String,
    secret_access_key: String,
    token: Option<String>,
    expiration: String,
}

/// Reads a bearer-token answer from `who`: the token and when it expires.
async fn bearer_answer(
    r: reqwest::Response,
    who: &str,
    now: SystemTime,
) -> Result<(Secret, SystemTime), AuthError> {
    let status = r.status();
    if !status.is_success() {
        return Err(refused(who, status));
    }
    let t: BearerToken = r
        .json()
        .await
        .map_err(|e| AuthError::BadAnswer(e.without_url().to_string()))?;
    let secs = seconds(&t.expires_in)
        .ok_or_else(|| AuthError::BadAnswer("the token has no expires_in".into()))?;
    Ok((
        Secret::Bearer(t.access_token),
        now + Duration::from_secs(secs),
    ))
}

fn seconds(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

impl Credentials {
    /// The credentials of a `managed_identity` backend.
    pub fn managed_identity(
        cfg: &BackendConfig,
        metrics: BackendMetrics,
    ) -> Result<Arc<Credentials>, AuthError> {
        let id: &IdentityConfig = &cfg.identity;
        let (source, describe) = match &cfg.kind {
            BackendKind::Azure { .. } => {
                let identity = id
                    .client_id
                    .clone()
                    .map(|c| ("client_id", c))
                    .or(id.object_id.clone().map(|o| ("object_id", o)))
                    .or(id.resource_id.clone().map(|r| ("msi_res_id", r)));
                (
                    Source::AzureImds {
                        url: id.endpoint.clone().unwrap_or_else(|| AZURE_IMDS.into()),
                        identity,
                    },
                    format!("Azure managed identity ({})", id.describe()),
                )
            }
            BackendKind::S3 { .. } => (
                Source::AwsImds {
                    base: id.endpoint.clone().unwrap_or_else(|| AWS_IMDS.into()),
                },
                "AWS instance role (IMDSv2)".into(),
            ),
            _ => (
                Source::GcpMetadata {
                    base: id.endpoint.clone().unwrap_or_else(|| GCP_METADATA.into()),
                },
                "GCP service account (metadata server)".into(),
            ),
        };
        Credentials::new(cfg, source, describe, metrics)
    }

    /// Fails only if the HTTP client cannot be made: on a machine without CA certificates
    /// (a fresh minimal system), a clear error instead of the client library's panic.
    fn new(
        cfg: &BackendConfig,
        source: Source,
        describe: String,
        metrics: BackendMetrics,
    ) -> Result<Arc<Credentials>, AuthError> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| {
                let cause = std::error::Error::source(&e).map_or(e.to_string(), |c| c.to_string());
                AuthError::Config(format!(
                    "the identity client cannot be made: {cause} (on Debian and Ubuntu, install the ca-certificates package)"
                ))
            })?;
        Ok(Arc::new(Credentials {
            backend: cfg.name.clone(),
            mode: cfg.auth.as_str(),
            source,
            describe,
            http,
            state: Mutex::new(State::default()),
            fetching: tokio::sync::Mutex::new(()),
            refresher: AtomicBool::new(false),
            metrics,
        }))
    }

    /// The credentials of a `workload_identity` backend: the federated token file exchanged
    /// at Azure AD (Azure) or STS (S3); on GCP, workload identity is served by the metadata
    /// server (GKE), as for managed identity. Settings left out of the config come from the
    /// platform's variables (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
    /// `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST`; `AWS_ROLE_ARN`,
    /// `AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_SESSION_NAME`, `AWS_REGION`).
    pub fn workload_identity(
        cfg: &BackendConfig,
        metrics: BackendMetrics,
    ) -> Result<Arc<Credentials>, AuthError> {
        let id = &cfg.identity;
        let need = |v: Option<String>, what: &str, var: &str| {
            v.ok_or_else(|| {
                AuthError::Config(format!(
                    "workload identity needs {what}: set it under auth: or export {var}"
                ))
            })
        };
        let file = |var: &str| {
            need(
                id.token_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .or(env(var)),
                "token_file",
                var,
            )
        };
        match &cfg.kind {
            BackendKind::Azure { .. } => {
                let client_id = need(
                    id.client_id.clone().or(env("AZURE_CLIENT_ID")),
                    "client_id",
                    "AZURE_CLIENT_ID",
                )?;
                let token_file = file("AZURE_FEDERATED_TOKEN_FILE")?;
                let token_url = match &id.endpoint {
                    Some(e) => e.clone(),
                    None => {
                        let tenant = need(
                            id.tenant_id.clone().or(env("AZURE_TENANT_ID")),
                            "tenant_id",
                            "AZURE_TENANT_ID",
                        )?;
                        let authority = env("AZURE_AUTHORITY_HOST")
                            .unwrap_or_else(|| "https://login.microsoftonline.com/".into());
                        format!(
                            "{}/{tenant}/oauth2/v2.0/token",
                            authority.trim_end_matches('/')
                        )
                    }
                };
                let describe = format!("Azure workload identity (client_id {client_id})");
                Credentials::new(
                    cfg,
                    Source::AzureFederated {
                        token_url,
                        client_id,
                        token_file: token_file.into(),
                    },
                    describe,
                    metrics,
                )
            }
            BackendKind::S3 { region, .. } => {
                let role_arn = need(
                    id.role_arn.clone().or(env("AWS_ROLE_ARN")),
                    "role_arn",
                    "AWS_ROLE_ARN",
                )?;
                let token_file = file("AWS_WEB_IDENTITY_TOKEN_FILE")?;
                let region = region
                    .clone()
                    .or(env("AWS_REGION"))
                    .unwrap_or_else(|| "us-east-1".into());
                let sts_url = id
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
                let describe = format!("AWS web identity (role {role_arn})");
                Credentials::new(
                    cfg,
                    Source::AwsWebIdentity {
                        sts_url,
                        role_arn,
                        session: env("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "warpdrive".into()),
                        token_file: token_file.into(),
                    },
                    describe,
                    metrics,
                )
            }
            _ => {
                // Application default credentials: an `external_account` file (workload
                // identity federation) named by GOOGLE_APPLICATION_CREDENTIALS or token_file;
                // otherwise (GKE) the metadata server.
                let adc = id
                    .token_file
                    .clone()
                    .or(env("GOOGLE_APPLICATION_CREDENTIALS").map(PathBuf::from));
                match adc {
                    Some(path) => {
                        let (source, audience) = external_account(&path)?;
                        Credentials::new(
                            cfg,
                            source,
                            format!("GCP workload identity federation ({audience})"),
                            metrics,
                        )
                    }
                    None => Credentials::new(
                        cfg,
                        Source::GcpMetadata {
                            base: id.endpoint.clone().unwrap_or_else(|| GCP_METADATA.into()),
                        },
                        "GCP workload identity (GKE metadata server)".into(),
                        metrics,
                    ),
                }
            }
        }
    }

    /// What `status` shows.
    pub fn state(&self) -> AuthState {
        let st = self.state.lock();
        AuthState {
            mode: self.mode.into(),
            identity: self.describe.clone(),
            expires_in_seconds: st.current.as_ref().map(|(_, exp, _)| remaining(*exp)),
            refreshes: st.refreshes,
            failures: st.failures,
            last_error: st.last_error.as_ref().map(ToString::to_string),
        }
    }

    /// One request to the identity endpoint: the credential, when it expires.
    async fn fetch(&self) -> Result<(Secret, SystemTime), AuthError> {
        let now = SystemTime::now();
        let e = |e: reqwest::Error| AuthError::Unreachable(e.without_url().to_string());
        match &self.source {
            Source::AzureImds { url, identity } => {
                let mut q = vec![
                    ("api-version", "2018-02-01".to_string()),
                    ("resource", AZURE_RESOURCE.into()),
                ];
                if let Some((k, v)) = identity {
                    q.push((k, v.clone()));
                }
                let r = self
                    .http
                    .get(url)
                    .header("Metadata", "true")
                    .query(&q)
                    .send()
                    .await
                    .map_err(e)?;
                bearer_answer(r, "the identity endpoint", now).await
            }
            Source::AwsImds { base } => {
                let token = self
                    .http
                    .put(format!("{base}/latest/api/token"))
                    .header("X-aws-ec2-metadata-token-ttl-seconds", "21600")
                    .send()
                    .await
                    .map_err(e)?;
                if !token.status().is_success() {
                    return Err(refused("IMDSv2 session token", token.status()));
                }
                let token = token.text().await.map_err(e)?;
                let list = format!("{base}/latest/meta-data/iam/security-credentials/");
                let role = self
                    .http
                    .get(&list)
                    .header("X-aws-ec2-metadata-token", &token)
                    .send()
                    .await
                    .map_err(e)?;
                if !role.status().is_success() {
                    return Err(refused("IMDSv2 role name", role.status()));
                }
                let role = role.text().await.map_err(e)?;
                let role = role.lines().next().unwrap_or("").trim().to_string();
                if role.is_empty() {
                    return Err(AuthError::Config(
                        "the instance has no role attached".into(),
                    ));
                }
                let c = self
                    .http
                    .get(format!("{list}{role}"))
                    .header("X-aws-ec2-metadata-token", &token)
                    .send()
                    .await
                    .map_err(e)?;
                if !c.status().is_success() {
                    return Err(refused("IMDSv2 role credentials", c.status()));
                }
                let c: AwsRoleCredentials = c
                    .json()
                    .await
                    .map_err(|e| AuthError::BadAnswer(e.without_url().to_string()))?;
                let exp = humantime::parse_rfc3339_weak(c.expiration.trim_end_matches('Z'))
                    .map_err(|_| {
                        AuthError::BadAnswer(format!("unreadable Expiration {:?}", c.expiration))
                    })?;
                Ok((
                    Secret::Aws {
                        key_id: c.access_key_id,
                        secret_key: c.secret_access_key,
                        token: c.token,
                    },
                    exp,
                ))
            }
            Source::AzureFederated {
                token_url,
                client_id,
                token_file,
            } => {
                let assertion = read_token_file(token_file)?;
                let r = self
                    .http
                    .post(token_url)
                    .form(&[
                        ("client_id", client_id.as_str()),
                        ("scope", "https://storage.azure.com/.default"),
                        (
                            "client_assertion_type",
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        ),
                        ("client_assertion", assertion.as_str()),
                        ("grant_type", "client_credentials"),
                    ])
                    .send()
                    .await
                    .map_err(e)?;
                bearer_answer(r, "Azure AD", now).await
            }
            Source::AwsWebIdentity {
                sts_url,
                role_arn,
                session,
                token_file,
            } => {
                let token = read_token_file(token_file)?;
                let r = self
                    .http
                    .post(sts_url)
                    .form(&[
                        ("Action", "AssumeRoleWithWebIdentity"),
                        ("Version", "2011-06-15"),
                        ("RoleArn", role_arn.as_str()),
                        ("RoleSessionName", session.as_str()),
                        ("WebIdentityToken", token.as_str()),
                    ])
                    .send()
                    .await
                    .map_err(e)?;
                let status = r.status();
                let body = r.text().await.map_err(e)?;
                if !status.is_success() {
                    let code = xml_field(&body, "Code").unwrap_or("");
                    return Err(AuthError::Refused {
                        who: "STS".into(),
                        status: status.as_u16(),
                        code: (!code.is_empty()).then(|| code.to_string()),
                    });
                }
                let field = |t: &str| {
                    xml_field(&body, t)
                        .map(str::to_string)
                        .ok_or_else(|| AuthError::BadAnswer(format!("the STS answer has no {t}")))
                };
                let exp = field("Expiration")?;
                let exp = humantime::parse_rfc3339_weak(exp.trim_end_matches('Z'))
                    .map_err(|_| AuthError::BadAnswer(format!("unreadable Expiration {exp:?}")))?;
                Ok((
                    Secret::Aws {
                        key_id: field("AccessKeyId")?,
                        secret_key: field("SecretAccessKey")?,
                        token: Some(field("SessionToken")?),
                    },
                    exp,
                ))
            }
            Source::GcpExternal {
                token_url,
                audience,
                subject_token_type,
                token_file,
            } => {
                let subject = read_token_file(token_file)?;
                let r = self
                    .http
                    .post(token_url)
                    .form(&[
                        (
                            "grant_type",
                            "urn:ietf:params:oauth:grant-type:token-exchange",
                        ),
                        ("audience", audience.as_str()),
                        (
                            "scope",
                            "https://www.googleapis.com/auth/devstorage.read_write",
                        ),
                        (
                            "requested_token_type",
                            "urn:ietf:params:oauth:token-type:access_token",
                        ),
                        ("subject_token_type", subject_token_type.as_str()),
                        ("subject_token", subject.as_str()),
                    ])
                    .send()
                    .await
                    .map_err(e)?;
                bearer_answer(r, "Google STS", now).await
            }
            Source::GcpMetadata { base } => {
                let r = self
                    .http
                    .get(format!(
                        "{base}/computeMetadata/v1/instance/service-accounts/default/token"
                    ))
                    .header("Metadata-Flavor", "Google")
                    .send()
                    .await
                    .map_err(e)?;
                bearer_answer(r, "the metadata server", now).await
            }
        }
    }

    /// Fetches a new token (one fetch at a time; a caller that waited for another's fetch
    /// takes its result when `newer_than` is older than it).
    async fn refresh(&self, newer_than: Option<SystemTime>) -> Result<Secret, AuthError> {
        let _one = self.fetching.lock().await;
        if let Some(t) = newer_than {
            let st = self.state.lock();
            if let Some((s, exp, _)) = &st.current
                && *exp > t
                && SystemTime::now() < *exp
            {
                return Ok(s.clone());
            }
        }
        {
            let st = self.state.lock();
            if let Some(at) = st.failed_at
                && at.elapsed() < RETRY_EVERY
            {
                return Err(st
                    .last_error
                    .clone()
                    .unwrap_or_else(|| AuthError::Unreachable("the last refresh failed".into())));
            }
        }
        let r = tokio::time::timeout(FETCH_TIMEOUT, self.fetch())
            .await
            .unwrap_or_else(|_| {
                Err(AuthError::Unreachable(format!(
                    "no answer within {FETCH_TIMEOUT:?}"
                )))
            });
        let mut st = self.state.lock();
        match r {
            Ok((secret, exp)) => {
                let life = exp.duration_since(SystemTime::now()).unwrap_or_default();
                st.current = Some((secret.clone(), exp, life));
                st.refreshes += 1;
                st.last_error = None;
                st.failed_at = None;
                st.expired_logged = false;
                if st.failing_since.take().is_some() {
                    tracing::info!(
                        backend = self.backend,
                        "identity endpoint answers again; token refreshed"
                    );
                } else {
                    tracing::debug!(
                        backend = self.backend,
                        valid_s = life.as_secs(),
                        "token refreshed"
                    );
                }
                self.metrics.auth_refreshed(remaining(exp) as f64);
                Ok(secret)
            }
            Err(msg) => {
                st.failures += 1;
                st.failed_at = Some(std::time::Instant::now());
                self.metrics.auth_failed();
                st.last_error = Some(msg.clone());
                let shown = msg.to_string();
                if st.failing_since.is_none() {
                    st.failing_since = Some(SystemTime::now());
                    let left = st.current.as_ref().map(|(_, exp, _)| remaining(*exp));
                    tracing::warn!(
                        backend = self.backend,
                        error = shown,
                        token_valid_s = left.unwrap_or(0),
                        "cannot refresh the token; the current one is used until it expires"
                    );
                }
                Err(msg)
            }
        }
    }

    /// Starts the refresher on the current runtime (once).
    fn start_refresher(self: &Arc<Self>) {
        if self.refresher.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak: Weak<Credentials> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut next_try = SystemTime::now();
            loop {
                tokio::time::sleep(TICK).await;
                let Some(me) = weak.upgrade() else { return };
                let (due, exp) = {
                    let st = me.state.lock();
                    match &st.current {
                        Some((_, exp, life)) => {
                            let margin = life.mul_f64(MARGIN_SHARE).min(MAX_MARGIN);
                            (SystemTime::now() + margin >= *exp, Some(*exp))
                        }
                        None => (false, None),
                    }
                };
                if let Some(exp) = exp {
                    me.metrics.auth_expiry(remaining(exp) as f64);
                }
                if due && SystemTime::now() >= next_try && me.refresh(exp).await.is_err() {
                    next_try = SystemTime::now() + RETRY_EVERY;
                }
            }
        });
    }

    /// The current credential: the cached token while valid (refreshed in the background
    /// before it expires), otherwise a fetch bounded by [`FETCH_TIMEOUT`].
    pub async fn get(self: &Arc<Self>) -> Result<Secret, AuthError> {
        self.start_refresher();
        let cached = {
            let st = self.state.lock();
            st.current.clone()
        };
        if let Some((s, exp, _)) = &cached
            && SystemTime::now() < *exp
        {
            return Ok(s.clone());
        }
        match self.refresh(cached.as_ref().map(|c| c.1)).await {
            Ok(s) => Ok(s),
            Err(e) => {
                let mut st = self.state.lock();
                if cached.is_some() && !st.expired_logged {
                    st.expired_logged = true;
                    tracing::error!(
                        backend = self.backend,
                        error = %e,
                        "the token has expired and cannot be refreshed; reads fail with EIO until the identity endpoint answers"
                    );
                }
                Err(AuthError::NoToken {
                    backend: self.backend.clone(),
                    cause: Box::new(e),
                })
            }
        }
    }

    /// After the store rejected the current token: drop it and fetch a new one.
    pub async fn force_refresh(self: &Arc<Self>) -> Result<(), AuthError> {
        let joined = {
            let mut st = self.state.lock();
            let recent = st.forced_at.is_some_and(|t| t.elapsed() < RETRY_EVERY);
            if !recent {
                st.forced_at = Some(std::time::Instant::now());
            }
            recent
        };
        if joined {
            // Another request saw the same token rejected and is fetching (or has fetched) a
            // new one: wait for that fetch, then retry with its token.
            drop(self.fetching.lock().await);
            return Ok(());
        }
        let old = self.state.lock().current.as_ref().map(|c| c.1);
        self.refresh(old.map(|o| o + Duration::from_secs(1)))
            .await
            .map(|_| ())
    }
}

/// Seconds until `t` (negative once past).
fn remaining(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::now()) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

fn provider_error(e: AuthError) -> object_store::Error {
    object_store::Error::Generic {
        store: "credentials",
        source: Box::new(e),
    }
}

/// The `object_store` providers over [`Credentials`].
#[derive(Debug)]
pub(crate) struct Provider(pub Arc<Credentials>);

#[async_trait::async_trait]
impl object_store::CredentialProvider for Provider {
    type Credential = AzureCredential;
    async fn get_credential(&self) -> object_store::Result<Arc<AzureCredential>> {
        match self.0.get().await.map_err(provider_error)? {
            Secret::Bearer(t) => Ok(Arc::new(AzureCredential::BearerToken(t))),
            Secret::Aws { .. } => Err(provider_error(AuthError::Config(
                "an AWS credential for Azure".into(),
            ))),
        }
    }
}

#[derive(Debug)]
pub(crate) struct AwsProvider(pub Arc<Credentials>);

#[async_trait::async_trait]
impl object_store::CredentialProvider for AwsProvider {
    type Credential = AwsCredential;
    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        match self.0.get().await.map_err(provider_error)? {
            Secret::Aws {
                key_id,
                secret_key,
                token,
            } => Ok(Arc::new(AwsCredential {
                key_id,
                secret_key,
                token,
            })),
            Secret::Bearer(_) => Err(provider_error(AuthError::Config(
                "a bearer token for S3".into(),
            ))),
        }
    }
}

#[derive(Debug)]
pub(crate) struct GcpProvider(pub Arc<Credentials>);

#[async_trait::async_trait]
impl object_store::CredentialProvider for GcpProvider {
    type Credential = GcpCredential;
    async fn get_credential(&self) -> object_store::Result<Arc<GcpCredential>> {
        match self.0.get().await.map_err(provider_error)? {
            Secret::Bearer(bearer) => Ok(Arc::new(GcpCredential { bearer })),
            Secret::Aws { .. } => Err(provider_error(AuthError::Config(
                "an AWS credential for GCS".into(),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let b = Secret::Bearer("eyJhbGciOi.secret".into());
        let a = Secret::Aws {
            key_id: "AKIAEXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI".into(),
            token: Some("FwoGZXIvYXdz".into()),
        };
        for s in [format!("{b:?}"), format!("{a:?}")] {
            assert!(s.contains("redacted"), "{s}");
            for leak in ["eyJ", "AKIA", "wJalr", "FwoG"] {
                assert!(!s.contains(leak), "{s}");
            }
        }
    }

    #[test]
    fn lifetimes_and_expiry_fields_parse() {
        assert_eq!(seconds(&serde_json::json!("3599")), Some(3599));
        assert_eq!(seconds(&serde_json::json!(60)), Some(60));
        assert_eq!(seconds(&serde_json::json!(null)), None);
        assert!(remaining(SystemTime::now() + Duration::from_secs(100)) > 90);
        assert!(remaining(SystemTime::now() - Duration::from_secs(100)) < -90);
        let exp = humantime::parse_rfc3339_weak("2030-01-02T03:04:05").expect("rfc3339");
        assert!(exp > SystemTime::now());
    }
}
