//! `warpdrive-testkit`: starts local emulators with sample data for the demo and for manual
//! experiments, writes a WarpDrive config pointing at them, and keeps them running until it is
//! stopped (Ctrl-C or SIGTERM).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use warpdrive_testkit::{
    CANADA_CENTRAL, Emulator, Imds, Kind, Link, Tls, WEST_US_3, WanProxy, shard_files,
    upload_files, upload_many,
};

#[derive(Debug, Parser)]
#[command(name = "warpdrive-testkit", version)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start two Azurite "regions" behind WAN simulators and one moto S3 server on free
    /// loopback ports, upload the shards in `--shards-dir` (even-numbered ones to Canada
    /// Central, odd ones to West US 3, as in the seed), write a WarpDrive config to
    /// `--config-out` (with a shared tier: a container behind an in-region link), and one for
    /// a second node with `--node2-config-out`, and wait until stopped (Ctrl-C or SIGTERM).
    Demo(DemoArgs),
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Where to write the generated WarpDrive config.
    #[arg(long)]
    config_out: PathBuf,
    /// The mount point the config names.
    #[arg(long, default_value = "/wd")]
    mount_point: PathBuf,
    /// The cache directory the config names.
    #[arg(long, default_value = "/tmp/warpdrive-demo-cache")]
    cache_dir: PathBuf,
    /// The shards to upload (`*.tar`, from `warpdrive-forge gen` or `pack`).
    #[arg(long)]
    shards_dir: PathBuf,
    /// The link to Canada Central, DELAY,RATE (default: 1 ms each way, 32 MB/s).
    #[arg(long, value_parser = Link::parse)]
    link_cac: Option<Link>,
    /// The link to West US 3, DELAY,RATE (default: 30 ms each way, 16 MB/s).
    #[arg(long, value_parser = Link::parse)]
    link_wus3: Option<Link>,
    /// No WAN simulator: the mount talks to the emulators directly.
    #[arg(long)]
    no_wan: bool,
    /// Write what was started (links, shards per region) as JSON to FILE.
    #[arg(long)]
    info_out: Option<PathBuf>,
    /// The link to the shared tier, DELAY,RATE (default: 1 ms each way, 128 MB/s: in the
    /// cluster's region, faster than either cross-region link).
    #[arg(long, value_parser = Link::parse)]
    link_tier: Option<Link>,
    /// Also write a config for a second node (its own mount point and cache, the same
    /// backends and shared tier).
    #[arg(long, requires_all = ["node2_mount_point", "node2_cache_dir"])]
    node2_config_out: Option<PathBuf>,
    #[arg(long)]
    node2_mount_point: Option<PathBuf>,
    #[arg(long)]
    node2_cache_dir: Option<PathBuf>,
}

/// The shared tier's default link: a store in the GPUs' own region, a few times faster than
/// the cross-region links (issue 17's showcase).
const TIER: Link = Link {
    one_way_delay: std::time::Duration::from_millis(1),
    bandwidth: Some(128_000_000),
};

fn main() -> Result<()> {
    let args = Args::parse();
    match args.cmd {
        Cmd::Demo(a) => demo(a),
    }
}

