// SPDX-License-Identifier: GPL-2.0

//! `blksnap`: command-line control of the blksnap kernel module.

use std::process::ExitCode;

use blksnap::ctl::Control;

const USAGE: &str = "\
usage: blksnap <command> [options]

Commands:
  version     print the version of the loaded blksnap module
  help        print this text

Options:
  --json      machine-readable output
";

/// Exit codes: 0 success, 1 the operation failed, 2 bad usage.
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let words: Vec<&str> = args.iter().map(String::as_str).filter(|a| *a != "--json").collect();
    match words.as_slice() {
        ["version"] => match Control::open().and_then(|c| c.version()) {
            Ok(v) if json => {
                println!(
                    "{{\"major\":{},\"minor\":{},\"revision\":{},\"build\":{}}}",
                    v.major, v.minor, v.revision, v.build
                );
                ExitCode::SUCCESS
            }
            Ok(v) => {
                println!("blksnap {v}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("blksnap: {e}");
                ExitCode::from(1)
            }
        },
        ["help"] | ["--help"] | ["-h"] => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        [] => {
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
        [cmd, ..] => {
            eprintln!("blksnap: unknown command '{cmd}' (see `blksnap help`)");
            ExitCode::from(2)
        }
    }
}
