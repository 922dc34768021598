//! `p11ca-bench`: how fast p11ca signs, side by side with what the token itself can do.
//!
//! Not part of the test run, and it asserts nothing about time: it prints figures. `ci/bench`
//! makes a throwaway SoftHSM2 token and an RSA CA, then runs this; by hand:
//!
//! ```sh
//! p11ca-bench --ca ca.pem --ca-key ca-key.uri --csr node.csr [-n N] [--csrs DIR]
//! ```
//!
//! The token comes from the same environment as the CLI (`SOFTHSM2_CONF`, `P11CA_MODULE`,
//! `P11CA_TOKEN`, `P11CA_PIN`; the key URI's token attributes win). It uses the library, not
//! the CLI, and measures in one process, after warm-up:
//!
//! - the raw `C_Sign` rate on the CA key in one session, over a real TBSCertificate with the
//!   mechanism p11ca uses (the token's limit), interleaved with
//! - p11ca's full issue rate in one session (`Issuer::issue`: serial from the token RNG,
//!   building, signing, software verification) plus PEM encoding;
//! - `Batch::issue_all` with 1, 2 and 4 sessions over N leaves, next to raw `C_Sign` with as
//!   many sessions;
//! - a phase profile of a one-shot `sign` (first thing in the process, so the module load is
//!   cold, as in a real one-shot run).
//!
//! `--phases-only` runs just the one-shot profile and prints it as one JSON line, so that
//! `ci/bench` can repeat it in fresh processes; `--inline-issue` issues in the login session on
//! the main thread instead of through `Batch::issue_all`; `--split-load` instead splits the
//! module load into dlopen and `C_Initialize` ([`p11ca::token::Library`]) and times the first
//! signatures of the process apart from later ones.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use der::{Decode, Encode};
use x509_cert::Certificate;

#[path = "common/procstat.rs"]
mod procstat;
use procstat::process_cpu_secs;

use p11ca::ca::batch;
use p11ca::ca::issue::{CaKey, Issuer, LeafRequest, parse_ca_cert};
use p11ca::cfssl::config::{Profile, SigningConfig};
use p11ca::cfssl::output;
use p11ca::token::signer::{SignMech, TokenSigner};
use p11ca::token::{AuthPin, Library, Module, Pkcs11Uri, Session, TokenSummary, key, pin};
use p11ca::x509::alg::HashAlg;
use p11ca::x509::name::SubjectOverride;
use p11ca::x509::{Signer, build, request, verify};
use p11ca::{Error, Result};

