//! Test harness: a fresh token per test, the p11ca binary run against it with a clean
//! environment, and independent inspection of the token through OpenSC's pkcs11-tool.
//!
//! The token is SoftHSM2 unless `P11CA_TEST_BACKEND` names another back-end (see [`Backend`]):
//! one test body, run against each token implementation. Tests that depend on SoftHSM2 itself
//! (its configuration file, several tokens in one store, its manufacturer string) use
//! [`Token::softhsm`] and always run on SoftHSM2.
//!
//! A missing SoftHSM2, back-end or helper tool panics with an install hint: tests never pass by
//! skipping.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use std::io::Write;

/// The SoftHSM2 module. Generic tests use [`Token::module`], which follows the back-end.
pub(crate) const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub(crate) const PIN: &str = "1234";
pub(crate) const SO_PIN: &str = "12345678";

/// Seconds a back-end service (swtpm, p11-kit server) may live: a safety net that ends it even
/// if the test process dies before its `Drop` runs.
const BACKEND_LIFETIME: &str = "1200";

/// A token implementation the tests can run against, chosen by `P11CA_TEST_BACKEND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// SoftHSM2 (`softhsm`, the default): softhsm/new-token.sh.
    SoftHsm,
    /// tpm2-pkcs11 on the swtpm software TPM (`tpm`): softhsm/tpm-token.sh.
    Tpm,
    /// kryoptic, the Rust soft token (`kryoptic`): softhsm/kryoptic-token.sh, module from
    /// ci/kryoptic.
    Kryoptic,
    /// SoftHSM2 behind `p11-kit server`, reached through p11-kit-client.so (`p11kit`): a
    /// network HSM stand-in, softhsm/p11kit-token.sh.
    P11Kit,
    /// Yubico's ykcs11 on an emulated YubiKey PIV card (`piv`): a private pcscd with
    /// vsmartcard's vpcd reader and p11ca-piv-emulator, softhsm/piv-token.sh.
    Piv,
}

impl Backend {
    /// The back-end `P11CA_TEST_BACKEND` names; unset or empty means SoftHSM2. An unknown name
    /// panics rather than fall back silently.
    pub(crate) fn from_env() -> Self {
        match std::env::var("P11CA_TEST_BACKEND").as_deref() {
            Err(_) | Ok("") | Ok("softhsm") => Backend::SoftHsm,
            Ok("tpm") => Backend::Tpm,
            Ok("kryoptic") => Backend::Kryoptic,
            Ok("p11kit") => Backend::P11Kit,
            Ok("piv") => Backend::Piv,
            Ok(other) => {
                panic!(
                    "P11CA_TEST_BACKEND={other:?}: expected softhsm, tpm, kryoptic, p11kit or piv"
                )
            }
        }
    }

    /// The name `P11CA_TEST_BACKEND` uses.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::SoftHsm => "softhsm",
            Backend::Tpm => "tpm",
            Backend::Kryoptic => "kryoptic",
            Backend::P11Kit => "p11kit",
            Backend::Piv => "piv",
        }
    }

    /// The helper under softhsm/ that starts (`DIR LABEL PIN SO_PIN`) and stops (`--stop DIR`)
    /// a token of this back-end.
    fn helper(self) -> PathBuf {
        repo(match self {
            Backend::SoftHsm => "softhsm/new-token.sh",
            Backend::Tpm => "softhsm/tpm-token.sh",
            Backend::Kryoptic => "softhsm/kryoptic-token.sh",
            Backend::P11Kit => "softhsm/p11kit-token.sh",
            Backend::Piv => "softhsm/piv-token.sh",
        })
    }
}

