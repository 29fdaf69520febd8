//! Man pages and shell completions for WarpDrive's binaries, from their clap definitions, so
//! the pages say exactly what `--help` says.
//!
//! Algorithm. Each binary calls [`generate_docs_if_asked`] first thing in `main`. When the
//! environment variable [`ENV`] names a directory, the binary writes its pages and completions
//! there instead of running, and exits: `man/NAME.1` and one page per subcommand
//! (`man/warpdrive-ctl-plan-submit.1`), and completions named as each shell looks them up:
//! `bash/NAME`, `zsh/_NAME`, `fish/NAME.fish`. `make package` runs each binary so and packs
//! the results.

use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

/// The variable naming the directory to generate into.
pub const ENV: &str = "WARPDRIVE_GENERATE_DOCS";

/// If [`ENV`] is set: generates `C`'s man pages and completions into it and exits (1 on a
/// failure, with the reason on stderr).
pub fn generate_docs_if_asked<C: CommandFactory>() {
    let Some(dir) = std::env::var_os(ENV) else {
        return;
    };
    let cmd = C::command();
    let name = cmd.get_name().to_string();
    match generate(cmd, Path::new(&dir)) {
        Ok(pages) => {
            eprintln!(
                "{name}: {pages} man pages and 3 completion scripts written under {}",
                Path::new(&dir).display()
            );
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!(
                "{name}: generating docs under {}: {e}",
                Path::new(&dir).display()
            );
            std::process::exit(1);
        }
    }
}

/// Writes `cmd`'s man pages (one per command and subcommand) and completions under `dir`;
/// how many pages.
pub fn generate(cmd: clap::Command, dir: &Path) -> std::io::Result<usize> {
    let mut cmd = cmd;
    cmd.build();
    let man = dir.join("man");
    std::fs::create_dir_all(&man)?;
    let pages = page(&cmd, cmd.get_name(), &man)?;
    let name = cmd.get_name().to_string();
    for (shell, file) in [
        (Shell::Bash, name.clone()),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let sub = dir.join(shell.to_string());
        std::fs::create_dir_all(&sub)?;
        let mut out = std::fs::File::create(sub.join(file))?;
        clap_complete::generate(shell, &mut cmd, &name, &mut out);
    }
    Ok(pages)
}

/// The page of `cmd` as `name`, then of each of its visible subcommands as `name-sub`.
fn page(cmd: &clap::Command, name: &str, dir: &Path) -> std::io::Result<usize> {
    let titled = cmd.clone().name(name.to_string());
    let mut out = Vec::new();
    clap_mangen::Man::new(titled).render(&mut out)?;
    std::fs::write(dir.join(format!("{name}.1")), out)?;
    let mut n = 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        n += page(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small tool with a subcommand tree, as the binaries have.
    #[derive(clap::Parser)]
    #[command(name = "tool", about = "Does things")]
    struct Tool {
        /// The config file.
        #[arg(long)]
        config: Option<String>,
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(clap::Subcommand)]
    enum Cmd {
        /// Plans.
        Plan {
            #[command(subcommand)]
            cmd: PlanCmd,
        },
        /// Internal.
        #[command(hide = true)]
        Secret,
    }

    #[derive(clap::Subcommand)]
    enum PlanCmd {
        /// Sends a plan.
        Submit,
    }

    #[test]
    fn writes_a_page_per_visible_command_and_three_completions() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let pages = generate(Tool::command(), dir.path())?;
        assert_eq!(pages, 3, "tool, tool-plan, tool-plan-submit");
        let top = std::fs::read_to_string(dir.path().join("man/tool.1"))?;
        assert!(top.contains(".TH tool 1"), "{top}");
        assert!(
            top.contains("The config file"),
            "the options' docs are in the page"
        );
        let sub = std::fs::read_to_string(dir.path().join("man/tool-plan-submit.1"))?;
        assert!(sub.contains("Sends a plan"), "{sub}");
        assert!(
            !dir.path().join("man/tool-secret.1").exists(),
            "hidden commands have none"
        );
        for f in ["bash/tool", "zsh/_tool", "fish/tool.fish"] {
            let text = std::fs::read_to_string(dir.path().join(f))?;
            assert!(text.contains("plan"), "{f} completes the subcommands");
        }
        Ok(())
    }
}