#[derive(Parser, Debug)]
#[command(
    name = "p11ca-bench",
    about = "Benchmark p11ca's signing against the token's own C_Sign rate (prints figures, asserts nothing)"
)]
struct Args {
    /// The CA certificate (PEM or DER).
    #[arg(long, value_name = "FILE")]
    ca: PathBuf,
    /// The CA key: a file holding a pkcs11: URI (NAME-key.uri), or the URI itself.
    #[arg(long, value_name = "FILE|URI")]
    ca_key: String,
    /// A CSR to certify (PEM or DER).
    #[arg(long, value_name = "FILE")]
    csr: PathBuf,
    /// A folder of *.csr files used (cyclically) as the N leaves instead of --csr alone.
    #[arg(long, value_name = "DIR")]
    csrs: Option<PathBuf>,
    /// Leaves per batch run.
    #[arg(short = 'n', default_value_t = 200)]
    n: usize,
    /// Signing config (cfssl ca-config.json); default: cfssl's default profile.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Signing profile in --config.
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// Rounds of the interleaved single-session measurement (raw C_Sign vs issue).
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Operations of each kind per round.
    #[arg(long, default_value_t = 40)]
    per_round: usize,
    /// Repetitions of each session count in the batch measurement.
    #[arg(long, default_value_t = 5)]
    batch_reps: usize,
    /// Session counts for the batch measurement.
    #[arg(long, default_value = "1,2,4", value_delimiter = ',')]
    jobs: Vec<usize>,
    /// Only the one-shot phase profile, as one JSON line.
    #[arg(long)]
    phases_only: bool,
    /// With --phases-only: split the module load into dlopen / C_Initialize, and the teardown.
    #[arg(long, requires = "phases_only")]
    split_load: bool,
    /// The floor of any one-shot PKCS#11 signer, for ci/bench to time as a process of its own:
    /// load the module, C_Initialize, find the token, C_Login, find the key by its URI, one
    /// C_Sign of a 700-byte message, C_Finalize, _exit. Nothing else (no X.509, no check).
    #[arg(long, conflicts_with_all = ["phases_only", "split_load"])]
    floor: bool,
    /// With --phases-only: issue in the login session on the main thread instead of through
    /// Batch::issue_all (which starts a worker thread with a session of its own).
    #[arg(long, requires = "phases_only", conflicts_with = "split_load")]
    inline_issue: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let r = if args.floor {
        floor(&args)
    } else if args.split_load {
        split_load(&args)
    } else if args.phases_only {
        phases_only(&args)
    } else {
        full(&args)
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p11ca-bench: error: {e}");
            std::process::ExitCode::from(e.kind().exit_code())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics.

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Sorted samples (any unit).
struct Stats(Vec<f64>);

impl Stats {
    fn new(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        Self(v)
    }
    /// Nearest-rank percentile, `p` in 0..=100.
    fn pct(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }
    fn median(&self) -> f64 {
        let n = self.0.len();
        if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            self.0[n / 2]
        } else {
            (self.0[n / 2 - 1] + self.0[n / 2]) / 2.0
        }
    }
    fn min(&self) -> f64 {
        self.0.first().copied().unwrap_or(f64::NAN)
    }
    fn max(&self) -> f64 {
        self.0.last().copied().unwrap_or(f64::NAN)
    }
}

// ---------------------------------------------------------------------------------------------
// The one-shot run, phase by phase, as `p11ca sign -ca … -ca-key … -config … -profile … CSR`
// does it (src/cli/sign.rs).

struct Phase {
    name: &'static str,
    ms: f64,
    /// Part of the one-shot sequence (false: measured on the side, already inside another).
    counted: bool,
}

struct Clock {
    last: Instant,
    phases: Vec<Phase>,
}

impl Clock {
    fn start() -> Self {
        Self {
            last: Instant::now(),
            phases: Vec::new(),
        }
    }
    fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.phases.push(Phase {
            name,
            ms: ms(now - self.last),
            counted: true,
        });
        self.last = now;
    }
    /// Time `f` on the side: shown, but not part of the one-shot total.
    fn aside<T>(&mut self, name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t = Instant::now();
        let r = f()?;
        self.phases.push(Phase {
            name,
            ms: ms(t.elapsed()),
            counted: false,
        });
        self.last = Instant::now();
        Ok(r)
    }
    fn total(&self) -> f64 {
        self.phases.iter().filter(|p| p.counted).map(|p| p.ms).sum()
    }
}

/// Everything a run needs once the token is open.
struct Ready {
    module: Module,
    token: TokenSummary,
    session: Session,
    ca: CaKey,
    profile: Profile,
    leaf: LeafRequest,
    /// The certificate the one-shot run issued.
    first_cert: Vec<u8>,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::input(format!("{}: cannot read: {e}", path.display())))
}

fn leaf_from_csr(bytes: &[u8], source: &str) -> Result<(LeafRequest, Vec<u8>)> {
    let csr = request::parse(bytes, source)?;
    let leaf = LeafRequest::from_csr(&csr, &SubjectOverride::default(), None)?;
    Ok((leaf, csr.der))
}

fn key_uri(value: &str) -> Result<Pkcs11Uri> {
    let text = if value.starts_with("pkcs11:") {
        value.to_string()
    } else {
        String::from_utf8_lossy(&read(Path::new(value))?).into_owned()
    };
    let uri = Pkcs11Uri::parse(text.trim())?;
    uri.check_key_handle("--ca-key")?;
    Ok(uri)
}

fn floor(args: &Args) -> Result<()> {
    let uri = key_uri(&args.ca_key)?;
    let path = Module::resolve_path(None, None)?;
    let module = Module::load(&path)?;
    let token = module.select_token(&selector(&uri)?)?;
    let pin = std::env::var("P11CA_PIN").map_err(|_| Error::input("set P11CA_PIN"))?;
    let session = module.login(&token, &AuthPin::from(pin))?;
    let found = key::find_private_key(&session, &token, &uri)?;
    let mech = SignMech::RsaWithHash(HashAlg::Sha256);
    TokenSigner::new(&session, found.handle, found.spki, mech)?.raw_sign(&[0x5a; 700])?;
    drop(session);
    drop(module); // C_Finalize
    // As p11ca itself ends (see src/main.rs).
    // SAFETY: ends the process; nothing of ours is left to run.
    unsafe { libc::_exit(0) }
}

