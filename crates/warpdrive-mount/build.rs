//! Records the git commit for `warpdrive_build_info` (nothing when not built from a checkout).

fn main() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(c) = commit.filter(|c| !c.is_empty()) {
        println!("cargo:rustc-env=WARPDRIVE_GIT_COMMIT={c}");
    }
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs/heads");
}
