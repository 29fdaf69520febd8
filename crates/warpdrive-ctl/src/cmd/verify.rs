//! `warpdrive-ctl verify`: scrubs the cache, checking every cached block's CRC32C, and each
//! fully cached object whole against the checksum its store keeps where one is known; damaged
//! blocks and mismatching objects are dropped (the next read fetches them again) and
//! reported.

use anyhow::Result;
use warpdrive_config::Config;
use warpdrive_control::Target;
use warpdrive_control::api::{VerifyReport, VerifyRequest};
use warpdrive_control::report;

use crate::fmt::size;
use crate::{api, exit};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Every cached block is checked against the CRC32C written with it. A fully cached object whose store keeps a checksum of it (an S3 single-part ETag or a multipart one of a common part size, an Azure Content-MD5, a GCS CRC32C), seen by the daemon when it fetched or revalidated the object, is also hashed whole and compared; the report says how many objects were checked against their store and how many against their own block checksums only (--each lists them).\n\nExit codes: 0 everything sound; 1 damaged blocks or objects that do not match their store's checksum were found (and dropped, so they are fetched again) or the cache could not be read; 2 bad config."
)]
pub struct VerifyArgs {
    /// Only objects under this path (a path under the mount point, wd://BACKEND/PREFIX or
    /// BACKEND/PREFIX).
    path: Option<String>,
    /// List every object and how it was checked: against its store's checksum, or against
    /// its own block checksums only (and why).
    #[arg(long)]
    each: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Config, a: &VerifyArgs) -> Result<u8> {
    let target = Target::resolve(config, a.path.as_deref())?;
    let started = std::time::Instant::now();
    let out: VerifyReport = match api::daemon(config) {
        Some(c) => c.post(
            "/api/v1/verify",
            &VerifyRequest {
                path: a.path.clone(),
                each: a.each,
            },
        )?,
        None => {
            let cache = api::open_cache(config)?;
            report::verify(&cache, &target, a.each)?
        }
    };
    let code = if out.damaged_blocks > 0 || !out.store_mismatched.is_empty() {
        exit::DEGRADED
    } else {
        exit::OK
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(code);
    }
    for o in &out.each {
        println!(
            "{:<18} {}/{}{}",
            o.check,
            o.backend,
            o.key,
            o.store_checksum
                .as_deref()
                .map(|c| format!("  ({c})"))
                .unwrap_or_default()
        );
    }
    for o in &out.store_mismatched {
        println!(
            "mismatch {}/{}: does not match its store's checksum; dropped",
            o.backend, o.key
        );
    }
    for d in &out.damaged {
        println!(
            "damaged  {}/{}: {} blocks dropped",
            d.backend, d.key, d.blocks
        );
    }
    println!(
        "checked {} in {} blocks of {} objects in {:.1} s: {}",
        size(out.bytes as f64),
        out.blocks,
        out.objects,
        started.elapsed().as_secs_f64(),
        if out.damaged_blocks == 0 && out.store_mismatched.is_empty() {
            "all sound".to_string()
        } else {
            format!(
                "{} damaged blocks and {} mismatching objects dropped (they are fetched again when read)",
                out.damaged_blocks,
                out.store_mismatched.len()
            )
        }
    );
    println!(
        "{} objects checked whole against their store's checksum, {} against their own block checksums only",
        out.store_checked, out.self_checked
    );
    Ok(code)
}
