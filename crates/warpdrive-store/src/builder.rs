//! Builds an `object_store` client for each cloud backend from its resolved config.
//!
//! Auth modes map onto each builder as follows (doc/CONFIGURATION.md has the user's view):
//!
//! | mode               | Azure                         | S3                          | GCS                         |
//! |--------------------|-------------------------------|-----------------------------|-----------------------------|
//! | `managed_identity` | IMDS token ([`crate::auth`])  | instance role, IMDSv2 (auth)| metadata server (auth)      |
//! | `workload_identity`| federated token at Azure AD   | web identity at STS (auth)  | GKE metadata server (auth)  |
//! | `environment`      | `AZURE_*` variables           | `AWS_*` variables           | `GOOGLE_*` variables        |
//! | `anonymous`        | unsigned requests             | unsigned requests           | unsigned requests           |
//! | `emulator`         | Azurite's well-known key      | fixed test keys             | unsigned requests           |

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::{GcpCredential, GoogleCloudStorageBuilder};
use object_store::list::PaginatedListStore;
use object_store::{Certificate, ClientOptions, ObjectStore, StaticCredentialProvider};
use warpdrive_config::{AuthMode, BackendConfig, BackendKind};
use warpdrive_metrics::BackendMetrics;

use crate::auth::{AwsProvider, Credentials, GcpProvider, Provider};
use crate::checksum::{Dialect, Seen};
use crate::keys::WarnOnce;
use crate::listfilter::FilteringConnector;
use crate::retry::{RetryState, object_store_config};
use crate::{Result, StoreError};

/// Per-attempt timeout, answer and body (the answer's first byte has a shorter, adaptive
/// one: [`crate::retry`]). Retries are bounded by `retry.deadline`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connecting to a store's endpoint takes a few round trips; longer means it is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Azurite's published development account key (not a secret: it is in Azurite's docs).
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

type Built = (
    Arc<dyn ObjectStore>,
    Arc<dyn PaginatedListStore>,
    Option<Arc<Credentials>>,
    Option<Arc<crate::gcs::GcsJson>>,
);

/// Which checksum headers a backend's answers carry.
fn dialect(kind: &BackendKind) -> Dialect {
    match kind {
        BackendKind::Azure { .. } => Dialect::Azure,
        BackendKind::Gcs { .. } => Dialect::Gcs,
        _ => Dialect::S3,
    }
}

fn client_options(cfg: &BackendConfig, endpoint: Option<&str>) -> Result<ClientOptions> {
    let mut o = ClientOptions::new()
        .with_timeout(REQUEST_TIMEOUT)
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_allow_http(endpoint.is_some_and(|e| e.starts_with("http://")));
    if let Some(f) = &cfg.ca_file {
        let fail = |m: String| StoreError::Build {
            backend: cfg.name.clone(),
            message: format!("ca_file {}: {m}", f.display()),
        };
        let pem = std::fs::read(f).map_err(|e| fail(e.to_string()))?;
        let certs = Certificate::from_pem_bundle(&pem).map_err(|e| fail(e.to_string()))?;
        if certs.is_empty() {
            return Err(fail("holds no PEM certificate".into()));
        }
        for c in certs {
            o = o.with_root_certificate(c);
        }
    }
    Ok(o)
}

fn both<T: ObjectStore + PaginatedListStore>(s: T, c: Option<Arc<Credentials>>) -> Built {
    let s = Arc::new(s);
    (
        s.clone() as Arc<dyn ObjectStore>,
        s as Arc<dyn PaginatedListStore>,
        c,
        None,
    )
}