/// The token selector, as the CLI makes it: the key URI's token attributes, else
/// `P11CA_TOKEN` (a label or a URI).
fn selector(key_uri: &Pkcs11Uri) -> Result<Pkcs11Uri> {
    let operator = Pkcs11Uri::operator(std::env::var("P11CA_TOKEN").ok().as_deref())?;
    Pkcs11Uri::selector_for_key(key_uri, operator)
}

fn one_shot(args: &Args, clock: &mut Clock) -> Result<Ready> {
    // Inputs, in the CLI's order: the CSR, then -ca, -ca-key and -config.
    let csr_source = args.csr.display().to_string();
    let (leaf, csr_der) = leaf_from_csr(&read(&args.csr)?, &csr_source)?;
    let csr_pem = build::pem("CERTIFICATE REQUEST", &csr_der)?;
    let ca_source = args.ca.display().to_string();
    let ca_cert = parse_ca_cert(&read(&args.ca)?, &ca_source)?;
    let key_uri = key_uri(&args.ca_key)?;
    let mut notices = Vec::new();
    let config = match &args.config {
        Some(p) => SigningConfig::from_json(&read(p)?, &p.display().to_string(), &mut notices)?,
        None => SigningConfig::cfssl_default(),
    };
    let profile = config.profile(args.profile.as_deref())?;
    clock.lap("parse inputs (CSR + its signature, CA cert, key URI, config)");

    let sel = selector(&key_uri)?;
    let path = Module::resolve_path(None, Some(&key_uri))?;
    let module = Module::load(&path)?;
    clock.lap("Module::load (dlopen + C_GetInterface + C_Initialize)");

    let token = module.select_token(&sel)?;
    clock.lap("token selection (C_GetSlotList + C_GetTokenInfo)");

    let mut warnings = Vec::new();
    let (pin, _) = pin::resolve(None, Some(&sel), &token.label, &mut warnings)?;
    let session = module.login(&token, &pin)?;
    drop(pin);
    clock.lap("PIN + C_OpenSession + C_Login");

    let found = key::find_private_key(&session, &token, &key_uri)?;
    clock.lap("key lookup (find_private_key)");

    let ca = CaKey::new(&module, &token, ca_cert, &ca_source, &found, &key_uri)?;
    clock.lap("CA/key check (CaKey::new, incl. mechanism query)");
    clock.aside("  of which: mechanism query (module.mechanisms)", || {
        module.mechanisms(token.slot)
    })?;

    let der = first_issue(
        args,
        clock,
        (&module, &token, &session),
        &ca,
        &leaf,
        profile,
    )?;

    gencert_output(&der, csr_pem)?;
    clock.lap("PEM + JSON output");

    // On the side, warm: the same work again without the batch wrapper, and the bare C_Sign.
    let issuer = Issuer::new(&ca, &session)?;
    clock.aside(
        "  aside: 2nd issue, Issuer::issue in the login session",
        || issuer.issue(&leaf, profile, &mut Vec::new()),
    )?;
    let tbs = tbs_of(&der)?;
    clock.aside("  aside: one raw C_Sign on that TBSCertificate", || {
        issuer.signer().raw_sign(&tbs)
    })?;
    drop(issuer);
    clock.aside("  aside: C_OpenSession + C_CloseSession", || {
        module.open_session(&token, "C_OpenSession").map(drop)
    })?;
    Ok(Ready {
        module,
        token,
        session,
        ca,
        profile: profile.clone(),
        leaf,
        first_cert: der,
    })
}

/// gencert's JSON for the certificate `der` and its CSR, written where nothing reads it.
fn gencert_output(der: &[u8], csr_pem: String) -> Result<()> {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("cert", build::pem("CERTIFICATE", der)?);
    fields.insert("csr", csr_pem);
    let json = output::result_json(&fields);
    std::io::sink()
        .write_all(json.as_bytes())
        .map_err(|e| Error::output(e.to_string()))
}

/// The first certificate of the one-shot path: through `Batch::issue_all` as `sign` does, or
/// inline in the login session (`--inline-issue`).
fn first_issue(
    args: &Args,
    clock: &mut Clock,
    (module, token, session): (&Module, &TokenSummary, &Session),
    ca: &CaKey,
    leaf: &LeafRequest,
    profile: &Profile,
) -> Result<Vec<u8>> {
    Ok(if args.inline_issue {
        // What issue_all could do for a single input: no worker thread, no second session.
        let der = Issuer::new(ca, session)?.issue(leaf, profile, &mut Vec::new())?;
        clock.lap("issue, 1 leaf, INLINE: Issuer::issue in the login session, no thread");
        der
    } else {
        let jobs = batch::session_count(module, token, None, 1);
        clock.lap("session_count (C_GetTokenInfo)");
        let leaves = [leaf.clone()];
        let batch = batch::Batch {
            module,
            token,
            ca,
            profile,
        };
        let mut results = batch.issue_all(&leaves, jobs, &|_, _, _| {})?;
        let (der, _warnings) = results
            .pop()
            .ok_or_else(|| Error::token("issue_all returned nothing"))??;
        clock.lap(
            "issue, 1 leaf (Batch::issue_all: thread, session, serial, build, C_Sign, verify)",
        );
        der
    })
}

