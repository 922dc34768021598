//! The command line itself: one-line parse errors, cfssl's spellings, token options only where
//! a token is used, `version`, `print-defaults` (checked against cfssl), completions, man
//! pages, and the warnings about CSR JSON fields and hosts.

use crate::util::{PIN, Token, require, run, sh};

/// The subcommands every generated artefact must cover (`help` aside).
const SUBCOMMANDS: &[&str] = &[
    "gencert",
    "sign",
    "certinfo",
    "json",
    "token",
    "key",
    "serve",
    "certs",
    "version",
    "print-defaults",
    "completion",
    "man",
];

#[test]
fn every_parse_error_is_one_line() {
    let t = Token::new("cli");
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "unknown flag, with clap's suggestion",
            &["sign", "--hostnme", "x.csr"],
            "unexpected argument '--hostnme' found (tip: a similar argument exists: '--hostname'); see 'p11ca sign --help'",
        ),
        (
            "no PIN flag",
            &["--pin", PIN, "key", "list"],
            "unexpected argument '--pin'",
        ),
        (
            "no subcommand",
            &[],
            "'p11ca' needs a subcommand: gencert, sign, certinfo",
        ),
        (
            "no nested subcommand",
            &["key"],
            "'p11ca key' needs a subcommand: list, show, attest; see 'p11ca key --help'",
        ),
        (
            "missing argument",
            &["gencert", "-initca"],
            "the following required arguments were not provided: <CSR_JSON>...; see 'p11ca gencert --help'",
        ),
        (
            "bad value",
            &["completion", "tcsh"],
            "invalid value 'tcsh' for '<SHELL>'",
        ),
        (
            "not a Go boolean",
            &["gencert", "-initca=yes", "ca.json"],
            "unexpected value 'yes' for '--initca'",
        ),
        (
            "token option on a command without a token",
            &["certinfo", "--token", "cli", "--cert", "x.pem"],
            "unexpected argument '--token' found",
        ),
        (
            "conflicting options",
            &["sign", "-csr", "a.csr", "--batch", "csrs"],
            "cannot be used with",
        ),
        (
            "unknown subcommand",
            &["gencrt"],
            "unrecognized subcommand 'gencrt'",
        ),
    ];
    for (name, args, needle) in cases {
        eprintln!("case: {name}");
        t.run(args).fails(1, needle);
    }
}

#[test]
fn help_and_version_print_as_before() {
    let t = Token::new("cli");
    let cases: &[(&str, &[&str], &str)] = &[
        ("top help", &["--help"], "Usage: p11ca [OPTIONS] <COMMAND>"),
        ("subcommand help", &["sign", "--help"], "Usage: p11ca sign"),
        ("help subcommand", &["help", "key"], "Usage: p11ca key"),
        ("version flag", &["--version"], "p11ca 0.1.0"),
    ];
    for (name, args, needle) in cases {
        let r = t.run(args);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        assert!(r.stdout.contains(needle), "{name}: {}", r.stdout);
        assert!(r.stderr.is_empty(), "{name}: {}", r.stderr);
    }
}

#[test]
fn token_options_show_only_where_a_token_is_used() {
    let t = Token::new("cli");
    let cases: &[(&str, &[&str], bool)] = &[
        ("top level (before any subcommand)", &[], true),
        ("gencert", &["gencert"], true),
        ("sign", &["sign"], true),
        ("serve", &["serve"], true),
        ("token list", &["token", "list"], true),
        ("key list", &["key", "list"], true),
        ("key show", &["key", "show"], true),
        ("certinfo", &["certinfo"], false),
        ("json", &["json"], false),
        ("certs list", &["certs", "list"], false),
        ("certs show", &["certs", "show"], false),
        ("version", &["version"], false),
        ("print-defaults", &["print-defaults"], false),
        ("completion", &["completion"], false),
        ("man", &["man"], false),
    ];
    for (name, args, shown) in cases {
        let mut argv = args.to_vec();
        argv.push("--help");
        // P11CA_TOKEN is set (to "cli"): never shown as a value, never as required.
        let r = t.run(&argv);
        r.ok();
        for flag in ["--module <PATH>", "--token <LABEL|URI>", "--pin-source"] {
            assert_eq!(
                r.stdout.contains(flag),
                *shown,
                "{name}: {flag}\n{}",
                r.stdout
            );
        }
        if *shown {
            assert!(r.stdout.contains("Token options:"), "{name}");
            assert!(r.stdout.contains("default: $P11CA_TOKEN"), "{name}");
        }
        assert!(
            !r.stdout.contains("P11CA_TOKEN=cli"),
            "{name}: {}",
            r.stdout
        );
        let usage = r.stdout.lines().find(|l| l.starts_with("Usage:")).unwrap();
        assert!(!usage.contains("--token"), "{name}: {usage}");
    }
}

