//! The bearer token of TCP listeners: from a file only its owner can read, from the
//! environment, or generated once into the cache directory.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rand::RngCore;

/// The environment variable a token may come from.
pub const TOKEN_ENV: &str = "WARPDRIVE_TOKEN";

/// Where a generated token is kept: beside the cache (whose directory is 0700).
pub fn generated_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("control.token")
}

/// Reads a token file, refusing one other users could read.
pub fn read_file(path: &Path) -> Result<String> {
    let md = std::fs::metadata(path)
        .with_context(|| format!("token file {}: cannot read it", path.display()))?;
    if md.mode() & 0o077 != 0 {
        bail!(
            "token file {} is readable by other users (mode {:o}); run `chmod 600 {}`",
            path.display(),
            md.mode() & 0o777,
            path.display()
        );
    }
    let t = std::fs::read_to_string(path)
        .with_context(|| format!("token file {}: cannot read it", path.display()))?;
    let t = t.trim().to_string();
    if t.len() < 16 {
        bail!(
            "token file {} holds a token of {} characters; use at least 16 (e.g. `openssl rand -hex 32`)",
            path.display(),
            t.len()
        );
    }
    Ok(t)
}

/// How the token was found, for the start-up message (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Env,
    Generated(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "token from {}", p.display()),
            Source::Env => write!(f, "token from ${TOKEN_ENV}"),
            Source::Generated(p) => write!(f, "token generated into {}", p.display()),
        }
    }
}

/// The token: `file` if given, else `$WARPDRIVE_TOKEN`, else the one generated into the
/// cache directory (created now if missing, mode 0600).
pub fn load(file: Option<&Path>, cache_dir: &Path) -> Result<(String, Source)> {
    if let Some(f) = file {
        return Ok((read_file(f)?, Source::File(f.to_path_buf())));
    }
    if let Ok(t) = std::env::var(TOKEN_ENV)
        && !t.trim().is_empty()
    {
        if t.trim().len() < 16 {
            bail!("${TOKEN_ENV} holds fewer than 16 characters; use a longer token");
        }
        return Ok((t.trim().to_string(), Source::Env));
    }
    let path = generated_path(cache_dir);
    if path.exists() {
        return Ok((read_file(&path)?, Source::Generated(path)));
    }
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("creating {}", cache_dir.display()))?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing a new token to {}", path.display()))?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok((token, Source::Generated(path)))
}
