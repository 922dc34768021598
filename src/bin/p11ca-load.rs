//! `p11ca-load`: a bounded load client for cfssl's signing API (`p11ca serve`, `cfssl serve`).
//!
//! N threads, each with one keep-alive connection, each send M sign requests (fixed counts: it
//! stops by itself) for the same CSR, spread over the given servers. Every certificate that
//! comes back is checked in software against the CA certificate and for serial uniqueness.
//! Prints one JSON line with the counts and the rate; exits 1 if any request failed or any
//! certificate did not verify. `--info` sends `info` requests instead (nothing is signed or
//! recorded): what an HTTP round trip alone costs the server. Meant for loopback only (ci/bench-serve); it asserts nothing
//! about time.
//!
//! ```sh
//! p11ca-load --server 127.0.0.1:8888 --ca ca.pem --csr node.csr --profile kubernetes -c 8 -n 250
//! ```

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use clap::Parser;
use der::{Decode, Encode};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;

#[path = "common/procstat.rs"]
mod procstat;
use procstat::process_cpu_secs;

use p11ca::cfssl::config::AuthKey;
use p11ca::client::{RemoteClient, SignRequest};
use p11ca::x509::alg::SigAlg;
use p11ca::x509::verify::verify;

#[derive(Parser, Debug)]
#[command(
    name = "p11ca-load",
    about = "Bounded load on a cfssl-protocol signer (loopback benchmarks; prints figures)"
)]
struct Args {
    /// A signer, host:port; several are used in turn (thread i talks to server i mod count).
    #[arg(long = "server", required = true, value_name = "HOST:PORT")]
    servers: Vec<String>,
    /// The CA certificate every answer must verify against.
    #[arg(long, value_name = "FILE")]
    ca: PathBuf,
    /// The PEM CSR to send.
    #[arg(long, value_name = "FILE")]
    csr: PathBuf,
    /// The signing profile.
    #[arg(long, default_value = "")]
    profile: String,
    /// Use /authsign with this shared key (hex).
    #[arg(long, value_name = "HEX")]
    auth_key: Option<String>,
    /// Concurrent clients.
    #[arg(short = 'c', default_value_t = 8)]
    clients: usize,
    /// Requests per client.
    #[arg(short = 'n', default_value_t = 100)]
    requests: usize,
    /// Append every certificate received (PEM) to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Send `info` requests for the profile instead of sign requests (no certificates, so
    /// nothing for `--out`).
    #[arg(long, conflicts_with = "out")]
    info: bool,
}

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let fail = |m: String| {
        eprintln!("p11ca-load: error: {m}");
        std::process::ExitCode::from(1)
    };
    let ca = match std::fs::read(&a.ca)
        .map_err(|e| e.to_string())
        .and_then(|b| p11ca::ca::issue::parse_ca_cert(&b, "--ca").map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => return fail(format!("{}: {e}", a.ca.display())),
    };
    let csr = match std::fs::read_to_string(&a.csr) {
        Ok(c) => c,
        Err(e) => return fail(format!("{}: {e}", a.csr.display())),
    };
    let auth = match a.auth_key.as_deref().map(p11ca::text::unhex) {
        None => None,
        Some(Some(k)) => Some(AuthKey::new("load", k)),
        Some(None) => return fail("--auth-key: give hex".into()),
    };
    let ca_spki = ca.tbs_certificate().subject_public_key_info().clone();
    let cpu0 = process_cpu_secs();
    let t0 = Instant::now();
    let (received, errors) = if a.info {
        run_info(&a)
    } else {
        run_clients(&a, &csr, auth.as_ref())
    };
    let secs = t0.elapsed().as_secs_f64();
    let cpu = process_cpu_secs() - cpu0;
    // An info answer carries nothing to verify.
    let (unique, bad) = if a.info {
        (received.len(), 0)
    } else {
        let (serials, bad) = check(&received, &ca_spki);
        (serials.len(), bad)
    };
    if let Some(path) = &a.out {
        let mut text = String::new();
        for der in &received {
            text.push_str(&p11ca::x509::build::pem("CERTIFICATE", der).unwrap_or_default());
        }
        if let Err(e) = std::fs::write(path, text) {
            return fail(format!("{}: {e}", path.display()));
        }
    }
    let total = a.clients.max(1) * a.requests;
    println!(
        "{}",
        serde_json::json!({
            "servers": a.servers,
            "clients": a.clients.max(1),
            "requests": total,
            "ok": received.len(),
            "errors": errors.len(),
            "first_error": errors.first(),
            "verified": received.len() - bad,
            "unique_serials": unique,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "client_cpu_seconds": cpu,
            "requests_per_second": ((received.len() as f64 / secs) * 10.0).round() / 10.0,
        })
    );
    if !errors.is_empty() || bad > 0 || unique != received.len() {
        return std::process::ExitCode::from(1);
    }
    std::process::ExitCode::SUCCESS
}

