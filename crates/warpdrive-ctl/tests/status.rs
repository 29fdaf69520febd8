//! `warpdrive-ctl status` against a live mount over a real emulator and an unreachable
//! backend.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use warpdrive_fs::mountinfo::{MountState, mount_state};
use warpdrive_testkit::{Emulator, Kind, free_port};

const CTL: &str = env!("CARGO_BIN_EXE_warpdrive-ctl");

/// The daemon binary, built beside this one (`make test` builds all binaries first).
fn mount_bin() -> PathBuf {
    let p = PathBuf::from(CTL).with_file_name("warpdrive-mount");
    assert!(
        p.exists(),
        "{} missing: run `cargo build --bins` first",
        p.display()
    );
    p
}

fn status(cfg: &std::path::Path) -> (i32, serde_json::Value, String) {
    let out = Command::new(CTL)
        .arg("--config")
        .arg(cfg)
        .args(["status", "--json", "--timeout", "3s"])
        .output()
        .expect("run");
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let text = Command::new(CTL)
        .arg("--config")
        .arg(cfg)
        .arg("status")
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&text.stdout).into_owned(),
    )
}

#[test]
fn status_reports_mount_and_backends() {
    let s3 = Emulator::start(Kind::Moto).expect("moto");
    s3.create_bucket("bkt").expect("bucket");
    let dead_port = free_port().expect("port");
    let dir = tempfile::tempdir().expect("tempdir");
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).expect("mkdir");
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "mount_point: {}\ncache: {{ dir: {} }}\nbackends:\n  - name: up\n    s3: {{ bucket: bkt, endpoint: \"{}\" }}\n    auth: emulator\n  - name: down\n    s3: {{ bucket: bkt, endpoint: \"http://127.0.0.1:{dead_port}\" }}\n    auth: emulator\n",
            mp.display(),
            dir.path().join("cache").display(),
            s3.endpoint()
        ),
    )
    .expect("config");

    let (code, v, text) = status(&cfg);
    assert_eq!(code, 1, "not mounted and one backend down: {v}");
    assert_eq!(v["mounted"], false);
    assert_eq!(v["backends"][0]["name"], "up");
    assert_eq!(v["backends"][0]["reachable"], true, "{v}");
    assert_eq!(v["backends"][1]["reachable"], false);
    assert!(
        v["backends"][1]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{v}"
    );
    assert!(
        text.contains("not mounted") && text.contains("ERROR") && text.contains("reachable"),
        "{text}"
    );

    let mut daemon = Command::new(mount_bin())
        .arg("--config")
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    let start = Instant::now();
    while mount_state(&mp) != MountState::Live {
        assert!(start.elapsed() < Duration::from_secs(20), "not mounted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, v, text) = status(&cfg);
    assert_eq!(v["mounted"], true, "{v}");
    assert_eq!(v["mount"], "mounted");
    assert_eq!(v["config"]["backends"][0]["name"], "up");
    assert!(
        text.contains(&format!("{}  mounted", mp.display())),
        "{text}"
    );
    // A probe: the mount only, no backend asked, so the one that is down does not count.
    let probe = Command::new(CTL)
        .arg("--config")
        .arg(&cfg)
        .args(["status", "--wait", "0", "--mount-only", "--json"])
        .output()
        .expect("run");
    let pv: serde_json::Value = serde_json::from_slice(&probe.stdout).expect("JSON");
    assert_eq!(probe.status.code(), Some(0), "{pv}");
    assert_eq!(pv["backends_probed"], false, "{pv}");
    assert_eq!(pv["backends"].as_array().map(Vec::len), Some(0), "{pv}");
    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    daemon.wait().expect("wait");
    assert_eq!(mount_state(&mp), MountState::NotMounted);

    let out = Command::new(CTL)
        .args(["--config", "/nonexistent.yaml", "status"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}
