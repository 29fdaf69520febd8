//! The YAML as written: every struct mirrors the file and rejects unknown fields.
//!
//! Fields are `Option` so that a missing field is reported by [`crate::Config::from_raw`]
//! with a sentence that says what to add, rather than serde's terse "missing field".

use std::path::PathBuf;

use serde::Deserialize;

use crate::{AuthMode, BackendConfig, BackendKind, IdentityConfig, validate_name};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub mount_point: Option<PathBuf>,
    pub shared_cache: Option<RawSharedCache>,
    pub cache: Option<RawCache>,
    pub metrics: Option<RawMetrics>,
    pub control: Option<RawControl>,
    pub metadata_ttl: Option<String>,
    pub stale_if_error: Option<String>,
    pub negative_ttl: Option<String>,
    pub fuse: Option<RawFuse>,
    pub retry: Option<RawRetry>,
    pub backends: Option<Vec<RawBackend>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetry {
    pub deadline: Option<String>,
    pub unreachable: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    pub dir: Option<PathBuf>,
    pub max_size: Option<String>,
    pub min_free: Option<String>,
    pub block_size: Option<String>,
    pub prefetch_budget: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub listen: Option<String>,
    pub allow_remote: Option<bool>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawControl {
    pub socket: Option<PathBuf>,
    pub listen: Option<String>,
    pub token_file: Option<PathBuf>,
    pub allow_remote: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFuse {
    pub threads: Option<usize>,
    pub allow_other: Option<bool>,
    pub passthrough: Option<crate::Passthrough>,
    pub passthrough_min_size: Option<String>,
    pub zero_message_opens: Option<bool>,
    pub control_file: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub name: Option<String>,
    pub azure: Option<RawAzure>,
    pub s3: Option<RawS3>,
    pub gcs: Option<RawGcs>,
    pub local: Option<RawLocal>,
    /// A mode (`managed_identity`) or a map with `mode` and the identity's details.
    pub auth: Option<serde_yaml_ng::Value>,
    pub ca_file: Option<PathBuf>,
    pub writable: Option<Vec<String>>,
    pub overwrite: Option<bool>,
    pub delete: Option<bool>,
}

/// `shared_cache:`: one store, written as a backend is (without `name`), and the tier's own
/// settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSharedCache {
    pub azure: Option<RawAzure>,
    pub s3: Option<RawS3>,
    pub gcs: Option<RawGcs>,
    pub local: Option<RawLocal>,
    pub auth: Option<serde_yaml_ng::Value>,
    pub ca_file: Option<PathBuf>,
    pub chunk_size: Option<String>,
    pub lease_ttl: Option<String>,
    pub mode: Option<crate::SharedMode>,
    pub backends: Option<Vec<String>>,
    pub leases: Option<bool>,
}

impl RawSharedCache {
    /// Its store, as a backend named `shared_cache` (fields named `shared_cache.*`).
    pub(crate) fn store(&mut self) -> Result<BackendConfig, FieldError> {
        RawBackend {
            name: Some("shared_cache".into()),
            azure: self.azure.take(),
            s3: self.s3.take(),
            gcs: self.gcs.take(),
            local: self.local.take(),
            auth: self.auth.take(),
            ca_file: self.ca_file.take(),
            writable: None,
            overwrite: None,
            delete: None,
        }
        .resolve_as("shared_cache".into(), &|f| format!("shared_cache.{f}"))
    }
}

/// The fields of `auth:` written as a map.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    mode: Option<AuthMode>,
    client_id: Option<String>,
    object_id: Option<String>,
    resource_id: Option<String>,
    endpoint: Option<String>,
    token_file: Option<PathBuf>,
    tenant_id: Option<String>,
    role_arn: Option<String>,
    secret_file: Option<PathBuf>,
    secret_env: Option<String>,
}

