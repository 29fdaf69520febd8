//! Long-lived secrets (`auth: shared_key` or `sas`), for users who must: read from a file only
//! its owner can read, or from an environment variable; never from the config, never printed.
//! Error messages of the store layer are redacted too ([`redact`]): a SAS signature that a
//! client puts in a request URL does not reach a log line or an errno's message.

use std::os::unix::fs::MetadataExt;

use warpdrive_config::BackendConfig;

/// The backend's secret, from `secret_file` (refused unless mode 0600 or stricter) or
/// `secret_env`. The error says where it looked, never what it found.
pub(crate) fn load(cfg: &BackendConfig) -> Result<String, String> {
    let id = &cfg.identity;
    let value = match (&id.secret_file, &id.secret_env) {
        (Some(f), _) => {
            let md =
                std::fs::metadata(f).map_err(|e| format!("secret_file {}: {e}", f.display()))?;
            if md.mode() & 0o077 != 0 {
                return Err(format!(
                    "secret_file {} can be read by other users (mode {:o}); run `chmod 600 {}`",
                    f.display(),
                    md.mode() & 0o777,
                    f.display()
                ));
            }
            std::fs::read_to_string(f).map_err(|e| format!("secret_file {}: {e}", f.display()))?
        }
        (None, Some(var)) => std::env::var(var)
            .map_err(|_| format!("secret_env: the environment variable {var} is not set"))?,
        (None, None) => return Err("no secret_file or secret_env".into()),
    };
    let v = value.trim().to_string();
    if v.is_empty() {
        return Err("the secret is empty".into());
    }
    Ok(v)
}

/// An S3 key pair written `ACCESS_KEY_ID:SECRET_ACCESS_KEY` (or on two lines).
pub(crate) fn key_pair(secret: &str) -> Result<(String, String), String> {
    let (id, key) = secret
        .split_once(':')
        .or_else(|| secret.split_once('\n'))
        .ok_or("an S3 shared_key is written ACCESS_KEY_ID:SECRET_ACCESS_KEY")?;
    Ok((id.trim().to_string(), key.trim().to_string()))
}

/// The query pairs of an Azure SAS token (with or without its leading `?`).
pub(crate) fn sas_pairs(secret: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(secret.trim_start_matches('?').as_bytes())
        .into_owned()
        .collect()
}

/// `text` with the values of secret-bearing URL parameters (`sig`, SAS signatures;
/// `X-Amz-Signature`, `X-Amz-Credential`, `X-Amz-Security-Token`) replaced by `REDACTED`.
pub fn redact(text: &str) -> String {
    const KEYS: [&str; 4] = [
        "sig=",
        "X-Amz-Signature=",
        "X-Amz-Credential=",
        "X-Amz-Security-Token=",
    ];
    let mut out = text.to_string();
    for k in KEYS {
        let mut from = 0;
        while let Some(i) = out[from..].find(k) {
            let start = from + i + k.len();
            let end = out[start..]
                .find(['&', ' ', '"', '\'', '>'])
                .map_or(out.len(), |j| start + j);
            out.replace_range(start..end, "REDACTED");
            from = start + "REDACTED".len();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_redacted() {
        let m = "Error performing GET https://a.blob.core.windows.net/c/k?sv=2022&sig=abc%2Bdef%3D&se=2030 in 3ms";
        let r = redact(m);
        assert!(!r.contains("abc%2Bdef"), "{r}");
        assert!(r.contains("sig=REDACTED&se=2030"), "{r}");
        let s3 = "GET /b/k?X-Amz-Credential=AKIA%2F20&X-Amz-Signature=deadbeef failed";
        let r = redact(s3);
        assert!(!r.contains("AKIA") && !r.contains("deadbeef"), "{r}");
        assert_eq!(redact("nothing secret"), "nothing secret");
    }

    #[test]
    fn key_pairs_and_sas_parse() {
        assert_eq!(
            key_pair("AKID:secret").expect("pair"),
            ("AKID".into(), "secret".into())
        );
        assert!(key_pair("no-separator").is_err());
        let p = sas_pairs("?sv=2022-11-02&sig=a%2Bb");
        assert_eq!(p[1], ("sig".into(), "a+b".into()));
    }
}
