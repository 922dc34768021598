//! Test harness: a fresh SoftHSM2 token per test, the p11ca binary run against it with a clean
//! environment, and independent inspection of the token through OpenSC's pkcs11-tool.
//!
//! A missing SoftHSM2 or helper tool panics with an install hint: tests never pass by skipping.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use std::io::Write;

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const PIN: &str = "1234";
pub const SO_PIN: &str = "12345678";

/// Path of a file in the repository.
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Fail loudly when a required tool is missing.
pub fn require(tool: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{tool} is not installed: run ci/setup (tests never skip)"
    );
}

/// A throwaway token in its own temp dir; outputs go to `work()`.
pub struct Token {
    dir: tempfile::TempDir,
    pub label: String,
}

impl Token {
    /// A fresh token labelled `label`.
    pub fn new(label: &str) -> Self {
        assert!(
            Path::new(MODULE).exists(),
            "SoftHSM2 is not installed ({MODULE}): run ci/setup"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Token {
            dir,
            label: label.to_string(),
        };
        t.add_token(label);
        std::fs::create_dir_all(t.work()).unwrap();
        t
    }

    /// Initialise one more token (any label, even a duplicate) in the same SoftHSM store.
    pub fn add_token(&self, label: &str) {
        let out = Command::new(repo("softhsm/new-token.sh"))
            .args([self.hsm_dir().to_str().unwrap(), label, PIN, SO_PIN])
            .output()
            .expect("run softhsm/new-token.sh");
        assert!(
            out.status.success(),
            "new-token.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn hsm_dir(&self) -> PathBuf {
        self.dir.path().join("hsm")
    }

    pub fn conf(&self) -> PathBuf {
        self.hsm_dir().join("softhsm2.conf")
    }

    /// Where commands run and write their outputs.
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.work().join(name)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    }

    /// A command with a scrubbed environment pointing at this token.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("SOFTHSM2_CONF", self.conf())
            .current_dir(self.work());
        c
    }

    /// p11ca with module, token and PIN set through the environment.
    pub fn p11ca(&self) -> Command {
        let mut c = self.command(env!("CARGO_BIN_EXE_p11ca"));
        c.env("P11CA_MODULE", MODULE)
            .env("P11CA_TOKEN", &self.label)
            .env("P11CA_PIN", PIN);
        c
    }

    /// Run p11ca with `args` (and optional stdin).
    pub fn run(&self, args: &[&str]) -> Run {
        run(self.p11ca().args(args), None)
    }

    pub fn run_in(&self, args: &[&str], stdin: &[u8]) -> Run {
        run(self.p11ca().args(args), Some(stdin))
    }

    /// `gencert -initca FILE | json -bare NAME`, asserting success; returns the gencert run.
    pub fn initca(&self, csr_file: &str, name: &str) -> Run {
        let g = self.run(&["gencert", "-initca", csr_file]);
        g.ok();
        self.run_in(&["json", "-bare", name], g.stdout.as_bytes())
            .ok();
        g
    }

    /// Object count as seen by OpenSC's pkcs11-tool (logged in), independent of p11ca.
    pub fn object_count(&self) -> usize {
        require("pkcs11-tool");
        let out = self
            .command("pkcs11-tool")
            .args([
                "--module",
                MODULE,
                "--token-label",
                &self.label,
                "--login",
                "--pin",
                PIN,
                "--list-objects",
            ])
            .output()
            .expect("run pkcs11-tool");
        assert!(
            out.status.success(),
            "pkcs11-tool failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                l.starts_with("Private Key Object")
                    || l.starts_with("Public Key Object")
                    || l.starts_with("Certificate Object")
                    || l.starts_with("Data object")
                    || l.starts_with("Secret Key Object")
            })
            .count()
    }

    /// Names of files in the work dir, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.work())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// The result of one process.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Run {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out: Output = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Run {
    /// Assert success and return self.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "expected success, got {}: stderr: {}",
            self.code, self.stderr
        );
        self
    }

    /// Assert the failure contract: exit `code`, exactly one `p11ca: error:` line on stderr
    /// containing `needle`, no panic, nothing on stdout.
    #[track_caller]
    pub fn fails(&self, code: i32, needle: &str) -> &Self {
        assert_eq!(self.code, code, "exit code; stderr: {}", self.stderr);
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.starts_with("p11ca: warning:"))
            .collect();
        assert_eq!(
            errors.len(),
            1,
            "exactly one error line expected, got: {:?}",
            self.stderr
        );
        assert!(errors[0].starts_with("p11ca: error: "), "{:?}", errors[0]);
        assert!(
            errors[0].contains(needle),
            "error {:?} should mention {needle:?}",
            errors[0]
        );
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("RUST_BACKTRACE"),
            "{}",
            self.stderr
        );
        assert!(
            self.stdout.is_empty(),
            "nothing on stdout on failure: {}",
            self.stdout
        );
        self
    }
}

/// Run a command and return stdout, asserting success.
#[track_caller]
pub fn sh(cmd: &mut Command) -> String {
    let r = run(cmd, None);
    assert_eq!(r.code, 0, "{cmd:?} failed: {}{}", r.stdout, r.stderr);
    r.stdout
}

/// `openssl x509 -text` of a PEM file in the work dir.
pub fn x509_text(t: &Token, file: &str) -> String {
    require("openssl");
    sh(t.command("openssl")
        .args(["x509", "-noout", "-text", "-in", file]))
}

/// The seed's ca-csr.json with another key.
pub fn ca_csr(algo: &str, size: u32) -> String {
    format!(
        r#"{{"CN":"mosquitood-k8s","key":{{"algo":"{algo}","size":{size}}},"names":[{{"C":"CN","ST":"TianJin","L":"TianJin","O":"k8s","OU":"System"}}]}}"#
    )
}