/// Reads `auth:`: a mode alone, or a map.
fn parse_auth(
    v: serde_yaml_ng::Value,
    field: String,
) -> Result<(Option<AuthMode>, IdentityConfig), FieldError> {
    let modes =
        "managed_identity, workload_identity, environment, anonymous, emulator, shared_key or sas";
    if v.is_string() {
        let mode: AuthMode = serde_yaml_ng::from_value(v).map_err(|_| {
            (
                field.clone(),
                format!("is not an auth mode; use one of {modes}"),
            )
        })?;
        return Ok((Some(mode), IdentityConfig::default()));
    }
    let raw: RawAuth = serde_yaml_ng::from_value(v).map_err(|e| {
        (
            field.clone(),
            format!(
                "{e}; write a mode ({modes}) or a map such as {{ mode: managed_identity, client_id: ... }}"
            ),
        )
    })?;
    let set = [&raw.client_id, &raw.object_id, &raw.resource_id]
        .iter()
        .filter(|x| x.is_some())
        .count();
    if set > 1 {
        return Err((
            field,
            "names the identity more than once; give one of client_id, object_id or resource_id"
                .into(),
        ));
    }
    let endpoint = endpoint(raw.endpoint, format!("{field}.endpoint"))?;
    if let Some(f) = &raw.secret_file
        && !f.is_absolute()
    {
        return Err((
            format!("{field}.secret_file"),
            format!("`{}` is relative; use an absolute path", f.display()),
        ));
    }
    if let Some(f) = &raw.token_file
        && !f.is_absolute()
    {
        return Err((
            format!("{field}.token_file"),
            format!("`{}` is relative; use an absolute path", f.display()),
        ));
    }
    Ok((
        raw.mode,
        IdentityConfig {
            client_id: raw.client_id,
            object_id: raw.object_id,
            resource_id: raw.resource_id,
            endpoint,
            token_file: raw.token_file,
            tenant_id: raw.tenant_id,
            role_arn: raw.role_arn,
            secret_file: raw.secret_file,
            secret_env: raw.secret_env,
        },
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAzure {
    pub account: Option<String>,
    pub container: Option<String>,
    pub prefix: Option<String>,
    pub endpoint: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawS3 {
    pub bucket: Option<String>,
    pub region: Option<String>,
    pub prefix: Option<String>,
    pub endpoint: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGcs {
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub endpoint: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLocal {
    pub path: Option<PathBuf>,
}

type FieldError = (String, String);

fn required(value: Option<String>, field: String, hint: &str) -> Result<String, FieldError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err((field, format!("is empty; {hint}"))),
        None => Err((field, format!("missing; {hint}"))),
    }
}

/// Normalises a key prefix: no leading `/`, a trailing `/` unless empty, no empty, `.` or
/// `..` segments (they would let a path resolve outside the prefix).
fn normalise_prefix(prefix: Option<String>, field: String) -> Result<String, FieldError> {
    let p = prefix.unwrap_or_default();
    let trimmed = p.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    for seg in trimmed.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err((
                field,
                format!("`{p}` has an empty, `.` or `..` segment; write the prefix as `a/b/`"),
            ));
        }
    }
    Ok(format!("{trimmed}/"))
}

fn endpoint(value: Option<String>, field: String) -> Result<Option<String>, FieldError> {
    match value {
        None => Ok(None),
        Some(e) => match url::Url::parse(&e) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
                Ok(Some(e.trim_end_matches('/').to_string()))
            }
            _ => Err((
                field,
                format!("`{e}` is not an http(s) URL; write it as http://127.0.0.1:10000/..."),
            )),
        },
    }
}

impl RawBackend {
    pub(crate) fn resolve(mut self, i: usize) -> Result<BackendConfig, FieldError> {
        let at = |f: &str| format!("backends[{i}].{f}");
        let name = required(
            self.name.take(),
            at("name"),
            "give each backend a `name`, which becomes its directory under the mount point",
        )?;
        validate_name(&name).map_err(|m| (at("name"), m))?;
        let label = format!("backends[{i}] ({name})");
        self.resolve_as(name, &|f| format!("{label}.{f}"))
    }