/// `a.clients` clients (one thread each) send `a.requests` sign requests each, spread over
/// the servers; the certificates received (DER) and the errors.
fn run_clients(a: &Args, csr: &str, auth: Option<&AuthKey>) -> (Vec<Vec<u8>>, Vec<String>) {
    let received: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::with_capacity(a.clients * a.requests));
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for i in 0..a.clients.max(1) {
            let server = &a.servers[i % a.servers.len()];
            let (csr, profile, auth, received, errors) =
                (csr, &a.profile, auth, &received, &errors);
            s.spawn(move || {
                let client = match RemoteClient::new(server) {
                    Ok(c) => c,
                    Err(e) => {
                        errors.lock().unwrap().push(e.to_string());
                        return;
                    }
                };
                for _ in 0..a.requests {
                    let req = SignRequest {
                        csr_pem: csr,
                        hosts: None,
                        profile,
                        label: "",
                        subject: None,
                    };
                    match client.sign(&req, auth) {
                        Ok((pem, _)) => match der::pem::decode_vec(pem.as_bytes()) {
                            Ok((_, der)) => received.lock().unwrap().push(der),
                            Err(e) => errors.lock().unwrap().push(format!("bad PEM: {e}")),
                        },
                        Err(e) => errors.lock().unwrap().push(e.to_string()),
                    }
                }
            });
        }
    });
    (received.into_inner().unwrap(), errors.into_inner().unwrap())
}

/// Check every certificate: signed by the CA (`ca_spki`), serials unique. The serials seen
/// and how many certificates failed.
/// `a.clients` clients send `a.requests` info requests each; each answer that names a
/// certificate counts as received (as an empty item: there is nothing to verify).
fn run_info(a: &Args) -> (Vec<Vec<u8>>, Vec<String>) {
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for i in 0..a.clients.max(1) {
            let (server, answered, errors) = (&a.servers[i % a.servers.len()], &answered, &errors);
            s.spawn(move || {
                let client = match RemoteClient::new(server) {
                    Ok(c) => c,
                    Err(e) => return errors.lock().unwrap().push(e.to_string()),
                };
                for _ in 0..a.requests {
                    match client.info("", &a.profile) {
                        Ok(v) if v.get("certificate").is_some() => {
                            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(v) => errors
                            .lock()
                            .unwrap()
                            .push(format!("info without a certificate: {v}")),
                        Err(e) => errors.lock().unwrap().push(e.to_string()),
                    }
                }
            });
        }
    });
    (
        vec![Vec::new(); answered.into_inner()],
        errors.into_inner().unwrap(),
    )
}

fn check(received: &[Vec<u8>], ca_spki: &SubjectPublicKeyInfoOwned) -> (BTreeSet<Vec<u8>>, usize) {
    let mut serials = BTreeSet::new();
    let mut bad = 0usize;
    for der in received {
        let ok = Certificate::from_der(der).ok().is_some_and(|c| {
            serials.insert(c.tbs_certificate().serial_number().as_bytes().to_vec());
            let tbs = c.tbs_certificate().to_der().unwrap_or_default();
            let sig = c.signature().as_bytes().unwrap_or_default();
            SigAlg::from_identifier(c.signature_algorithm())
                .and_then(|alg| verify(ca_spki, alg, &tbs, sig))
                .is_ok()
        });
        if !ok {
            bad += 1;
        }
    }
    (serials, bad)
}