/// (name, P11CA_TOKEN, arguments, expected error or None for success)
type TokenCase<'a> = (&'a str, Option<&'a str>, &'a [&'a str], Option<&'a str>);

#[test]
fn token_options_before_or_after_the_subcommand() {
    // Two tokens, so that a --token that went unread could not fall back to the only one.
    let t = Token::softhsm("cli");
    t.add_token("other");
    let no_match = "no token matches";
    let cases: &[TokenCase] = &[
        ("before", None, &["--token", "cli", "key", "list"], None),
        ("after", None, &["key", "list", "--token", "cli"], None),
        (
            "cfssl style after",
            None,
            &["key", "list", "-token", "cli"],
            None,
        ),
        (
            "after wins",
            None,
            &["--token", "nope", "key", "list", "--token", "cli"],
            None,
        ),
        (
            "after wins, wrong",
            None,
            &["--token", "cli", "key", "list", "--token", "nope"],
            Some(no_match),
        ),
        ("environment", Some("cli"), &["key", "list"], None),
        (
            "flag over environment",
            Some("nope"),
            &["key", "list", "--token", "cli"],
            None,
        ),
        (
            "flag before, over environment",
            Some("nope"),
            &["--token", "cli", "token", "list"],
            None,
        ),
        (
            "environment alone, wrong",
            Some("nope"),
            &["key", "list"],
            Some(no_match),
        ),
        ("neither", None, &["key", "list"], Some("tokens")),
    ];
    for (name, env, args, want) in cases {
        let mut c = t.p11ca();
        match env {
            Some(v) => c.env("P11CA_TOKEN", v),
            None => c.env_remove("P11CA_TOKEN"),
        };
        let r = run(c.args(*args), None);
        match want {
            None => {
                r.ok();
            }
            Some(needle) => {
                r.fails(2, needle);
            }
        }
        eprintln!("case ok: {name}");
    }
}

#[test]
fn version_prints_like_cfssl() {
    let t = Token::new("cli");
    let r = t.run(&["version"]);
    r.ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    assert_eq!(lines[0], format!("Version: {}", env!("CARGO_PKG_VERSION")));
    assert!(lines[1].starts_with("Runtime: rustc 1."), "{}", lines[1]);
    assert!(lines[2].starts_with("Target: x86_64-") || lines[2].starts_with("Target: aarch64-"));
}

#[test]
fn print_defaults_match_cfssl_and_are_accepted_by_both() {
    require("cfssl");
    let t = Token::new("cli");
    for what in ["csr", "config"] {
        let ours = t.run(&["print-defaults", what]);
        ours.ok();
        let theirs = sh(t.command("cfssl").args(["print-defaults", what]));
        // cfssl prints one blank line more (Println of text that ends in a newline).
        assert_eq!(
            ours.stdout,
            theirs.trim_end().to_string() + "\n",
            "print-defaults {what} differs from cfssl's"
        );
        t.write(&format!("{what}.json"), &ours.stdout);
    }
    // p11ca: a CA from the default CSR on a fresh token, then leaves under the default config.
    let g = t.initca("csr.json", "ca");
    assert!(
        g.stderr
            .lines()
            .all(|l| l.starts_with("p11ca: warning: csr.json: hosts")),
        "{}",
        g.stderr
    );
    t.write(
        "node.json",
        r#"{"CN":"node.example.net","hosts":["node.example.net"]}"#,
    );
    for profile in ["www", "client"] {
        t.run(&[
            "gencert",
            "-ca",
            "ca.pem",
            "-ca-key",
            "ca-key.uri",
            "-config",
            "config.json",
            "-profile",
            profile,
            "node.json",
        ])
        .ok();
    }
    t.make_csrs("csrs", "leaf", 1);
    t.run(&[
        "sign",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
        "-config",
        "config.json",
        "-profile",
        "www",
        "csrs/leaf000.csr",
    ])
    .ok();
    // cfssl: the same two files.
    let ca = sh(t.command("cfssl").args(["gencert", "-initca", "csr.json"]));
    let ca = run(
        t.command("cfssljson").args(["-bare", "cfca"]),
        Some(ca.as_bytes()),
    );
    assert_eq!(ca.code, 0, "{}", ca.stderr);
    sh(t.command("cfssl").args([
        "gencert",
        "-ca",
        "cfca.pem",
        "-ca-key",
        "cfca-key.pem",
        "-config",
        "config.json",
        "-profile",
        "www",
        "node.json",
    ]));
}