pub(crate) fn build(
    cfg: &BackendConfig,
    warned: Arc<WarnOnce>,
    metrics: &BackendMetrics,
    seen: &Arc<Seen>,
) -> Result<Built> {
    let state = Arc::new(RetryState::new(cfg.retry));
    let connector = || FilteringConnector {
        backend: cfg.name.clone(),
        warned: warned.clone(),
        metrics: metrics.clone(),
        retry: state.clone(),
        seen: seen.clone(),
        dialect: dialect(&cfg.kind),
    };
    let retry = || object_store_config(&cfg.retry);
    let fail = |e: object_store::Error| StoreError::Build {
        backend: cfg.name.clone(),
        message: e.to_string(),
    };
    let identity_failed = |m: crate::auth::AuthError| StoreError::Build {
        backend: cfg.name.clone(),
        message: m.to_string(),
    };
    let creds = match cfg.auth {
        AuthMode::ManagedIdentity => {
            Some(Credentials::managed_identity(cfg, metrics.clone()).map_err(identity_failed)?)
        }
        AuthMode::WorkloadIdentity => {
            Some(Credentials::workload_identity(cfg, metrics.clone()).map_err(identity_failed)?)
        }
        _ => None,
    };
    let secret = if matches!(cfg.auth, AuthMode::SharedKey | AuthMode::Sas) {
        Some(crate::secret::load(cfg).map_err(|m| StoreError::Build {
            backend: cfg.name.clone(),
            message: m,
        })?)
    } else {
        None
    };
    let bad_secret = |m: String| StoreError::Build {
        backend: cfg.name.clone(),
        message: m,
    };
    match &cfg.kind {
        BackendKind::Azure {
            account,
            container,
            endpoint,
        } => {
            let mut b = match cfg.auth {
                AuthMode::Environment => MicrosoftAzureBuilder::from_env(),
                _ => MicrosoftAzureBuilder::new(),
            }
            .with_account(account)
            .with_container_name(container)
            .with_http_connector(connector())
            .with_client_options(client_options(cfg, endpoint.as_deref())?)
            .with_retry(retry());
            if let Some(e) = endpoint {
                b = b.with_endpoint(e.clone());
            }
            match cfg.auth {
                AuthMode::Emulator => b = b.with_access_key(AZURITE_KEY),
                AuthMode::Anonymous => b = b.with_skip_signature(true),
                AuthMode::SharedKey => b = b.with_access_key(secret.clone().unwrap_or_default()),
                AuthMode::Sas => {
                    b = b.with_sas_authorization(crate::secret::sas_pairs(
                        secret.as_deref().unwrap_or_default(),
                    ))
                }
                _ => {}
            }
            if let Some(c) = &creds {
                b = b.with_credentials(Arc::new(Provider(c.clone())));
            }
            Ok(both(b.build().map_err(fail)?, creds))
        }
        BackendKind::S3 {
            bucket,
            region,
            endpoint,
        } => {
            let mut b = match cfg.auth {
                AuthMode::Environment => AmazonS3Builder::from_env(),
                _ => AmazonS3Builder::new(),
            }
            .with_bucket_name(bucket)
            .with_http_connector(connector())
            .with_client_options(client_options(cfg, endpoint.as_deref())?)
            .with_retry(retry())
            // A create-only copy (a rename that must not replace an object) as S3 offers it:
            // the copy made as a one-part upload whose completion carries `If-None-Match: *`.
            .with_copy_if_not_exists(object_store::aws::S3CopyIfNotExists::Multipart);
            if let Some(r) = region {
                b = b.with_region(r);
            }
            if let Some(e) = endpoint {
                b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
            }
            match cfg.auth {
                AuthMode::Emulator => {
                    b = b
                        .with_access_key_id("warpdrive-emulator")
                        .with_secret_access_key("warpdrive-emulator")
                }
                AuthMode::Anonymous => b = b.with_skip_signature(true),
                AuthMode::SharedKey => {
                    let (id, key) = crate::secret::key_pair(secret.as_deref().unwrap_or_default())
                        .map_err(bad_secret)?;
                    b = b.with_access_key_id(id).with_secret_access_key(key)
                }
                _ => {}
            }
            if let Some(c) = &creds {
                b = b.with_credentials(Arc::new(AwsProvider(c.clone())));
            }
            Ok(both(b.build().map_err(fail)?, creds))
        }
        BackendKind::Gcs { bucket, endpoint } => {
            let mut b = match cfg.auth {
                AuthMode::Environment => GoogleCloudStorageBuilder::from_env(),
                _ => GoogleCloudStorageBuilder::new(),
            }
            .with_bucket_name(bucket)
            .with_http_connector(connector())
            .with_client_options(client_options(cfg, endpoint.as_deref())?)
            .with_retry(retry());
            if let Some(e) = endpoint {
                b = b.with_base_url(e);
            }
            if matches!(cfg.auth, AuthMode::Emulator | AuthMode::Anonymous) {
                // `skip_signature` covers reads only; uploads (test kit, future `ctl move`)
                // still ask the credential provider, which must then never reach for the
                // metadata server. A fixed empty bearer token keeps every request local.
                b = b.with_skip_signature(true).with_credentials(Arc::new(
                    StaticCredentialProvider::new(GcpCredential {
                        bearer: String::new(),
                    }),
                ));
            }
            if let Some(c) = &creds {
                b = b.with_credentials(Arc::new(GcpProvider(c.clone())));
            }
            if cfg.auth == AuthMode::SharedKey {
                b = b.with_service_account_key(secret.clone().unwrap_or_default());
            }
            let g = b.build().map_err(fail)?;
            // Writes go through the JSON API (crate::gcs), with the same credentials and
            // the same HTTP stack.
            let json = crate::gcs::GcsJson {
                name: cfg.name.clone(),
                base: endpoint
                    .clone()
                    .unwrap_or_else(|| "https://storage.googleapis.com".to_string()),
                bucket: bucket.clone(),
                client: object_store::client::HttpConnector::connect(
                    &connector(),
                    &client_options(cfg, endpoint.as_deref())?,
                )
                .map_err(fail)?,
                creds: g.credentials().clone(),
            };
            let mut built = both(g, creds);
            built.3 = Some(Arc::new(json));
            Ok(built)
        }
        BackendKind::Local { .. } => unreachable!("local backends are not built with object_store"),
    }
}
