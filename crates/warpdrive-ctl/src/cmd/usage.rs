//! `warpdrive-ctl usage`: cache bytes and object counts per backend or per directory prefix,
//! largest first (from the daemon when it runs, else from the index read-only).

use anyhow::Result;
use warpdrive_config::Config;
use warpdrive_control::Target;
use warpdrive_control::api::{Usage, UsageBy};
use warpdrive_control::client::query;
use warpdrive_control::report;

use crate::fmt::size;
use crate::{api, exit};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    /// One row per backend.
    Backend,
    /// One row per directory prefix, `--depth` levels below PATH.
    Path,
    /// One row per team with a quota (`quota set`), with its quota, and one for data of no
    /// team.
    Team,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 shown; 1 the index cannot be read or PATH names no backend; 2 bad config."
)]
pub struct UsageArgs {
    /// Group by backend or by directory prefix.
    #[arg(long, value_enum, default_value = "backend")]
    by: By,
    /// With `--by path`: how many directory levels below PATH to group by.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Only objects under this path (a path under the mount point, wd://BACKEND/PREFIX or
    /// BACKEND/PREFIX).
    path: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Config, a: &UsageArgs) -> Result<u8> {
    let target = Target::resolve(config, a.path.as_deref())?;
    let by = match a.by {
        By::Backend => UsageBy::Backend,
        By::Path => UsageBy::Path,
        By::Team => UsageBy::Team,
    };
    let out: Usage = match api::daemon(config) {
        Some(c) => c.get(&format!(
            "/api/v1/usage{}",
            query(&[
                ("by", Some(format!("{:?}", by).to_lowercase())),
                ("depth", Some(a.depth.to_string())),
                ("path", a.path.clone()),
            ])
        ))?,
        None => {
            let dir = &config.cache.dir;
            let objects = api::local_objects(dir)?;
            let quotas = warpdrive_control::quotas::load(dir)?;
            report::usage(&objects, &target, by, a.depth, &quotas)
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(exit::OK);
    }
    if by == UsageBy::Team {
        println!(
            "{:>12} {:>12} {:>6} {:>9}  team",
            "bytes", "quota", "used", "objects"
        );
        for r in &out.rows {
            let (quota, share) = match r.quota_bytes {
                Some(q) => (
                    size(q as f64),
                    format!("{:.0}%", r.bytes as f64 * 100.0 / q.max(1) as f64),
                ),
                None => ("-".into(), "-".into()),
            };
            println!(
                "{:>12} {:>12} {:>6} {:>9}  {}",
                size(r.bytes as f64),
                quota,
                share,
                r.objects,
                r.name
            );
        }
    } else {
        println!("{:>12} {:>9}  where", "bytes", "objects");
        for r in &out.rows {
            println!("{:>12} {:>9}  {}", size(r.bytes as f64), r.objects, r.name);
        }
    }
    println!(
        "{:>12} {:>9}  total",
        size(out.total_bytes as f64),
        out.total_objects
    );
    Ok(exit::OK)
}
