// SPDX-License-Identifier: GPL-2.0

//! `blksnap cleanup` (storage files left by a killed backup) and
//! `blksnap generate` (manual page and shell completions).

use std::path::Path;

use clap::CommandFactory;

use blksnap::ctl::Control;
use blksnap::util::{human_bytes, uuid_to_string};

use crate::{log, Cli, Fail};

/// `cleanup`: the snapshots of killed backups (their run records say so)
/// are destroyed; then storage files whose snapshot is gone are removed,
/// those of a snapshot still alive only with `destroy`, after destroying
/// it.
pub(crate) fn cleanup(dir: &std::path::Path, destroy: bool) -> Result<(), Fail> {
    let ctl = Control::open()?;
    blksnap::runs::reap(&ctl, dir, &log).map_err(|e| Fail(1, e))?;
    let files = blksnap::storage::leftovers(dir).map_err(|e| Fail(1, e))?;
    let snaps = ctl.snapshot_list()?;
    let (mut removed, mut bytes, mut kept) = (0, 0u64, 0);
    let mut destroyed: Vec<blksnap::uapi::BlkSnapUuid> = Vec::new();
    for (path, id8) in &files {
        let owner = snaps
            .iter()
            .find(|s| uuid_to_string(s).starts_with(id8.as_str()));
        if let Some(id) = owner {
            if !destroy {
                kept += 1;
                continue;
            }
            if !destroyed.contains(id) {
                ctl.snapshot_destroy(id)?;
                log(&format!("destroyed snapshot {}", uuid_to_string(id)));
                destroyed.push(*id);
            }
        }
        bytes += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        std::fs::remove_file(path).map_err(|e| Fail(1, format!("{}: {e}", path.display())))?;
        removed += 1;
    }
    println!("removed {removed} storage file(s), {}", human_bytes(bytes));
    if kept > 0 {
        println!(
            "kept {kept} file(s) of snapshots still alive: give --destroy to destroy them (only when no backup is running)"
        );
    }
    Ok(())
}

/// The manual page or the completions of one shell, on standard output;
/// with `dir`, the manual pages of every command, there.
pub(crate) fn generate(what: &str, dir: Option<&Path>) -> Result<(), Fail> {
    use clap_complete::Shell;
    use std::io::Write;
    let mut out = std::io::stdout();
    let mut cmd = Cli::command();
    let shell = match (what, dir) {
        ("man", Some(dir)) => {
            let mut cmd = cmd.disable_help_subcommand(true);
            cmd.build();
            return man_pages(cmd, dir).map_err(|e| {
                Fail(
                    1,
                    format!("writing the manual pages to {}: {e}", dir.display()),
                )
            });
        }
        ("man", None) => {
            return clap_mangen::Man::new(cmd)
                .section("8")
                .render(&mut out)
                .map_err(|e| Fail(1, format!("writing the manual page: {e}")));
        }
        (_, Some(_)) => return Err(Fail(2, "generate: --dir is for man only".into())),
        ("bash", None) => Shell::Bash,
        ("zsh", None) => Shell::Zsh,
        ("fish", None) => Shell::Fish,
        _ => {
            return Err(Fail(
                2,
                format!("generate: {what}: expected man, bash, zsh or fish"),
            ))
        }
    };
    // Into memory first: `generate` panics on a write error.
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "blksnap", &mut buf);
    out.write_all(&buf)
        .map_err(|e| Fail(1, format!("writing the completions: {e}")))
}

/// Writes the page of `cmd` (built) and those of its visible subcommands,
/// in section 8, to `dir`: `blksnap.8`, `blksnap-points.8`, ...
fn man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub.clone(), dir)?;
    }
    let man = clap_mangen::Man::new(cmd).section("8");
    let mut page = Vec::new();
    man.render(&mut page)?;
    std::fs::write(dir.join(man.get_filename()), page)
}
