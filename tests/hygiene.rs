//! Nothing leaks, nothing is lost: outputs are atomic under crashes and full disks, the token
//! is checked for what it can do before anything is created, and odd CSRs are refused.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{MODULE, Token, ca_args, repo, require, run, sh};

/// A mount point of its own (tmpfs), unmounted on drop. The tests that need one run as root,
/// as CI does; anything else fails loudly.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: std::path::PathBuf, opts: &str) -> Self {
        std::fs::create_dir_all(&at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(&at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount tmpfs failed (these tests need root, as in CI): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(at)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn disk_full_during_write_leaves_old_files() {
    let t = Token::new("full");
    t.seed_ca();
    let g = t.run(&["gencert", "-initca", "--key-label", "second", "ca-csr.json"]);
    g.ok();
    let _m = Mount::tmpfs(t.path("small"), "size=4k");
    std::fs::write(t.path("small/ca.pem"), "OLD").unwrap();
    let r = t.run_in(&["json", "-bare", "small/ca"], g.stdout.as_bytes());
    r.fails(4, "small/ca");
    assert!(r.stderr.contains("No space left on device"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(t.path("small/ca.pem")).unwrap(),
        "OLD"
    );
    let names: Vec<_> = std::fs::read_dir(t.path("small"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "temp files removed: {names:?}");
}

#[test]
fn read_only_output_folder() {
    let t = Token::new("ro");
    t.seed_ca();
    let g = t.run(&["gencert", "-initca", "--key-label", "second", "ca-csr.json"]);
    let _m = Mount::tmpfs(t.path("ro"), "ro,size=64k");
    t.run_in(&["json", "-bare", "ro/ca"], g.stdout.as_bytes())
        .fails(4, "ro/ca.pem: cannot create a file");
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs --features fault-injection"
)]
fn crash_between_renames_leaves_old_or_new_never_truncated() {
    let t = Token::new("crash");
    t.seed_ca();
    let old_pem = t.read("ca.pem");
    let old_csr = t.read("ca.csr");
    let g = t.run(&["gencert", "-initca", "--key-label", "second", "ca-csr.json"]);
    let r = run(
        t.p11ca()
            .env("P11CA_FAULT", "between-renames")
            .args(["json", "-bare", "ca"]),
        Some(g.stdout.as_bytes()),
    );
    assert_ne!(r.code, 0, "the run was aborted");
    let v: serde_json::Value = serde_json::from_str(&g.stdout).unwrap();
    let (pem, csr) = (t.read("ca.pem"), t.read("ca.csr"));
    assert!(
        pem == old_pem || pem == v["cert"].as_str().unwrap(),
        "ca.pem is neither old nor new"
    );
    assert!(
        csr == old_csr || csr == v["csr"].as_str().unwrap(),
        "ca.csr is neither old nor new"
    );
    // The first file was renamed before the crash; the second was not.
    assert_eq!(pem, v["cert"].as_str().unwrap());
    assert_eq!(csr, old_csr);
}

#[test]
fn sigkill_during_a_batch_never_leaves_a_truncated_file() {
    require("openssl");
    let t = Token::new("kill");
    t.seed_ca();
    t.make_csrs("csrs", "n", 60);
    // Old outputs that a crash must not damage.
    for i in 0..60 {
        std::fs::write(t.path(&format!("out/n{i:03}.pem")), "OLD").unwrap();
    }
    let mut args: Vec<&str> = crate::util::SIGN_BATCH.to_vec();
    args.extend(["--jobs", "1"]);
    // How long a whole run takes here, so the kills land inside the batch on any machine.
    std::fs::create_dir_all(t.path("full")).unwrap();
    let mut full_args = args.clone();
    full_args[12] = "full";
    let start = std::time::Instant::now();
    t.run(&full_args).ok();
    let whole = start.elapsed().as_millis() as u64;
    for delay_ms in [whole / 4, whole / 2, whole * 3 / 4] {
        let mut child = t
            .p11ca()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        let killed = status.signal() == Some(9);
        let mut new = 0;
        for i in 0..60 {
            let s = std::fs::read_to_string(t.path(&format!("out/n{i:03}.pem"))).unwrap();
            if s == "OLD" {
                continue;
            }
            new += 1;
            assert!(
                s.starts_with("-----BEGIN CERTIFICATE-----\n")
                    && s.ends_with("-----END CERTIFICATE-----\n"),
                "truncated n{i:03}.pem after kill at {delay_ms} ms"
            );
            let v = run(
                t.command("openssl").args([
                    "verify",
                    "-CAfile",
                    "ca.pem",
                    &format!("out/n{i:03}.pem"),
                ]),
                None,
            );
            assert_eq!(v.code, 0, "n{i:03}.pem does not verify: {}", v.stdout);
        }
        eprintln!(
            "kill after {delay_ms} ms (killed: {killed}): {new} of 60 certificates written whole"
        );
    }
    // A rerun completes every file.
    t.run(&args).ok();
    for i in 0..60 {
        assert!(
            t.read(&format!("out/n{i:03}.pem"))
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
    }
}

#[test]
fn token_capabilities_are_checked_before_anything_is_created() {
    let t = Token::softhsm("caps");
    // This token offers RSA key generation and raw CKM_RSA_PKCS only.
    let conf = std::fs::read_to_string(t.conf()).unwrap();
    std::fs::write(
        t.conf(),
        format!("{conf}slots.mechanisms = CKM_RSA_PKCS_KEY_PAIR_GEN,CKM_RSA_PKCS\n"),
    )
    .unwrap();
    t.write("ec.json", r#"{"CN":"x","key":{"algo":"ecdsa","size":256}}"#);
    let before = t.object_count();
    t.run(&["gencert", "-initca", "ec.json"]).fails(
        2,
        "token \"caps\" cannot generate EC keys (no CKM_EC_KEY_PAIR_GEN mechanism)",
    );
    assert_eq!(t.object_count(), before);
    // RSA still works, through CKM_RSA_PKCS over a DigestInfo built by p11ca.
    t.write("rsa.json", r#"{"CN":"y","key":{"algo":"rsa","size":3072}}"#);
    t.initca("rsa.json", "ca");
    assert!(
        sh(t.command("openssl")
            .args(["verify", "-CAfile", "ca.pem", "ca.pem"]))
        .contains("OK")
    );
    let text = sh(t
        .command("openssl")
        .args(["x509", "-noout", "-text", "-in", "ca.pem"]));
    assert!(text.contains("sha384WithRSAEncryption"), "{text}");
    let r = t.run(&["token", "list"]);
    assert!(
        r.stdout
            .contains("can RSA 512-16384 bits (CKM_RSA_PKCS+DigestInfo)"),
        "{}",
        r.stdout
    );
    let _ = MODULE;
}

#[test]
fn csr_with_an_unsupported_algorithm() {
    require("openssl");
    let t = Token::new("algo");
    t.seed_ca();
    sh(t.command("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out", "ed.key"]));
    sh(t.command("openssl").args([
        "req", "-new", "-key", "ed.key", "-subj", "/CN=ed", "-out", "ed.csr",
    ]));
    t.run(&ca_args("sign", &["ed.csr"]))
        .fails(1, "ed.csr: unsupported signature algorithm 1.3.101.112");
    assert!(!t.path("ed.pem").exists());
}

// ---------------------------------------------------------------------------------------------
// Source layout (ARCHITECTURE.md): the library's layers import only downwards, no two files
// import each other (directly or round a longer circle), and only `src/token/` uses cryptoki.

/// The library's top-level modules, bottom layer first. A module may use modules of lower
/// layers only; a new top-level module must be placed here.
const LAYERS: &[&[&str]] = &[
    &["error", "sync"],
    &["text", "fault"],
    &["fsio"],
    &["x509"],
    &["token"],
    &["cfssl"],
    &["ca"],
    &["tls"],
    &["client", "db"],
    &["serve"],
    &["kube"],
];

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The module path of a library file: `src/x509/alg.rs` is `x509::alg`, `src/token/mod.rs` is
/// `token`, `src/lib.rs` is the root (empty).
fn module_path(rel: &str) -> Vec<String> {
    let rel = rel
        .strip_prefix("src/")
        .unwrap()
        .strip_suffix(".rs")
        .unwrap();
    let mut parts: Vec<String> = rel.split('/').map(String::from).collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

/// The code of a file without its comments (doc links are not imports) and without its unit
/// test modules (`#[cfg(test)] mod … {` to the `}` that closes it at the start of a line, as
/// rustfmt writes it), which may use anything.
fn code_of(text: &str) -> String {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        if l == "#[cfg(test)]" && lines.peek().is_some_and(|n| n.starts_with("mod ")) {
            for skipped in lines.by_ref() {
                if skipped == "}" {
                    break;
                }
            }
            continue;
        }
        out.push(match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        });
    }
    out.join("\n")
}

/// Expand `a::{b, c::{d, e}}` (the text after `crate::` or `super::`) into paths.
fn expand(text: &str) -> Vec<Vec<String>> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut prefix: Vec<String> = Vec::new();
    loop {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if i > start {
            prefix.push(text[start..i].to_string());
        }
        if text[i..].starts_with("::{") {
            // A group: split its top level at commas.
            let mut depth = 0;
            let mut item_start = i + 3;
            let mut out = Vec::new();
            for (j, c) in text[i + 2..].char_indices() {
                let at = i + 2 + j;
                match c {
                    '{' => depth += 1,
                    '}' | ',' if depth == 1 => {
                        for mut p in expand(text[item_start..at].trim()) {
                            let mut full = prefix.clone();
                            full.append(&mut p);
                            out.push(full);
                        }
                        item_start = at + 1;
                        if c == '}' {
                            return out;
                        }
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            return out;
        }
        if text[i..].starts_with("::") {
            i += 2;
            continue;
        }
        return if prefix.is_empty() {
            Vec::new()
        } else {
            vec![prefix]
        };
    }
}

/// The crate paths a library file uses (`crate::…` and `super::…`, resolved).
fn used_paths(module: &[String], is_mod_file: bool, code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (marker, base) in [
        ("crate::", Vec::new()),
        ("super::", {
            // `super` of `a::b` (a file) is `a`; of `a/mod.rs` (module `a`) it is the root.
            let mut m = module.to_vec();
            if !is_mod_file || !m.is_empty() {
                m.pop();
            }
            m
        }),
    ] {
        let mut rest = code;
        while let Some(i) = rest.find(marker) {
            let before = rest[..i].chars().last();
            rest = &rest[i + marker.len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            for p in expand(rest) {
                let mut full = base.clone();
                full.extend(p);
                out.push(full);
            }
        }
    }
    out
}

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

/// Library files (the binary's `src/main.rs`, `src/cli/` and `src/bin/` are the top layer and
/// use the library through `p11ca::`; `src/build.rs` is the build script), with their module
/// paths and code.
fn library_files() -> Vec<(String, Vec<String>, bool, String)> {
    let root = repo("");
    rust_files(&repo("src"))
        .into_iter()
        .map(|p| {
            p.strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|rel| {
            rel != "src/main.rs"
                && rel != "src/build.rs"
                && !rel.starts_with("src/cli/")
                && !rel.starts_with("src/bin/")
        })
        .map(|rel| {
            let code = code_of(&std::fs::read_to_string(repo(&rel)).unwrap());
            let is_mod = rel.ends_with("/mod.rs") || rel == "src/lib.rs";
            (rel.clone(), module_path(&rel), is_mod, code)
        })
        .collect()
}

#[test]
fn library_layers_import_only_downwards() {
    let mut wrong = Vec::new();
    for (rel, module, is_mod, code) in library_files() {
        let Some(top) = module.first() else {
            continue; // lib.rs declares the modules
        };
        let Some(own) = layer_of(top) else {
            wrong.push(format!(
                "{rel}: top-level module `{top}` is in no layer (LAYERS)"
            ));
            continue;
        };
        for path in used_paths(&module, is_mod, &code) {
            let target = &path[0];
            if target == top {
                continue;
            }
            // The root re-exports `error`'s types (`crate::Result`).
            let target_layer = if target.starts_with(char::is_uppercase) {
                Some(0)
            } else {
                layer_of(target)
            };
            match target_layer {
                Some(l) if l < own => {}
                _ => wrong.push(format!("{rel}: `{top}` uses `{}`", path.join("::"))),
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_two_library_files_import_each_other() {
    let files = library_files();
    let known: Vec<Vec<String>> = files.iter().map(|f| f.1.clone()).collect();
    // The file a path lands in: its longest prefix that is a file's module.
    let file_of = |path: &[String]| -> Option<usize> {
        (1..=path.len())
            .rev()
            .find_map(|n| known.iter().position(|k| k.as_slice() == &path[..n]))
    };
    // Edges between leaf files (a folder's mod.rs re-exporting its children is no circle).
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); files.len()];
    for (i, (_, module, is_mod, code)) in files.iter().enumerate() {
        if *is_mod {
            continue;
        }
        for path in used_paths(module, *is_mod, code) {
            if let Some(j) = file_of(&path).filter(|&j| j != i && !files[j].2)
                && !edges[i].contains(&j)
            {
                edges[i].push(j);
            }
        }
    }
    // Depth-first search for a circle.
    fn visit(n: usize, edges: &[Vec<usize>], state: &mut [u8], stack: &mut Vec<usize>) -> bool {
        state[n] = 1;
        stack.push(n);
        for &m in &edges[n] {
            if state[m] == 1 {
                stack.push(m);
                return true;
            }
            if state[m] == 0 && visit(m, edges, state, stack) {
                return true;
            }
        }
        stack.pop();
        state[n] = 2;
        false
    }
    let mut state = vec![0u8; files.len()];
    for n in 0..files.len() {
        let mut stack = Vec::new();
        if state[n] == 0 && visit(n, &edges, &mut state, &mut stack) {
            let names: Vec<&str> = stack.iter().map(|&i| files[i].0.as_str()).collect();
            panic!("import circle: {}", names.join(" -> "));
        }
    }
}

#[test]
fn only_the_token_module_uses_cryptoki() {
    let root = repo("");
    let users: Vec<String> = rust_files(&repo("src"))
        .into_iter()
        .map(|p| {
            p.strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|rel| !rel.starts_with("src/token/"))
        .filter(|rel| {
            std::fs::read_to_string(repo(rel))
                .unwrap()
                .contains("cryptoki")
        })
        .collect();
    assert!(users.is_empty(), "cryptoki outside src/token/: {users:?}");
}
