//! `warpdrive-ctl verify`: scrubs the cache, checking every cached block's CRC32C; damaged
//! blocks are dropped (the next read fetches them again) and reported.

use anyhow::Result;
use warpdrive_config::Config;
use warpdrive_control::Target;
use warpdrive_control::api::{VerifyReport, VerifyRequest};
use warpdrive_control::report;

use crate::fmt::size;
use crate::{api, exit};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 every block sound; 1 damaged blocks were found (and dropped, so they are fetched again) or the cache could not be read; 2 bad config."
)]
pub struct VerifyArgs {
    /// Only objects under this path (a path under the mount point, wd://BACKEND/PREFIX or
    /// BACKEND/PREFIX).
    path: Option<String>,
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
            },
        )?,
        None => {
            let cache = api::open_cache(config)?;
            report::verify(&cache, &target)?
        }
    };
    let code = if out.damaged_blocks > 0 {
        exit::DEGRADED
    } else {
        exit::OK
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(code);
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
        if out.damaged_blocks == 0 {
            "all sound".to_string()
        } else {
            format!(
                "{} damaged blocks dropped (they are fetched again when read)",
                out.damaged_blocks
            )
        }
    );
    Ok(code)
}