fn tbs_of(cert_der: &[u8]) -> Result<Vec<u8>> {
    let cert = Certificate::from_der(cert_der)
        .map_err(|e| Error::input(format!("issued certificate does not parse: {e}")))?;
    cert.tbs_certificate()
        .to_der()
        .map_err(|e| Error::input(format!("cannot encode TBSCertificate: {e}")))
}

fn phases_json(clock: &Clock, mode: &str) -> String {
    let phases: Vec<serde_json::Value> = clock
        .phases
        .iter()
        .map(|p| serde_json::json!({"name": p.name, "ms": p.ms, "counted": p.counted}))
        .collect();
    serde_json::json!({"mode": mode, "phases": phases, "total_ms": clock.total()}).to_string()
}

fn phases_only(args: &Args) -> Result<()> {
    let mut clock = Clock::start();
    let ready = one_shot(args, &mut clock)?;
    drop(ready);
    clock.lap("teardown (C_CloseSession, drop module: C_Finalize, dlclose)");
    let mode = if args.inline_issue {
        "one-shot-inline"
    } else {
        "one-shot"
    };
    println!("{}", phases_json(&clock, mode));
    Ok(())
}

/// The module load split in its parts ([`Library`]; Module::load does both), and
/// the first signatures of a process apart from later ones: where a cold one-shot run spends
/// its time inside "issue, 1 leaf".
fn split_load(args: &Args) -> Result<()> {
    let key_uri = key_uri(&args.ca_key)?;
    let path = Module::resolve_path(None, Some(&key_uri))?;
    let ca_source = args.ca.display().to_string();
    let ca_cert = parse_ca_cert(&read(&args.ca)?, &ca_source)?;
    let (leaf, _) = leaf_from_csr(&read(&args.csr)?, &args.csr.display().to_string())?;
    let mut notices = Vec::new();
    let config = match &args.config {
        Some(p) => SigningConfig::from_json(&read(p)?, &p.display().to_string(), &mut notices)?,
        None => SigningConfig::cfssl_default(),
    };
    let profile = config.profile(args.profile.as_deref())?;
    let msg = vec![0x5a_u8; 700];

    let mut clock = Clock::start();
    let library = Library::open(&path)?;
    clock.lap("dlopen + C_GetInterface/C_GetFunctionList");
    let module = library.initialize()?;
    clock.lap("C_Initialize");
    {
        let sel = selector(&key_uri)?;
        let token = module.select_token(&sel)?;
        let (pin, _) = pin::resolve(None, Some(&sel), &token.label, &mut Vec::new())?;
        let session = module.login(&token, &pin)?;
        drop(pin);
        let found = key::find_private_key(&session, &token, &key_uri)?;
        let ca = CaKey::new(&module, &token, ca_cert, &ca_source, &found, &key_uri)?;
        let issuer = Issuer::new(&ca, &session)?;
        clock.lap("token selection, C_Login, key lookup, CaKey::new (as in the one-shot run)");
        issuer.signer().raw_sign(&msg)?;
        clock.lap("first C_Sign of the process (700 B)");
        issuer.signer().raw_sign(&msg)?;
        clock.lap("second C_Sign");
        issuer.issue(&leaf, profile, &mut Vec::new())?;
        clock.lap("first Issuer::issue of the process, after those C_Signs");
        issuer.issue(&leaf, profile, &mut Vec::new())?;
        clock.lap("second Issuer::issue");
    }
    drop(module);
    clock.lap("C_CloseSession, drop module (C_Finalize)");
    drop(library);
    clock.lap("dlclose");
    println!("{}", phases_json(&clock, "split-load"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The full benchmark.

fn load_leaves(args: &Args, ready: &Ready) -> Result<Vec<LeafRequest>> {
    let mut pool = Vec::new();
    if let Some(dir) = &args.csrs {
        let rd = std::fs::read_dir(dir)
            .map_err(|e| Error::input(format!("--csrs {}: {e}", dir.display())))?;
        let mut names: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "csr"))
            .collect();
        names.sort();
        for p in names {
            pool.push(leaf_from_csr(&read(&p)?, &p.display().to_string())?.0);
        }
        if pool.is_empty() {
            return Err(Error::input(format!(
                "--csrs {}: no *.csr files there",
                dir.display()
            )));
        }
    } else {
        pool.push(ready.leaf.clone());
    }
    Ok((0..args.n.max(1))
        .map(|i| pool[i % pool.len()].clone())
        .collect())
}

/// `total` raw C_Sign calls spread over `jobs` sessions (one thread each); the wall time.
fn raw_parallel(ready: &Ready, msg: &[u8], total: usize, jobs: usize) -> Result<Duration> {
    // Not `ready` itself in the threads: its login session may not cross threads.
    let (module, token, ca) = (&ready.module, &ready.token, &ready.ca);
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..jobs.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    let s = module.open_session(token, "C_OpenSession")?;
                    let issuer = Issuer::new(ca, &s)?;
                    while next.fetch_add(1, Ordering::Relaxed) < total {
                        issuer.signer().raw_sign(msg)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::token("a signing thread panicked")))
            })
            .collect()
    });
    let d = t.elapsed();
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(d)
}