#[test]
fn cfssl_spellings_are_accepted() {
    let t = Token::new("cli");
    t.write("ca.json", r#"{"CN":"Spelling CA"}"#);
    let g = t.run(&["gencert", "-initca=true", "ca.json"]);
    g.ok();
    t.run_in(&["json", "-bare=true", "ca"], g.stdout.as_bytes())
        .ok();
    assert!(t.path("ca-key.uri").exists());
    t.make_csrs("csrs", "n", 1);
    t.write("subject.json", r#"{"CN":"renamed"}"#);
    let base = ["sign", "-ca", "ca.pem", "-ca-key", "ca-key.uri"];
    let cases: &[(&str, &[&str], &str)] = &[
        ("positional CSR", &["csrs/n000.csr"], "CN = n000"),
        ("-csr FILE", &["-csr", "csrs/n000.csr"], "CN = n000"),
        ("-csr=FILE", &["-csr=csrs/n000.csr"], "CN = n000"),
        (
            "-csr FILE SUBJECT",
            &["-csr", "csrs/n000.csr", "subject.json"],
            "CN = renamed",
        ),
    ];
    for (name, extra, subject) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let r = t.run(&args);
        r.ok();
        t.run_in(&["json", "-bare", "leaf"], r.stdout.as_bytes())
            .ok();
        let text = crate::util::x509_text(&t, "leaf.pem");
        assert!(
            text.contains(&format!("Subject: {subject}")),
            "{name}: {text}"
        );
    }
    // `-initca=false` is no -initca: gencert then wants -ca.
    t.run(&["gencert", "-initca=false", "ca.json"])
        .fails(1, "-ca is required");
}

#[test]
fn completions_cover_every_subcommand() {
    require("bash");
    let t = Token::new("cli");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let r = t.run(&["completion", shell]);
        r.ok();
        for sc in SUBCOMMANDS {
            assert!(r.stdout.contains(sc), "{shell} completion lacks {sc}");
        }
        assert!(r.stdout.contains("ca-key"), "{shell}");
        if shell == "bash" {
            let check = run(t.command("bash").arg("-n"), Some(r.stdout.as_bytes()));
            assert_eq!(check.code, 0, "bash -n: {}", check.stderr);
            // Loaded, it completes subcommands.
            t.write("p11ca.bash", &r.stdout);
            let words = sh(t.command("bash").args([
                "-c",
                "source ./p11ca.bash; COMP_WORDS=(p11ca print-d); COMP_CWORD=1; \
                 COMP_LINE='p11ca print-d'; COMP_POINT=13; _p11ca p11ca print-d p11ca; \
                 printf '%s\\n' \"${COMPREPLY[@]}\"",
            ]));
            assert_eq!(words.trim(), "print-defaults", "{words}");
        }
    }
}

