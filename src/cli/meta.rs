//! Commands about p11ca itself: `version`, `print-defaults`, `completion`, `man`; and the one
//! line a command-line parse error becomes.

use std::ffi::OsString;
use std::path::Path;

use clap::CommandFactory;

use p11ca::{Error, Result};

use super::args::{Cli, Defaults};
use super::write_stdout;

/// `cfssl print-defaults csr` (cli/printdefault/defaults.go in cfssl 1.6; cfssl prints one
/// blank line more).
const DEFAULT_CSR: &str = r#"{
    "CN": "example.net",
    "hosts": [
        "example.net",
        "www.example.net"
    ],
    "key": {
        "algo": "ecdsa",
        "size": 256
    },
    "names": [
        {
            "C": "US",
            "ST": "CA",
            "L": "San Francisco"
        }
    ]
}
"#;

/// `cfssl print-defaults config`, the same way.
const DEFAULT_CONFIG: &str = r#"{
    "signing": {
        "default": {
            "expiry": "168h"
        },
        "profiles": {
            "www": {
                "expiry": "8760h",
                "usages": [
                    "signing",
                    "key encipherment",
                    "server auth"
                ]
            },
            "client": {
                "expiry": "8760h",
                "usages": [
                    "signing",
                    "key encipherment",
                    "client auth"
                ]
            }
        }
    }
}
"#;

/// `p11ca version`: cfssl's `Version:`/`Runtime:` lines, with the Rust compiler and target.
pub(super) fn version() -> Result<()> {
    write_stdout(&format!(
        "Version: {}\nRuntime: {}\nTarget: {}\n",
        env!("CARGO_PKG_VERSION"),
        env!("P11CA_RUSTC_VERSION"),
        env!("P11CA_TARGET"),
    ))
}

/// `p11ca print-defaults csr|config`.
pub(super) fn print_defaults(what: Defaults) -> Result<()> {
    write_stdout(match what {
        Defaults::Csr => DEFAULT_CSR,
        Defaults::Config => DEFAULT_CONFIG,
    })
}

/// `p11ca completion SHELL`.
pub(super) fn completion(shell: clap_complete::Shell) -> Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "p11ca", &mut out);
    write_stdout(&String::from_utf8_lossy(&out))
}

/// `p11ca man DIR`: p11ca.1 and one page per subcommand (p11ca-sign.1, p11ca-key-list.1, …).
pub(super) fn man(dir: &Path) -> Result<()> {
    let fail = |what: &str, e: std::io::Error| {
        Error::output(format!("{}: cannot {what}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| fail("create the folder", e))?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(|e| fail("write the man pages", e))
}

/// A clap parse error as the one line p11ca promises: `p11ca: error: MESSAGE` with clap's
/// "similar" tip, and where to look, e.g. "unexpected argument '--hostnme' found (tip: a
/// similar argument exists: '--hostname'); see 'p11ca sign --help'".
///
/// `args` (as parsed) give the subcommand when clap's message has no usage line.
pub(crate) fn parse_error_line(e: &clap::Error, args: &[OsString]) -> String {
    let text = e.render().to_string();
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // clap renders the whole help here; say in one line what is missing instead.
        let usage = text.lines().find_map(|l| l.trim().strip_prefix("Usage: "));
        let path = command_path(usage);
        return format!(
            "p11ca: error: '{path}' needs a subcommand: {}; see '{path} --help'",
            subcommands_of(&path).join(", ")
        );
    }
    let mut message = Vec::new();
    let mut tips = Vec::new();
    let mut usage = None;
    let mut in_message = true;
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() {
            in_message = false;
        } else if let Some(tip) = t.strip_prefix("tip: ") {
            if tip.contains("similar") {
                tips.push(tip.to_string());
            }
        } else if let Some(u) = t.strip_prefix("Usage: ") {
            usage.get_or_insert(u.to_string());
        } else if in_message {
            message.push(t.strip_prefix("error: ").unwrap_or(t).to_string());
        }
    }
    let mut line = format!("p11ca: error: {}", message.join(" "));
    if !tips.is_empty() {
        line.push_str(&format!(" (tip: {})", tips.join("; ")));
    }
    let path = match usage {
        Some(u) => command_path(Some(&u)),
        None => subcommand_in(args),
    };
    line.push_str(&format!("; see '{path} --help'"));
    line
}

/// The subcommand path named in `args` ("p11ca key show"), skipping what is no subcommand.
fn subcommand_in(args: &[OsString]) -> String {
    let mut cmd = Cli::command();
    cmd.build();
    let mut at = &cmd;
    let mut path = vec!["p11ca".to_string()];
    for a in args.iter().skip(1).filter_map(|a| a.to_str()) {
        if let Some(sc) = at.find_subcommand(a) {
            path.push(sc.get_name().to_string());
            at = sc;
        }
    }
    path.join(" ")
}

/// The names of the subcommands of `path` ("p11ca key" gives "list, show").
fn subcommands_of(path: &str) -> Vec<String> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut at = &cmd;
    for word in path.split_whitespace().skip(1) {
        match at.find_subcommand(word) {
            Some(sc) => at = sc,
            None => break,
        }
    }
    at.get_subcommands()
        .map(|sc| sc.get_name().to_string())
        .filter(|n| n != "help")
        .collect()
}

/// The command in a usage line ("p11ca key show [OPTIONS] <URI>" gives "p11ca key show").
fn command_path(usage: Option<&str>) -> String {
    let words: Vec<&str> = usage
        .unwrap_or("p11ca")
        .split_whitespace()
        .take_while(|w| !w.starts_with(['[', '<', '-']))
        .collect();
    if words.is_empty() {
        "p11ca".into()
    } else {
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn line(args: &[&str]) -> String {
        let args = super::super::args::cfssl_style(args.iter().map(Into::into));
        parse_error_line(&Cli::try_parse_from(&args).unwrap_err(), &args)
    }

    #[test]
    fn parse_errors_are_one_line() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "unknown flag with a suggestion",
                &["p11ca", "sign", "--hostnme", "x"],
                &[
                    "unexpected argument '--hostnme' found",
                    "'--hostname'",
                    "'p11ca sign --help'",
                ],
            ),
            (
                "missing required argument",
                &["p11ca", "gencert", "-initca"],
                &[
                    "required arguments were not provided: <CSR_JSON>",
                    "p11ca gencert --help",
                ],
            ),
            (
                "missing subcommand",
                &["p11ca", "key"],
                &["p11ca key --help"],
            ),
            ("no subcommand at all", &["p11ca"], &["see 'p11ca --help'"]),
            (
                "bad value",
                &["p11ca", "completion", "tcsh"],
                &["invalid value 'tcsh'", "'p11ca completion --help'"],
            ),
            (
                "global flag removed",
                &["p11ca", "--pin", "1", "key", "list"],
                &["unexpected argument '--pin'"],
            ),
        ];
        for (name, args, wants) in cases {
            let l = line(args);
            assert!(l.starts_with("p11ca: error: "), "{name}: {l}");
            assert!(!l.contains('\n'), "{name}: {l}");
            for w in *wants {
                assert!(l.contains(w), "{name}: {l:?} lacks {w:?}");
            }
        }
    }

    #[test]
    fn defaults_are_valid_json() {
        for text in [DEFAULT_CSR, DEFAULT_CONFIG] {
            serde_json::from_str::<serde_json::Value>(text).unwrap();
        }
    }
}