fn demo(a: DemoArgs) -> Result<()> {
    let shards = shard_files(&a.shards_dir)?;
    let rt = tokio::runtime::Runtime::new()?;
    eprintln!("starting emulators: Azurite (canada-central), Azurite (west-us-3), moto (S3)...");
    let mut cac = Emulator::start(Kind::Azurite).context("starting Azurite for canada-central")?;
    let mut wus3 = Emulator::start(Kind::Azurite).context("starting Azurite for west-us-3")?;
    let s3 = Emulator::start(Kind::Moto).context("starting moto")?;
    cac.create_bucket("datasets")?;
    // The shared tier: a container of the Canada Central account, reached through its own
    // in-region link.
    cac.create_bucket("fleet")?;
    wus3.create_bucket("datasets")?;
    s3.create_bucket("archive")?;

    let b_cac = cac.backend("datasets-cac", "datasets", "");
    let b_wus3 = wus3.backend("datasets-wus3", "datasets", "");
    let b_s3 = s3.backend("s3-archive", "archive", "imagenet/");
    let (even, odd): (Vec<_>, Vec<_>) = shards
        .iter()
        .map(|(n, p)| (*n, format!("train/shard-{n:06}.tar"), p.clone()))
        .partition(|(n, _, _)| n % 2 == 0);
    let strip = |v: Vec<(u32, String, PathBuf)>| -> Vec<(String, PathBuf)> {
        v.into_iter().map(|(_, k, p)| (k, p)).collect()
    };
    let (n_even, n_odd) = (even.len(), odd.len());
    eprintln!("uploading {n_even} shards to canada-central and {n_odd} to west-us-3...");
    rt.block_on(async {
        upload_files(&b_cac, strip(even), 4).await?;
        upload_files(&b_wus3, strip(odd), 4).await?;
        upload_files(
            &b_s3,
            vec![("val/shard-000000.tar".to_string(), shards[0].1.clone())],
            1,
        )
        .await?;
        upload_many(
            &b_s3,
            vec![(
                "val/labels.txt".to_string(),
                b"0 through 9: the generated classes\n".to_vec(),
            )],
            1,
        )
        .await
    })?;

    // Seeded over HTTP with the emulator key; from now on the Azurites serve HTTPS and accept
    // only tokens, which WarpDrive gets from the instance-metadata emulator: the demo
    // authenticates with managed identity and no key appears in its config.
    let tls = Tls::generate().context("generating the emulators' TLS certificate")?;
    cac.restart_tls_oauth(&tls)?;
    wus3.restart_tls_oauth(&tls)?;
    let imds =
        Imds::start(std::time::Duration::from_secs(600)).context("starting the IMDS emulator")?;
    // The WAN simulators: the mount reaches each region through its own link.
    let links = [
        (
            "datasets-cac",
            "canada-central",
            a.link_cac.unwrap_or(CANADA_CENTRAL),
        ),
        (
            "datasets-wus3",
            "west-us-3",
            a.link_wus3.unwrap_or(WEST_US_3),
        ),
    ];
    let mut proxies = Vec::new();
    let mut endpoints = Vec::new();
    for ((_, _, link), emu) in links.iter().zip([&cac, &wus3]) {
        if a.no_wan {
            endpoints.push(emu.endpoint());
        } else {
            let p = WanProxy::start(emu.port, *link).context("starting the WAN simulator")?;
            endpoints.push(emu.endpoint_via(p.port));
            proxies.push(p);
        }
    }
    let tier_link = a.link_tier.unwrap_or(TIER);
    let tier_endpoint = if a.no_wan {
        cac.endpoint()
    } else {
        let p = WanProxy::start(cac.port, tier_link).context("starting the tier's link")?;
        let e = cac.endpoint_via(p.port);
        proxies.push(p);
        e
    };
    let dataset_bytes: u64 = shards
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    // Room for the whole dataset (plus the index and a margin) whatever the scale, and a
    // fixed free-space floor, so a host disk that other work has mostly filled still caches.
    let cache_gib = (dataset_bytes + dataset_bytes / 4).div_ceil(1 << 30).max(1);
    if let Some(path) = &a.info_out {
        let info = serde_json::json!({
            "wan": !a.no_wan,
            "links": links.iter().map(|(backend, region, l)| serde_json::json!({
                "backend": backend,
                "region": region,
                "one_way_delay_ms": l.one_way_delay.as_secs_f64() * 1e3,
                "bandwidth_bytes_per_sec": l.bandwidth,
            })).collect::<Vec<_>>(),
            "tier_link": {
                "one_way_delay_ms": tier_link.one_way_delay.as_secs_f64() * 1e3,
                "bandwidth_bytes_per_sec": tier_link.bandwidth,
            },
            "shards": { "datasets-cac": n_even, "datasets-wus3": n_odd },
            "dataset_bytes": dataset_bytes,
        });
        std::fs::write(path, serde_json::to_string_pretty(&info)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let yaml = |mp: &std::path::Path, cache: &std::path::Path| -> Result<String> {
        Ok(format!(
            "# Generated by `warpdrive-testkit demo`: local emulators standing in for two Azure\n\
         # regions and one S3 bucket, and an instance-metadata emulator standing in for the\n\
         # VM's identity. No secrets: every backend uses managed identity; the Azurites serve\n\
         # HTTPS with a certificate made for this run (ca_file) and accept only tokens.\n\
         mount_point: {mp}\n\
         cache: {{ dir: {cache}, max_size: {cache_gib}GiB, min_free: 1GiB }}\n\
         metrics: {{ listen: 127.0.0.1:{metrics_port} }}\n\
         metadata_ttl: 60s\n\
         backends:\n\
         \x20 - name: datasets-cac\n\
         \x20   azure: {{ account: devstoreaccount1, container: datasets, endpoint: \"{e1}\" }}\n\
         \x20   auth: {{ mode: managed_identity, endpoint: \"{azure_imds}\" }}\n\
         \x20   ca_file: {ca}\n\
         \x20 - name: datasets-wus3\n\
         \x20   azure: {{ account: devstoreaccount1, container: datasets, endpoint: \"{e2}\" }}\n\
         \x20   auth: {{ mode: managed_identity, endpoint: \"{azure_imds}\" }}\n\
         \x20   ca_file: {ca}\n\
         \x20 - name: s3-archive\n\
         \x20   s3: {{ bucket: archive, region: us-east-1, prefix: imagenet/, endpoint: \"{e3}\" }}\n\
         \x20   auth: {{ mode: managed_identity, endpoint: \"{aws_imds}\" }}\n\
         # The fleet tier: chunks every node shares, in a container in the cluster's region.\n\
         shared_cache:\n\
         \x20 azure: {{ account: devstoreaccount1, container: fleet, endpoint: \"{et}\" }}\n\
         \x20 auth: {{ mode: managed_identity, endpoint: \"{azure_imds}\" }}\n\
         \x20 ca_file: {ca}\n\
         \x20 backends: [datasets-cac, datasets-wus3]\n",
            azure_imds = imds.azure_endpoint(),
            aws_imds = imds.base(),
            ca = tls.ca.display(),
            mp = mp.display(),
            cache = cache.display(),
            e1 = endpoints[0],
            e2 = endpoints[1],
            e3 = s3.endpoint(),
            et = tier_endpoint,
            metrics_port = warpdrive_testkit::free_port()?,
        ))
    };
    std::fs::write(&a.config_out, yaml(&a.mount_point, &a.cache_dir)?)
        .with_context(|| format!("writing {}", a.config_out.display()))?;
    if let (Some(out), Some(mp), Some(cache)) = (
        &a.node2_config_out,
        &a.node2_mount_point,
        &a.node2_cache_dir,
    ) {
        std::fs::write(out, yaml(mp, cache)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    for ((backend, region, link), _) in links.iter().zip(&endpoints) {
        if a.no_wan {
            eprintln!("{backend} ({region}): direct, no WAN simulator");
        } else {
            eprintln!("{backend} ({region}): through the WAN simulator, {link}");
        }
    }
    if !a.no_wan {
        eprintln!("shared tier (fleet): through its in-region link, {tier_link}");
    }
    println!("ready: config written to {}", a.config_out.display());
    eprintln!("emulators are running; stop with Ctrl-C or SIGTERM");
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok::<_, anyhow::Error>(())
    })?;
    drop((proxies, cac, wus3, s3, imds, tls));
    Ok(())
}