    /// Resolves a store named `name`; `at(field)` names a field in messages.
    fn resolve_as(
        self,
        name: String,
        at: &dyn Fn(&str) -> String,
    ) -> Result<BackendConfig, FieldError> {
        let kinds = [
            self.azure.is_some(),
            self.s3.is_some(),
            self.gcs.is_some(),
            self.local.is_some(),
        ]
        .iter()
        .filter(|k| **k)
        .count();
        if kinds != 1 {
            return Err((
                at("").trim_end_matches('.').to_string(),
                format!(
                    "has {kinds} store kinds; give exactly one of `azure:`, `s3:`, `gcs:` or `local:`"
                ),
            ));
        }

        let (kind, prefix, default_auth) = if let Some(a) = self.azure {
            let account = required(
                a.account,
                at("azure.account"),
                "set the storage account name",
            )?;
            let container = required(
                a.container,
                at("azure.container"),
                "set the blob container name",
            )?;
            (
                BackendKind::Azure {
                    account,
                    container,
                    endpoint: endpoint(a.endpoint, at("azure.endpoint"))?,
                },
                normalise_prefix(a.prefix, at("azure.prefix"))?,
                AuthMode::ManagedIdentity,
            )
        } else if let Some(s) = self.s3 {
            let bucket = required(s.bucket, at("s3.bucket"), "set the bucket name")?;
            (
                BackendKind::S3 {
                    bucket,
                    region: s.region,
                    endpoint: endpoint(s.endpoint, at("s3.endpoint"))?,
                },
                normalise_prefix(s.prefix, at("s3.prefix"))?,
                AuthMode::Environment,
            )
        } else if let Some(g) = self.gcs {
            let bucket = required(g.bucket, at("gcs.bucket"), "set the bucket name")?;
            (
                BackendKind::Gcs {
                    bucket,
                    endpoint: endpoint(g.endpoint, at("gcs.endpoint"))?,
                },
                normalise_prefix(g.prefix, at("gcs.prefix"))?,
                AuthMode::Environment,
            )
        } else if let Some(l) = self.local {
            let path = l.path.ok_or_else(|| {
                (
                    at("local.path"),
                    "missing; set the directory to serve".to_string(),
                )
            })?;
            if !path.is_absolute() {
                return Err((
                    at("local.path"),
                    format!("`{}` is relative; use an absolute path", path.display()),
                ));
            }
            (
                BackendKind::Local { path },
                String::new(),
                AuthMode::Anonymous,
            )
        } else {
            unreachable!("exactly one kind was checked above")
        };

        let (mode, identity) = match self.auth {
            None => (None, IdentityConfig::default()),
            Some(v) => parse_auth(v, at("auth"))?,
        };
        let auth = mode.unwrap_or(default_auth);
        let managed_only = identity.object_id.is_some() || identity.resource_id.is_some();
        let workload_only = identity.token_file.is_some()
            || identity.tenant_id.is_some()
            || identity.role_arn.is_some();
        let either = identity.client_id.is_some() || identity.endpoint.is_some();
        let secret = identity.secret_file.is_some() || identity.secret_env.is_some();
        let fits = match auth {
            AuthMode::ManagedIdentity => !workload_only && !secret,
            AuthMode::WorkloadIdentity => !managed_only && !secret,
            AuthMode::SharedKey | AuthMode::Sas => !(managed_only || workload_only || either),
            _ => !(managed_only || workload_only || either || secret),
        };
        if !fits {
            return Err((
                at("auth"),
                format!(
                    "`{}` does not take these fields: client_id and endpoint go with managed_identity or workload_identity, object_id and resource_id with managed_identity, token_file, tenant_id and role_arn with workload_identity, secret_file and secret_env with shared_key or sas",
                    auth.as_str()
                ),
            ));
        }
        if matches!(auth, AuthMode::SharedKey | AuthMode::Sas)
            && identity.secret_file.is_some() == identity.secret_env.is_some()
        {
            return Err((
                at("auth"),
                format!(
                    "`{}` reads its secret from a file or an environment variable: give exactly one of secret_file (mode 0600) or secret_env; the secret itself never goes in the config",
                    auth.as_str()
                ),
            ));
        }
        if auth == AuthMode::Sas && !matches!(kind, BackendKind::Azure { .. }) {
            return Err((at("auth"), "`sas` is for Azure backends only".into()));
        }
        if let Some(f) = &self.ca_file
            && !f.is_absolute()
        {
            return Err((
                at("ca_file"),
                format!("`{}` is relative; use an absolute path", f.display()),
            ));
        }
        if auth == AuthMode::Emulator && !is_loopback_endpoint(kind.endpoint()) {
            return Err((
                at("auth"),
                "`emulator` uses well-known development credentials and is only allowed with a loopback `endpoint` (127.0.0.1 or localhost)".into(),
            ));
        }
        if matches!(kind, BackendKind::Local { .. }) && auth != AuthMode::Anonymous {
            return Err((
                at("auth"),
                "a local backend has no identity; remove `auth` or set it to `anonymous`".into(),
            ));
        }

        let mut prefixes = Vec::new();
        for (i, p) in self.writable.unwrap_or_default().into_iter().enumerate() {
            let field = at(&format!("writable[{i}]"));
            if p.is_empty() {
                return Err((
                    field,
                    "is empty; write a directory such as `checkpoints/`, or `/` for the whole backend".into(),
                ));
            }
            prefixes.push(normalise_prefix(Some(p), field)?);
        }
        let write = crate::WriteAccess {
            prefixes,
            overwrite: self.overwrite.unwrap_or(false),
            delete: self.delete.unwrap_or(false),
        };
        if write.prefixes.is_empty() && (write.overwrite || write.delete) {
            return Err((
                at(if write.overwrite {
                    "overwrite"
                } else {
                    "delete"
                }),
                "applies to `writable` prefixes, and there are none; list them in `writable`"
                    .into(),
            ));
        }

        Ok(BackendConfig {
            name,
            kind,
            prefix,
            auth,
            identity,
            ca_file: self.ca_file,
            write,
            retry: crate::RetryPolicy::default(),
        })
    }
}

fn is_loopback_endpoint(e: Option<&str>) -> bool {
    let Some(e) = e else { return false };
    let Ok(u) = url::Url::parse(e) else {
        return false;
    };
    match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Turns serde's messages into ones that say what to do.
pub(crate) fn explain_serde_error(msg: &str) -> String {
    if msg.contains("unknown field") {
        format!("{msg}; remove or correct that field (see doc/CONFIGURATION.md)")
    } else if msg.contains("unknown variant") {
        format!("{msg}; use one of the listed values")
    } else {
        format!("{msg}; fix the YAML at that position")
    }
}