/// The kryoptic module: `P11CA_KRYOPTIC_MODULE`, else what ci/kryoptic builds (once per test
/// process; ci/test builds it before the tests run).
fn kryoptic_module() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("P11CA_KRYOPTIC_MODULE").filter(|p| !p.is_empty()) {
            return p.to_string_lossy().into_owned();
        }
        let out = Command::new(repo("ci/kryoptic"))
            .stdin(Stdio::null())
            .output()
            .expect("run ci/kryoptic");
        assert!(
            out.status.success(),
            "ci/kryoptic could not build kryoptic (tests never skip): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

/// The PIV card emulator, built by `--features piv-emulator` (ci/test builds with it).
pub(crate) fn piv_emulator() -> &'static str {
    match option_env!("CARGO_BIN_EXE_p11ca-piv-emulator") {
        Some(p) => p,
        None => {
            panic!("the PIV back-end needs p11ca-piv-emulator: test with --features piv-emulator")
        }
    }
}

/// The PIN of an emulated PIV card: PIV PINs have 6 to 8 characters, so [`PIN`] cannot be one.
pub(crate) const PIV_PIN: &str = "654321";

/// `export NAME='VALUE'` lines as the helpers print them.
fn parse_env(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

/// Path of a file in the repository.
pub(crate) fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Fail loudly when a required tool is missing.
pub(crate) fn require(tool: &str) {
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

/// A throwaway token in its own temp dir; outputs go to `work()`. Dropping it stops the
/// back-end's service, if it has one.
pub(crate) struct Token {
    dir: tempfile::TempDir,
    pub label: String,
    backend: Backend,
    /// The PKCS#11 module p11ca and pkcs11-tool load.
    module: String,
    /// Variables the back-end needs besides P11CA_MODULE/TOKEN/PIN (TPM2_PKCS11_TCTI, …).
    env: Vec<(String, String)>,
    /// The user PIN ([`PIN`], or [`PIV_PIN`] on a PIV card).
    pub pin: String,
}

impl Token {
    /// A fresh token labelled `label` on the back-end `P11CA_TEST_BACKEND` chooses.
    pub(crate) fn new(label: &str) -> Self {
        Self::on(Backend::from_env(), label)
    }

    /// A fresh SoftHSM2 token, whatever `P11CA_TEST_BACKEND` says: for tests of SoftHSM2's own
    /// configuration, several tokens in one store, or its manufacturer string.
    pub(crate) fn softhsm(label: &str) -> Self {
        Self::on(Backend::SoftHsm, label)
    }

    /// A fresh token on `backend`. A back-end that cannot be started panics (never a skip).
    pub(crate) fn on(backend: Backend, label: &str) -> Self {
        assert!(
            Path::new(MODULE).exists(),
            "SoftHSM2 is not installed ({MODULE}): run ci/setup"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let mut t = Token {
            dir,
            label: label.to_string(),
            backend,
            module: MODULE.to_string(),
            env: Vec::new(),
            pin: PIN.to_string(),
        };
        if backend == Backend::SoftHsm {
            t.add_token(label);
        } else {
            t.start_backend();
        }
        std::fs::create_dir_all(t.work()).unwrap();
        t
    }

    /// Run the back-end's helper in `hsm_dir()` and keep the environment it prints.
    fn start_backend(&mut self) {
        let mut c = Command::new(self.backend.helper());
        let (pin, so_pin) = match self.backend {
            Backend::Piv => (PIV_PIN, "87654321"),
            _ => (PIN, SO_PIN),
        };
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("P11CA_BACKEND_LIFETIME", BACKEND_LIFETIME)
            .args([self.hsm_dir().to_str().unwrap(), &self.label, pin, so_pin])
            .stdin(Stdio::null());
        if self.backend == Backend::Kryoptic {
            c.env("P11CA_KRYOPTIC_MODULE", kryoptic_module());
        }
        if self.backend == Backend::Piv {
            c.env("P11CA_PIV_EMULATOR", piv_emulator());
        }
        let out = c.output().expect("run the back-end helper");
        assert!(
            out.status.success(),
            "could not start a {} token (P11CA_TEST_BACKEND={}; run ci/setup): {}",
            self.backend.name(),
            self.backend.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        for (k, v) in parse_env(&String::from_utf8_lossy(&out.stdout)) {
            match k.as_str() {
                "P11CA_MODULE" => self.module = v,
                // ykcs11 names the token after the card's serial.
                "P11CA_TOKEN" => self.label = v,
                "P11CA_PIN" => self.pin = v,
                _ => self.env.push((k, v)),
            }
        }
    }

    /// The back-end this token runs on.
    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// The PKCS#11 module for this token (pkcs11-tool --module, PKCS11_MODULE_PATH).
    pub(crate) fn module(&self) -> &str {
        &self.module
    }

    /// Stop the back-end's service (the p11-kit server, swtpm) and keep the token's files.
    pub(crate) fn stop_service(&self) {
        let out = Command::new(self.backend.helper())
            .args(["--stop", self.hsm_dir().to_str().unwrap()])
            .output()
            .expect("run the back-end helper");
        assert!(
            out.status.success(),
            "could not stop the {} back-end: {}",
            self.backend.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Serve the same token again after [`Token::stop_service`] (p11-kit only).
    pub(crate) fn start_service(&self) {
        assert_eq!(
            self.backend,
            Backend::P11Kit,
            "only the p11-kit server can be restarted"
        );
        let out = Command::new(self.backend.helper())
            .env("P11CA_BACKEND_LIFETIME", BACKEND_LIFETIME)
            .args(["--start", self.hsm_dir().to_str().unwrap()])
            .output()
            .expect("run the back-end helper");
        assert!(
            out.status.success(),
            "could not restart the p11-kit server: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Take the emulated PIV card out of its reader (`--unplug`) or put it back (`--plug`);
    /// its keys and objects stay in the back-end's folder.
    pub(crate) fn piv_card(&self, action: &str) {
        assert_eq!(
            self.backend,
            Backend::Piv,
            "only a PIV card can be unplugged"
        );
        let out = Command::new(self.backend.helper())
            .env("P11CA_BACKEND_LIFETIME", BACKEND_LIFETIME)
            .env("P11CA_PIV_EMULATOR", piv_emulator())
            .args([action, self.hsm_dir().to_str().unwrap()])
            .output()
            .expect("run softhsm/piv-token.sh");
        assert!(
            out.status.success(),
            "piv-token.sh {action} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Initialise one more token (any label, even a duplicate) in the same SoftHSM store.
    pub(crate) fn add_token(&self, label: &str) {
        assert_eq!(
            self.backend,
            Backend::SoftHsm,
            "add_token makes SoftHSM2 tokens: use Token::softhsm"
        );
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

    /// A copy of this SoftHSM2 token (the same keys) in a folder of its own: the
    /// `SOFTHSM2_CONF` that selects it. For tests of several processes at once that are not
    /// about the token: SoftHSM2 rewrites a token's file at every login, and another process
    /// reading the file at that moment finds the token not initialized or gets
    /// CKR_GENERAL_ERROR (SoftHSMv2 issue #757).
    pub(crate) fn softhsm_copy(&self, name: &str) -> PathBuf {
        assert_eq!(
            self.backend,
            Backend::SoftHsm,
            "softhsm_copy copies SoftHSM2 tokens"
        );
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let (from, to) = (self.hsm_dir().join("tokens"), dir.join("tokens"));
        let out = Command::new("cp")
            .arg("-a")
            .arg(&from)
            .arg(&to)
            .output()
            .unwrap();
        assert!(out.status.success(), "cp -a {from:?}: {out:?}");
        let conf = std::fs::read_to_string(self.conf()).unwrap();
        let (from, to) = (from.to_str().unwrap(), to.to_str().unwrap());
        assert!(
            conf.contains(from),
            "{:?} does not name {from}",
            self.conf()
        );
        std::fs::write(dir.join("softhsm2.conf"), conf.replace(from, to)).unwrap();
        dir.join("softhsm2.conf")
    }

    pub(crate) fn hsm_dir(&self) -> PathBuf {
        self.dir.path().join("hsm")
    }

    pub(crate) fn conf(&self) -> PathBuf {
        self.hsm_dir().join("softhsm2.conf")
    }

    /// Where commands run and write their outputs.
    pub(crate) fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.work().join(name)
    }

    pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    pub(crate) fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    }

    /// A command with a scrubbed environment pointing at this token.
    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("SOFTHSM2_CONF", self.conf())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.work());
        c
    }

    /// p11ca with module, token and PIN set through the environment.
    pub(crate) fn p11ca(&self) -> Command {
        let mut c = self.command(env!("CARGO_BIN_EXE_p11ca"));
        c.env("P11CA_MODULE", &self.module)
            .env("P11CA_TOKEN", &self.label)
            .env("P11CA_PIN", &self.pin);
        c
    }

    /// `p11ca ARGS` (with this token) under GNU time, fed `stdin`: the run, unchecked, and its
    /// peak RSS in KiB.
    pub(crate) fn run_peak_rss(&self, args: &[&str], stdin: Option<&[u8]>) -> (Run, u64) {
        let time = "/usr/bin/time";
        assert!(
            std::path::Path::new(time).exists(),
            "GNU time is missing (apt-get install time; ci/setup installs it)"
        );
        let mut timed = self.command(time);
        timed
            .args([
                "-f",
                "%M",
                "-o",
                "rss.txt",
                "--",
                env!("CARGO_BIN_EXE_p11ca"),
            ])
            .args(args)
            .env("P11CA_MODULE", &self.module)
            .env("P11CA_TOKEN", &self.label)
            .env("P11CA_PIN", &self.pin);
        let r = run(&mut timed, stdin);
        // GNU time writes "Command exited with non-zero status N" before the figure.
        let rss = self.read("rss.txt");
        let kib = rss
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap();
        (r, kib)
    }

    /// Run p11ca with `args` (and optional stdin). Nothing is checked: the caller must.
    #[must_use = "check the run with .ok() or .fails(), or read its fields"]
    pub(crate) fn run(&self, args: &[&str]) -> Run {
        run(self.p11ca().args(args), None)
    }

    #[must_use = "check the run with .ok() or .fails(), or read its fields"]
    pub(crate) fn run_in(&self, args: &[&str], stdin: &[u8]) -> Run {
        run(self.p11ca().args(args), Some(stdin))
    }

    /// `gencert -initca FILE | json -bare NAME`, asserting success; returns the gencert run.
    /// On a PIV card the key goes in slot 9c, made with the management key as SO PIN.
    pub(crate) fn initca(&self, csr_file: &str, name: &str) -> Run {
        let mut args = vec!["gencert", "-initca"];
        let piv = self.piv_initca_args();
        args.extend(piv.iter().map(String::as_str));
        args.push(csr_file);
        let g = self.run(&args);
        g.ok();
        self.run_in(&["json", "-bare", name], g.stdout.as_bytes())
            .ok();
        g
    }

    /// `--piv-slot 9c --so-pin-source file:MGM-KEY` on a PIV card, nothing elsewhere.
    pub(crate) fn piv_initca_args(&self) -> Vec<String> {
        if self.backend != Backend::Piv {
            return Vec::new();
        }
        let key = self.env_var("P11CA_PIV_MGM_KEY_FILE");
        vec![
            "--piv-slot".into(),
            "9c".into(),
            "--so-pin-source".into(),
            format!("file:{key}"),
        ]
    }

    /// A variable the back-end's helper printed.
    pub(crate) fn env_var(&self, name: &str) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("the {} helper printed no {name}", self.backend.name()))
    }

    /// Object count as seen by OpenSC's pkcs11-tool (logged in), independent of p11ca.
    pub(crate) fn object_count(&self) -> usize {
        require("pkcs11-tool");
        let out = self
            .command("pkcs11-tool")
            .args([
                "--module",
                &self.module,
                "--token-label",
                &self.label,
                "--login",
                "--pin",
                &self.pin,
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
    pub(crate) fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.work())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Token {
    /// Stop the back-end's service: the p11-kit server, or swtpm through tpm2_shutdown and
    /// `swtpm_ioctl -s` (never a plain kill, which the TPM counts as a failed authorization).
    fn drop(&mut self) {
        if matches!(self.backend, Backend::Tpm | Backend::P11Kit | Backend::Piv) {
            match Command::new(self.backend.helper())
                .args(["--stop", self.hsm_dir().to_str().unwrap()])
                .output()
            {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "stopping the {} back-end failed: {}",
                    self.backend.name(),
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => eprintln!("stopping the {} back-end failed: {e}", self.backend.name()),
            }
        }
    }
}

/// The result of one process.
#[derive(Debug)]
pub(crate) struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

#[must_use = "check the run with .ok() or .fails(), or read its fields"]
pub(crate) fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Run {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    // Written from another thread: a program that streams (`sign --batch -`) answers before
    // it has read all of its input, and would otherwise block on a full stdout pipe.
    let writer = stdin.map(|input| {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || pipe.write_all(&input))
    });
    let out: Output = child.wait_with_output().unwrap();
    if let Some(w) = writer {
        w.join().unwrap().unwrap();
    }
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Run {
    /// Assert success and return self.
    #[track_caller]
    pub(crate) fn ok(&self) -> &Self {
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
    pub(crate) fn fails(&self, code: i32, needle: &str) -> &Self {
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
pub(crate) fn sh(cmd: &mut Command) -> String {
    let r = run(cmd, None);
    assert_eq!(r.code, 0, "{cmd:?} failed: {}{}", r.stdout, r.stderr);
    r.stdout
}

/// `openssl x509 -text` of a PEM file in the work dir.
pub(crate) fn x509_text(t: &Token, file: &str) -> String {
    require("openssl");
    sh(t.command("openssl")
        .args(["x509", "-noout", "-text", "-in", file]))
}

/// The seed's ca-csr.json with another key.
pub(crate) fn ca_csr(algo: &str, size: u32) -> String {
    format!(
        r#"{{"CN":"mosquitood-k8s","key":{{"algo":"{algo}","size":{size}}},"names":[{{"C":"CN","ST":"TianJin","L":"TianJin","O":"k8s","OU":"System"}}]}}"#
    )
}

/// A free TCP port on 127.0.0.1 (bound, read and released; the caller retries if it is taken
/// again before use).
/// A port no other test of this process is given, below the kernel's ephemeral range (32768
/// and up) so that no client connection of a concurrent test takes it as its local port
/// between this call and the server's bind; checked free on loopback and on all addresses.
pub(crate) fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Spread processes (the suite runs once per back-end) over the range.
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 600) as u16 * 20,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    loop {
        let p = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = if p >= 32_000 {
            NEXT.store(20_001, Ordering::Relaxed);
            20_000
        } else {
            p
        };
        let free = |addr: &str| std::net::TcpListener::bind((addr, p)).is_ok();
        if free("127.0.0.1") && free("0.0.0.0") {
            return p;
        }
    }
}

/// A background process run under `timeout`, so it ends by itself after its time limit even if
/// the test process dies; dropping it ends it at once (SIGTERM, which `timeout` forwards).
pub(crate) struct Background {
    child: std::process::Child,
    /// File (in the work dir) that receives its stdout.
    pub stdout: String,
    /// File (in the work dir) that receives its stderr.
    pub stderr: String,
}

impl Background {
    /// Whether the process is still running.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.running() {
            // Our own child, not yet reaped, so its pid cannot have been reused.
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
        }
        let _ = self.child.wait();
    }
}

impl Token {
    /// Start `program args` in the work dir with this token's environment, limited to `secs`
    /// seconds; stdout and stderr go to `NAME.out` and `NAME.err` in the work dir.
    pub(crate) fn spawn(&self, name: &str, secs: u32, program: &str, args: &[&str]) -> Background {
        require("timeout");
        let stdout = format!("{name}.out");
        let stderr = format!("{name}.err");
        let out = std::fs::File::create(self.path(&stdout)).unwrap();
        let err = std::fs::File::create(self.path(&stderr)).unwrap();
        let child = self
            .command("timeout")
            .arg(secs.to_string())
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        Background {
            child,
            stdout,
            stderr,
        }
    }
}

impl Token {
    /// `n` P-256 CSRs made by OpenSSL in `dir` (created), named `{prefix}{i:03}.csr` with the
    /// same CN; an empty `out/` folder next to them for `--out`.
    pub(crate) fn make_csrs(&self, dir: &str, prefix: &str, n: usize) {
        require("openssl");
        std::fs::create_dir_all(self.path(dir)).unwrap();
        std::fs::create_dir_all(self.path("out")).unwrap();
        for i in 0..n {
            let out = format!("{dir}/{prefix}{i:03}.csr");
            self.openssl_ec_csr("/dev/null", &format!("{prefix}{i:03}"), &out);
        }
    }
}

/// `sign` of every CSR in `csrs/` into `out/` with the tutorial's CA, config and profile;
/// callers add `--jobs N`.
pub(crate) const SIGN_BATCH: [&str; 13] = [
    "sign",
    "-ca",
    "ca.pem",
    "-ca-key",
    "ca-key.uri",
    "-config",
    "ca-config.json",
    "-profile",
    "mosquitood-k8s",
    "--batch",
    "csrs",
    "--out",
    "out",
];

impl Token {
    /// `{name}.csr` (returned as text) for a fresh P-256 key `{name}-key.pem`, made by OpenSSL,
    /// with subject `/CN={cn}`.
    pub(crate) fn ec_csr(&self, name: &str, cn: &str) -> String {
        let out = format!("{name}.csr");
        self.openssl_ec_csr(&format!("{name}-key.pem"), cn, &out);
        self.read(&out)
    }

    /// OpenSSL's CSR `out` for a fresh P-256 key written to `keyout`, subject `/CN={cn}`.
    fn openssl_ec_csr(&self, keyout: &str, cn: &str, out: &str) {
        require("openssl");
        sh(self.command("openssl").args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            keyout,
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            out,
        ]));
    }

    /// Copy files from tests/data into the work dir.
    pub(crate) fn seed_files(&self, names: &[&str]) {
        for f in names {
            std::fs::copy(repo(&format!("tests/data/{f}")), self.path(f))
                .unwrap_or_else(|e| panic!("copy tests/data/{f}: {e}"));
        }
    }

    /// The DER OCSP request `openssl ocsp` makes for `cert` issued by `issuer` (no nonce, so
    /// that equal requests are equal bytes), with `extra` flags such as `-sha256`; also written
    /// to `CERT.req`.
    pub(crate) fn ocsp_request(&self, issuer: &str, cert: &str, extra: &[&str]) -> Vec<u8> {
        let out = format!("{cert}.req");
        sh(self
            .command("openssl")
            .args(["ocsp", "-issuer", issuer, "-no_nonce", "-reqout", &out])
            .args(extra)
            .args(["-cert", cert]));
        std::fs::read(self.path(&out)).unwrap()
    }

    /// A self-signed P-256 certificate of another CA, `other.pem` (key `other-key.pem`): what
    /// a check that must refuse "not our CA" is given.
    pub(crate) fn other_ca(&self) {
        sh(self.command("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "other-key.pem",
            "-subj",
            "/CN=other",
            "-out",
            "other.pem",
        ]));
    }

    /// The seed CA: tests/data/ca-csr.json and ca-config.json copied into the work dir, then
    /// `gencert -initca ca-csr.json | json -bare ca`.
    pub(crate) fn seed_ca(&self) {
        require("openssl");
        self.seed_files(&["ca-csr.json", "ca-config.json"]);
        self.initca("ca-csr.json", "ca");
    }
}

/// `CMD -ca ca.pem -ca-key ca-key.uri -config ca-config.json -profile mosquitood-k8s` then
/// `rest`: the seed CA's arguments for `gencert` and `sign`.
pub(crate) fn ca_args<'a>(cmd: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![cmd];
    v.extend_from_slice(&SIGN_BATCH[1..9]);
    v.extend_from_slice(rest);
    v
}
