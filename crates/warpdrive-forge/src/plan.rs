//! `train --plan JOB`: forge hands the WarpDrive daemon the order it will read in, as a
//! loader that knows its seed can.
//!
//! The order of epoch `e` is a pure function of the seed ([`permutation`]), so forge knows it
//! before reading. When the run starts, and each time its furthest lane enters a new epoch,
//! it submits that epoch's order followed by the next epoch's as the plan of `JOB` (rank
//! `--plan-rank`, epoch `e`): the daemon then fetches each file before a lane opens it, and the
//! end of one epoch is fetched ahead into the start of the next. The plan goes to the
//! daemon's control socket (`--plan-socket`, or `WARPDRIVE_SOCKET`) as one HTTP/1.1 request,
//! with the standard library and `serde_json` only. A plan is an optimisation: if the daemon
//! refuses it or cannot be reached, forge says so once on stderr and trains without one.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand::seq::SliceRandom;

/// The order of the `n` items in epoch `epoch` of a run seeded `seed`.
pub fn permutation(seed: u64, n: usize, epoch: u64) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..n).collect();
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    perm.shuffle(&mut rng);
    perm
}

/// Where and as what the plans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanTarget {
    pub socket: PathBuf,
    pub job: String,
    pub rank: u32,
}

/// Submits plans for one run.
#[derive(Debug)]
pub struct Planner {
    target: PlanTarget,
    /// Every item's absolute path, as the daemon's mount point sees it.
    paths: Vec<String>,
    seed: u64,
}

impl Planner {
    pub fn new(target: PlanTarget, paths: &[PathBuf], seed: u64) -> Result<Planner> {
        let paths = paths
            .iter()
            .map(|p| {
                let abs =
                    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))?;
                abs.to_str()
                    .map(str::to_string)
                    .with_context(|| format!("{} is not UTF-8", abs.display()))
            })
            .collect::<Result<Vec<String>>>()?;
        Ok(Planner {
            target,
            paths,
            seed,
        })
    }

    /// Submits epoch `epoch`'s order followed by the next epoch's.
    pub fn submit(&self, epoch: u64) -> Result<()> {
        let n = self.paths.len();
        let entries: Vec<serde_json::Value> = [epoch, epoch + 1]
            .iter()
            .flat_map(|e| permutation(self.seed, n, *e))
            .map(|i| serde_json::json!({ "path": self.paths[i] }))
            .collect();
        let body = serde_json::json!({
            "job": self.target.job,
            "rank": self.target.rank,
            "epoch": epoch,
            "entries": entries,
        });
        let (status, answer) = post(
            &self.target.socket,
            "/api/v1/plans",
            &serde_json::to_vec(&body)?,
        )?;
        if !(200..300).contains(&status) {
            let reason = serde_json::from_slice::<serde_json::Value>(&answer)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&answer).into_owned());
            bail!("the daemon refused the plan ({status}): {reason}");
        }
        Ok(())
    }
}

/// One `POST` to the HTTP server on the Unix socket `socket`; (status, body).
fn post(socket: &Path, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to the daemon's socket {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.set_write_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the daemon's answer has no header end")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("the daemon's answer has no status")?;
    let mut answer = raw[split + 4..].to_vec();
    if head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"))
    {
        answer = dechunk(&answer);
    }
    Ok((status, answer))
}

/// The body of a chunked HTTP/1.1 answer.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epochs_order_is_a_function_of_the_seed() {
        let a = permutation(42, 100, 3);
        assert_eq!(a, permutation(42, 100, 3));
        assert_ne!(a, permutation(42, 100, 4), "each epoch reshuffles");
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn chunked_answers_are_joined() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            b"hello world"
        );
    }
}