/// `Batch::issue_all` over `leaves` with `jobs` sessions; the wall time (all must succeed).
fn batch_run(ready: &Ready, leaves: &[LeafRequest], jobs: usize) -> Result<Duration> {
    let t = Instant::now();
    let batch = batch::Batch {
        module: &ready.module,
        token: &ready.token,
        ca: &ready.ca,
        profile: &ready.profile,
    };
    let results = batch.issue_all(leaves, jobs, &|_, _, _| {})?;
    let d = t.elapsed();
    for r in results {
        r?;
    }
    Ok(d)
}

/// (busy, total) jiffies of the whole machine, from /proc/stat.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

fn time_each<T>(out: &mut Vec<f64>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let r = f()?;
    out.push(ms(t.elapsed()));
    Ok(r)
}

fn target(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn full(args: &Args) -> Result<()> {
    // D. The one-shot profile runs first, so the module load is as cold as in a fresh process.
    let mut clock = Clock::start();
    let ready = one_shot(args, &mut clock)?;
    let leaves = load_leaves(args, &ready)?;
    let tbs = tbs_of(&ready.first_cert)?;
    let mech = ready.ca.mechanism();
    let issuer = Issuer::new(&ready.ca, &ready.session)?;
    let key_alg = p11ca::x509::alg::KeyAlg::of(issuer.signer().public_key())?.name();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    println!(
        "p11ca-bench: token \"{}\" ({} {}), CA key {key_alg}, mechanism {}, TBSCertificate {} bytes",
        ready.token.label,
        ready.token.manufacturer,
        ready.token.model,
        mech.name(),
        tbs.len()
    );
    println!(
        "             module {}, {cores} cores, N={} leaves per batch run{}",
        ready.module.path().display(),
        leaves.len(),
        args.csrs
            .as_ref()
            .map_or(String::new(), |d| format!(" (from {})", d.display()))
    );
    println!();

    // Warm-up: caches, the allocator, SoftHSM's per-session state, thread creation.
    for _ in 0..20 {
        issuer.signer().raw_sign(&tbs)?;
        let der = issuer.issue(&ready.leaf, &ready.profile, &mut Vec::new())?;
        build::pem("CERTIFICATE", &der)?;
    }
    batch_run(&ready, &leaves[..leaves.len().min(8)], 2)?;

    let ab = ab_rounds(args, &ready, &issuer, &tbs)?;
    let br = breakdown(&ready, &issuer, &tbs)?;
    drop(issuer);
    let c = parallel_runs(args, &ready, &leaves, &tbs, cores)?;

    // Report.
    println!(
        "D. one-shot `sign` profile in this process (first use of the module, so cold as a fresh run)"
    );
    println!("   {:<84} {:>9}", "phase", "ms");
    for p in &clock.phases {
        println!("   {:<84} {:>9.3}", p.name, p.ms);
    }
    println!(
        "   {:<84} {:>9.3}",
        "total in-process (rows not marked aside/of which)",
        clock.total()
    );
    println!();

    let (raw, iss, ratio) = report_ab(&ab, &br, tbs.len());
    let (batch_1_over_raw, scaling) = report_parallel(args, &c, leaves.len(), cores);

    let summary = serde_json::json!({
        "mechanism": mech.name(),
        "tbs_bytes": tbs.len(),
        "raw_sign_ms_median": raw.median(),
        "raw_sign_ms_p95": raw.pct(95.0),
        "issue_ms_median": iss.median(),
        "issue_ms_p95": iss.pct(95.0),
        "inline_issue_over_raw": ratio.median(),
        "batch_1_over_raw": batch_1_over_raw,
        "scaling": scaling,
        "one_shot_in_process_ms": clock.total(),
    });
    println!("SUMMARY-JSON {summary}");
    Ok(())
}

/// A/B measurements: per-operation times (ms) and per-round rates of raw C_Sign and of the
/// full issue, and the per-round rate ratios.
struct AbRun {
    rounds: usize,
    per: usize,
    raw_ms: Vec<f64>,
    issue_ms: Vec<f64>,
    round_ratio: Vec<f64>,
    raw_rate: Vec<f64>,
    issue_rate: Vec<f64>,
}

/// A/B: raw C_Sign and the full issue in the same session, in alternating blocks.
fn ab_rounds(args: &Args, ready: &Ready, issuer: &Issuer<'_>, tbs: &[u8]) -> Result<AbRun> {
    let rounds = args.rounds.max(1);
    let per = args.per_round.max(1);
    let (mut raw_ms, mut issue_ms) = (Vec::new(), Vec::new());
    let mut round_ratio = Vec::new();
    let (mut raw_rate, mut issue_rate) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let mut block_raw = Duration::ZERO;
        let mut block_issue = Duration::ZERO;
        for kind in if r % 2 == 0 { [0, 1] } else { [1, 0] } {
            let t = Instant::now();
            for _ in 0..per {
                if kind == 0 {
                    time_each(&mut raw_ms, || issuer.signer().raw_sign(tbs))?;
                } else {
                    time_each(&mut issue_ms, || {
                        let der = issuer.issue(&ready.leaf, &ready.profile, &mut Vec::new())?;
                        build::pem("CERTIFICATE", &der)
                    })?;
                }
            }
            if kind == 0 {
                block_raw = t.elapsed();
            } else {
                block_issue = t.elapsed();
            }
        }
        raw_rate.push(per as f64 / block_raw.as_secs_f64());
        issue_rate.push(per as f64 / block_issue.as_secs_f64());
        round_ratio.push(block_raw.as_secs_f64() / block_issue.as_secs_f64());
    }

    Ok(AbRun {
        rounds,
        per,
        raw_ms,
        issue_ms,
        round_ratio,
        raw_rate,
        issue_rate,
    })
}