#[test]
fn man_pages_render_and_cover_every_subcommand() {
    require("groff");
    let t = Token::new("cli");
    t.run(&["man", "man/man1"]).ok();
    let mut pages = vec!["p11ca".to_string()];
    pages.extend(SUBCOMMANDS.iter().map(|s| format!("p11ca-{s}")));
    pages.extend(
        [
            "token-list",
            "key-list",
            "key-show",
            "certs-list",
            "certs-show",
        ]
        .iter()
        .map(|s| format!("p11ca-{s}")),
    );
    for page in &pages {
        let file = format!("man/man1/{page}.1");
        assert!(t.path(&file).exists(), "{file} missing");
        // groff with every warning on: a page that renders with none.
        let r = run(
            t.command("groff")
                .args(["-man", "-Tutf8", "-P-cbou", "-ww", &file]),
            None,
        );
        assert_eq!(r.code, 0, "{file}: {}", r.stderr);
        assert!(r.stderr.is_empty(), "{file}: {}", r.stderr);
        assert!(r.stdout.contains("NAME"), "{file}");
    }
    let top = sh(t
        .command("groff")
        .args(["-man", "-Tutf8", "-P-cbou", "man/man1/p11ca.1"]));
    for sc in SUBCOMMANDS {
        assert!(
            top.contains(&format!("p11ca-{sc}(1)")),
            "p11ca.1 lacks {sc}"
        );
    }
    let sign = sh(t
        .command("groff")
        .args(["-man", "-Tutf8", "-P-cbou", "man/man1/p11ca-sign.1"]));
    assert!(
        sign.contains("--token"),
        "p11ca-sign.1 shows the token options"
    );
    let certinfo =
        sh(t.command("groff")
            .args(["-man", "-Tutf8", "-P-cbou", "man/man1/p11ca-certinfo.1"]));
    assert!(
        !certinfo.contains("--token"),
        "p11ca-certinfo.1 has no token options"
    );
    // No help pseudo-subcommand pages.
    assert!(!t.path("man/man1/p11ca-help.1").exists());
}

#[test]
fn unknown_csr_fields_are_warned_about_not_refused() {
    let t = Token::new("cli");
    t.write(
        "ca.json",
        r#"{"CN":"Warn CA","hsots":["10.0.0.1"],"key":{"algo":"ecdsa","sise":256}}"#,
    );
    let g = t.initca("ca.json", "ca");
    let want = [
        r#"p11ca: warning: ca.json: unknown field "hsots" ignored; did you mean "hosts"?"#,
        r#"p11ca: warning: ca.json: unknown field "key.sise" ignored; did you mean "key.size"?"#,
    ];
    for w in want {
        assert!(g.stderr.lines().any(|l| l == w), "{w}\n{}", g.stderr);
    }
    t.write(
        "node.json",
        r#"{"CN":"n","hosts":["n.example"],"Names":[{"OUU":"x"}]}"#,
    );
    let r = t.run(&[
        "gencert",
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.uri",
        "node.json",
    ]);
    r.ok();
    assert!(
        r.stderr.contains(
            r#"p11ca: warning: node.json: unknown field "names[0].OUU" ignored; did you mean "names[0].OU"?"#
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn no_hosts_warning_only_for_server_profiles() {
    let t = Token::new("cli");
    t.write("ca.json", r#"{"CN":"Hosts CA"}"#);
    t.initca("ca.json", "ca");
    t.write(
        "config.json",
        r#"{"signing":{"default":{"expiry":"8760h","usages":["signing","server auth"]},
            "profiles":{"client":{"expiry":"8760h","usages":["signing","client auth"]},
                        "any":{"expiry":"8760h","usages":["signing","any"]},
                        "plain":{"expiry":"8760h","usages":["signing"]},
                        "mail":{"expiry":"8760h","usages":["signing","email protection"]}}}}"#,
    );
    t.write("node.json", r#"{"CN":"no hosts"}"#);
    let cases: &[(&str, Option<&str>, bool)] = &[
        ("default profile (server auth)", None, true),
        ("client profile", Some("client"), false),
        ("any usage", Some("any"), true),
        ("no extended usage: unrestricted", Some("plain"), true),
        ("email protection", Some("mail"), false),
    ];
    for (name, profile, warned) in cases {
        let mut args = vec![
            "gencert",
            "-ca",
            "ca.pem",
            "-ca-key",
            "ca-key.uri",
            "-config",
            "config.json",
        ];
        if let Some(p) = profile {
            args.extend(["-profile", p]);
        }
        args.push("node.json");
        let r = t.run(&args);
        r.ok();
        assert_eq!(
            r.stderr.contains("not suitable for websites"),
            *warned,
            "{name}: {}",
            r.stderr
        );
    }
}
