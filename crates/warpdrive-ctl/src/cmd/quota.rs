//! `warpdrive-ctl quota`: per-team cache quotas over path prefixes.
//!
//! The daemon enforces them as blocks are cached: a team at its quota evicts its own least
//! recently used data first, and no team's reads evict another team's data while that team
//! is within its quota. Quotas are kept in `quotas.json` in the cache directory, so they
//! survive restarts; with a daemon running they change through it and apply at once.

use anyhow::{Result, bail};
use warpdrive_config::Config;
use warpdrive_control::api::{QuotaSet, QuotaUse};
use warpdrive_control::quotas;

use crate::fmt::size;
use crate::{api, exit};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 done; 1 bad input (an overlapping path, an unknown team, a bad size) or the change could not be saved; 2 bad config."
)]
pub struct QuotaArgs {
    #[command(subcommand)]
    cmd: QuotaCmd,
}

#[derive(Debug, clap::Subcommand)]
enum QuotaCmd {
    /// Sets (or replaces) TEAM's quota over one or more directories.
    Set {
        team: String,
        /// A directory the team owns (repeat for several): a path under the mount point,
        /// wd://BACKEND/PREFIX or BACKEND/PREFIX. A directory belongs to one team only.
        #[arg(long = "path", required = true)]
        paths: Vec<String>,
        /// The most cache the team may use, e.g. 200GiB.
        #[arg(long)]
        max: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Lists every team's quota, paths and current use.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Removes TEAM's quota (its data stays cached, as data of no team).
    Rm {
        team: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn print(list: &[QuotaUse], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(list)?);
        return Ok(());
    }
    println!(
        "{:<16} {:>12} {:>12} {:>6} {:>9}  paths",
        "team", "quota", "used", "used", "objects"
    );
    for q in list {
        let paths: Vec<String> = q
            .paths
            .iter()
            .map(|p| format!("{}/{}", p.backend, p.prefix))
            .collect();
        println!(
            "{:<16} {:>12} {:>12} {:>5.0}% {:>9}  {}",
            q.team,
            size(q.max_bytes as f64),
            size(q.used_bytes as f64),
            q.used_bytes as f64 * 100.0 / q.max_bytes.max(1) as f64,
            q.objects,
            paths.join(", ")
        );
    }
    Ok(())
}

/// The list as it stands without a daemon: the saved quotas, use from the index.
fn local_use(config: &Config, list: &[warpdrive_cache::Quota]) -> Result<Vec<QuotaUse>> {
    let dir = &config.cache.dir;
    let objects = api::local_objects(dir)?;
    Ok(quotas::use_of(list, &objects))
}

pub fn run(config: &Config, a: &QuotaArgs) -> Result<u8> {
    let daemon = api::daemon(config);
    let dir = &config.cache.dir;
    match &a.cmd {
        QuotaCmd::Set {
            team,
            paths,
            max,
            json,
        } => {
            let set = QuotaSet {
                paths: paths.clone(),
                max: max.clone(),
            };
            let list = match daemon {
                Some(c) => c.put(&format!("/api/v1/quotas/{}", encode(team)), &set)?,
                None => {
                    let q = quotas::resolve(config, team, &set)?;
                    let list = quotas::with(&quotas::load(dir)?, q)?;
                    std::fs::create_dir_all(dir)?;
                    quotas::save(dir, &list)?;
                    local_use(config, &list)?
                }
            };
            print(&list, *json)?;
        }
        QuotaCmd::List { json } => {
            let list = match daemon {
                Some(c) => c.get("/api/v1/quotas")?,
                None => local_use(config, &quotas::load(dir)?)?,
            };
            print(&list, *json)?;
        }
        QuotaCmd::Rm { team, json } => {
            let list = match daemon {
                Some(c) => c.delete(&format!("/api/v1/quotas/{}", encode(team)))?,
                None => {
                    let mut list = quotas::load(dir)?;
                    let before = list.len();
                    list.retain(|q| &q.team != team);
                    if list.len() == before {
                        bail!("no quota for team {team}");
                    }
                    quotas::save(dir, &list)?;
                    local_use(config, &list)?
                }
            };
            print(&list, *json)?;
        }
    }
    Ok(exit::OK)
}

/// A team name as one URL path segment.
fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