/// What an issue does besides C_Sign, each measured alone: times in microseconds.
struct Breakdown {
    reps: usize,
    rng_us: Vec<f64>,
    verify_us: Vec<f64>,
    rustcrypto_us: Vec<f64>,
    pem_us: Vec<f64>,
    build_us: Vec<f64>,
}

/// What an issue does besides C_Sign, each measured alone (same session).
fn breakdown(ready: &Ready, issuer: &Issuer<'_>, tbs: &[u8]) -> Result<Breakdown> {
    let reps = 200;
    let (mut rng_us, mut verify_us, mut pem_us, mut build_us) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut rustcrypto_us = Vec::new();
    let sig = issuer.signer().sign(tbs)?;
    let spki = issuer.signer().public_key().clone();
    let alg = issuer.signer().algorithm();
    for _ in 0..reps {
        let t = Instant::now();
        build::random_serial(issuer.signer() as &dyn Signer)?;
        rng_us.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        verify::verify(&spki, alg, tbs, &sig)?;
        verify_us.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        verify::verify_rustcrypto(&spki, alg, tbs, &sig)?;
        rustcrypto_us.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        build::pem("CERTIFICATE", &ready.first_cert)?;
        pem_us.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        Certificate::from_der(&ready.first_cert)
            .map_err(|e| Error::input(e.to_string()))?
            .to_der()
            .map_err(|e| Error::input(e.to_string()))?;
        build_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(Breakdown {
        reps,
        rng_us,
        verify_us,
        rustcrypto_us,
        pem_us,
        build_us,
    })
}

/// C measurements: per session count, the wall times (s) and cores used of the batch and of
/// raw C_Sign, and the cores this process and the machine kept busy meanwhile.
struct ParallelRun {
    jobs: Vec<usize>,
    batch_s: Vec<Vec<f64>>,
    raw_s: Vec<Vec<f64>>,
    batch_cores: Vec<Vec<f64>>,
    raw_cores: Vec<Vec<f64>>,
    own_cores: f64,
    machine: Option<f64>,
}

/// C: sessions in parallel, rotating the order of session counts between repetitions.
fn parallel_runs(
    args: &Args,
    ready: &Ready,
    leaves: &[LeafRequest],
    tbs: &[u8],
    cores: usize,
) -> Result<ParallelRun> {
    let jobs: Vec<usize> = if args.jobs.is_empty() {
        vec![1, 2, 4]
    } else {
        args.jobs.iter().map(|j| (*j).max(1)).collect()
    };
    let n = leaves.len();
    let mut batch_s: Vec<Vec<f64>> = vec![Vec::new(); jobs.len()];
    let mut raw_s: Vec<Vec<f64>> = vec![Vec::new(); jobs.len()];
    // Cores this process kept busy during each run (CPU time / wall time).
    let mut batch_cores: Vec<Vec<f64>> = vec![Vec::new(); jobs.len()];
    let mut raw_cores: Vec<Vec<f64>> = vec![Vec::new(); jobs.len()];
    let machine0 = machine_ticks();
    let own0 = process_cpu_secs();
    let c_start = Instant::now();
    for rep in 0..args.batch_reps.max(1) {
        for k in 0..jobs.len() {
            let i = (k + rep) % jobs.len();
            let c0 = process_cpu_secs();
            let d = batch_run(ready, leaves, jobs[i])?.as_secs_f64();
            batch_cores[i].push((process_cpu_secs() - c0) / d);
            batch_s[i].push(d);
            let c0 = process_cpu_secs();
            let d = raw_parallel(ready, tbs, n, jobs[i])?.as_secs_f64();
            raw_cores[i].push((process_cpu_secs() - c0) / d);
            raw_s[i].push(d);
        }
    }
    let c_wall = c_start.elapsed().as_secs_f64();
    let own_cores = (process_cpu_secs() - own0) / c_wall;
    let machine = machine_ticks().zip(machine0).map(|((b1, t1), (b0, t0))| {
        let busy = (b1 - b0) as f64 / (t1 - t0).max(1) as f64;
        busy * cores as f64
    });

    Ok(ParallelRun {
        jobs,
        batch_s,
        raw_s,
        batch_cores,
        raw_cores,
        own_cores,
        machine,
    })
}

/// Print A/B and the breakdown; the raw and issue statistics and the rate ratio.
fn report_ab(ab: &AbRun, br: &Breakdown, tbs_len: usize) -> (Stats, Stats, Stats) {
    let (rounds, per, reps) = (ab.rounds, ab.per, br.reps);
    let raw = Stats::new(ab.raw_ms.clone());
    let iss = Stats::new(ab.issue_ms.clone());
    let ratio = Stats::new(ab.round_ratio.clone());
    let raw_rate = Stats::new(ab.raw_rate.clone());
    let issue_rate = Stats::new(ab.issue_rate.clone());
    println!(
        "A/B. one session, {rounds} rounds x {per} ops of each, alternating which goes first (after warm-up)"
    );
    println!(
        "   {:<52} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "per signature", "median ms", "p95 ms", "min ms", "max ms", "rate/s (med)"
    );
    println!(
        "   {:<52} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>12.0}",
        format!("a raw C_Sign, {} B message", tbs_len),
        raw.median(),
        raw.pct(95.0),
        raw.min(),
        raw.max(),
        raw_rate.median()
    );
    println!(
        "   {:<52} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>12.0}",
        "b Issuer::issue + PEM (inline: verify on this thread)",
        iss.median(),
        iss.pct(95.0),
        iss.min(),
        iss.max(),
        issue_rate.median()
    );
    println!(
        "   b/a rate ratio: {:.3} (median of per-round ratios; rounds {:.3}..{:.3}); the batch path (C, 1 session) moves building and verifying off the session's thread",
        ratio.median(),
        ratio.min(),
        ratio.max(),
    );
    let (rng, ver, pem, rt) = (
        Stats::new(br.rng_us.clone()),
        Stats::new(br.verify_us.clone()),
        Stats::new(br.pem_us.clone()),
        Stats::new(br.build_us.clone()),
    );
    println!(
        "   what b adds to a, each alone ({reps}x, median / p95 in us): serial C_GenerateRandom(20) {:.1} / {:.1}, software verify {:.1} / {:.1}, DER re-parse+encode {:.1} / {:.1}, PEM {:.1} / {:.1}",
        rng.median(),
        rng.pct(95.0),
        ver.median(),
        ver.pct(95.0),
        rt.median(),
        rt.pct(95.0),
        pem.median(),
        pem.pct(95.0)
    );
    let rc = Stats::new(br.rustcrypto_us.clone());
    println!(
        "   software verify is ring's; the pure-Rust path (verify_rustcrypto, kept for keys ring does not take) would take {:.1} / {:.1}",
        rc.median(),
        rc.pct(95.0)
    );
    println!(
        "   b - a (median): {:.1} us per certificate",
        (iss.median() - raw.median()) * 1e3
    );
    println!();

    (raw, iss, ratio)
}

/// C's table rows, one per session count; the median issue and raw C_Sign rates of each.
fn parallel_rows(c: &ParallelRun, n: usize) -> (Vec<f64>, Vec<f64>) {
    let ParallelRun {
        jobs,
        batch_s,
        raw_s,
        batch_cores,
        raw_cores,
        ..
    } = c;
    let mut issue_med = Vec::new();
    let mut raw_med = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        let rates = Stats::new(batch_s[i].iter().map(|s| n as f64 / s).collect());
        let per_cert = Stats::new(batch_s[i].iter().map(|s| s * 1e3 / n as f64).collect());
        let raw_rates = Stats::new(raw_s[i].iter().map(|s| n as f64 / s).collect());
        println!(
            "   {:>8} {:>14.0} {:>18} {:>14.3} {:>12.3} {:>11.2} {:>14.0} {:>11.2} {:>10.3}",
            j,
            rates.median(),
            format!("{:.0}..{:.0}", rates.min(), rates.max()),
            per_cert.median(),
            per_cert.pct(95.0),
            Stats::new(batch_cores[i].clone()).median(),
            raw_rates.median(),
            Stats::new(raw_cores[i].clone()).median(),
            rates.median() / raw_rates.median()
        );
        issue_med.push(rates.median());
        raw_med.push(raw_rates.median());
    }
    (issue_med, raw_med)
}

/// Print C; the one-session issue/raw ratio and the scaling figures for the summary.
fn report_parallel(
    args: &Args,
    c: &ParallelRun,
    n: usize,
    cores: usize,
) -> (f64, serde_json::Map<String, serde_json::Value>) {
    let ParallelRun {
        jobs,
        own_cores,
        machine,
        ..
    } = c;
    println!(
        "C. parallel sessions: Batch::issue_all over {n} leaves vs raw C_Sign x {n}, {} reps, rotating order",
        args.batch_reps.max(1)
    );
    println!(
        "   {:>8} {:>14} {:>18} {:>14} {:>12} {:>11} {:>14} {:>11} {:>10}",
        "sessions",
        "issue/s (med)",
        "issue/s min..max",
        "ms/cert (med)",
        "ms/cert p95",
        "cores used",
        "raw C_Sign/s",
        "cores used",
        "issue/raw"
    );
    let (issue_med, raw_med) = parallel_rows(c, n);
    let one = jobs.iter().position(|j| *j == 1);
    let mut scaling = serde_json::Map::new();
    // Raw C_Sign per second over the whole run of N signatures (wall time), per session count:
    // what a tool signing N things through that many sessions is measured against.
    for (i, j) in jobs.iter().enumerate() {
        scaling.insert(format!("raw_rate_{j}"), serde_json::json!(raw_med[i]));
    }
    let mut batch_1_over_raw = f64::NAN;
    if let Some(o) = one {
        batch_1_over_raw = issue_med[o] / raw_med[o];
        println!(
            "   issue rate in one session (Batch::issue_all, 1 session) / raw C_Sign: {batch_1_over_raw:.3}; target >= 0.95: {}",
            target(batch_1_over_raw >= 0.95)
        );
        for (i, j) in jobs.iter().enumerate().filter(|(_, j)| **j != 1) {
            let s = issue_med[i] / issue_med[o];
            let sr = raw_med[i] / raw_med[o];
            let goal = if *j == 2 {
                format!("; target >= 1.6: {}", target(s >= 1.6))
            } else {
                String::new()
            };
            println!(
                "   scaling {j}/1: issue_all {s:.2}x, raw C_Sign {sr:.2}x (the token's own scaling){goal}"
            );
            scaling.insert(format!("issue_{j}_over_1"), serde_json::json!(s));
            scaling.insert(format!("raw_{j}_over_1"), serde_json::json!(sr));
        }
    }
    if let Some(m) = *machine {
        println!(
            "   during C the machine's {cores} cores were {m:.2} cores busy on average, {own_cores:.2} of them this process: {:.2} cores went to other processes",
            (m - own_cores).max(0.0)
        );
    }
    println!(
        "   (cores used: this process's CPU time / wall time, from /proc/self/stat, 10 ms ticks)"
    );
    println!();

    (batch_1_over_raw, scaling)
}
