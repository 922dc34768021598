//! Time and peak memory of building and signing a CRL with `x509::crl::build_crl` (issue #13's
//! scale target: 1,000,000 entries in at most 5 s and 400 MiB). Prints figures, asserts nothing.
//!
//! ```text
//! cargo run --release --features bench-tools --bin p11ca-crl-bench -- N soft-ec|soft-rsa
//! cargo run --release --features bench-tools --bin p11ca-crl-bench -- N token CA.pem CA-KEY.uri
//! cargo run --release --features bench-tools --bin p11ca-crl-bench -- N fill-store DB CA.pem
//! ```
//!
//! `fill-store` makes the SQLite certificate store DB (which must not exist) hold N revoked
//! certificates of the CA in CA.pem, recorded and revoked through `p11ca::db::Store` (so with
//! p11ca's columns and cfssl's encodings), each row carrying a PEM as large as CA.pem's: the
//! input `p11ca crl --db DB` is then timed on (ci/bench step 6).
//!
//! The token form reads `P11CA_MODULE` (or the URI's module-path), `P11CA_TOKEN` and
//! `P11CA_PIN` as p11ca does. The N entries (20-octet serials, reasons cycling through all
//! ten) are held in a `Vec` before the timed call, so the peak RSS printed (VmHWM) includes
//! the input list as a caller holding it would: run one N per process. `CRL_BENCH_OUT=FILE`
//! writes the DER CRL (untimed).

use std::time::Instant;

use der::DecodePem;
use x509_cert::Certificate;

use p11ca::Result;
use p11ca::token::signer::{SignMech, TokenSigner};
use p11ca::token::{Module, Pkcs11Uri, key, pin};
use p11ca::x509::Signer;
use p11ca::x509::alg::{KeyAlg, SigAlg};
use p11ca::x509::build::{self, CertParams};
use p11ca::x509::crl::{Reason, RevokedEntry, build_crl};
use p11ca::x509::softkey::SoftKey;

const NOW: i64 = 1_780_000_000;

fn entries(n: usize) -> Vec<RevokedEntry> {
    (1..=n as u64)
        .map(|i| {
            let mut serial = [0u8; 20];
            serial[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
            serial[12..].copy_from_slice(&i.to_be_bytes());
            RevokedEntry {
                serial: serial.to_vec(),
                revoked_at: NOW - (i as i64 % 100_000),
                reason: Some(Reason::ALL[i as usize % Reason::ALL.len()]),
            }
        })
        .collect()
}

fn soft_ca(spec: KeyAlg) -> Result<(Certificate, SoftKey)> {
    let key = SoftKey::generate(spec)?;
    let name: x509_cert::name::Name = "CN=crl bench CA".parse().expect("name");
    let usages =
        x509_cert::ext::pkix::KeyUsages::KeyCertSign | x509_cert::ext::pkix::KeyUsages::CRLSign;
    let p = CertParams {
        serial: x509_cert::serial_number::SerialNumber::new(&[1]).expect("serial"),
        issuer: name.clone(),
        subject: name,
        subject_key: key.public_key().clone(),
        not_before: NOW - 86_400,
        not_after: NOW + 86_400 * 3650,
        extensions: vec![
            build::basic_constraints_ext(true, None)?,
            build::key_usage_ext(usages)?,
            build::ski_ext(key.public_key())?,
        ],
    };
    let der = build::certificate(&p, &key)?;
    Ok((der::Decode::from_der(&der).expect("CA certificate"), key))
}

fn run(n: usize, mode: &str, ca: &Certificate, signer: &dyn Signer) -> Result<()> {
    let list = entries(n);
    let start = Instant::now();
    let der = build_crl(
        ca,
        list,
        &42u64.to_be_bytes(),
        NOW,
        NOW + 7 * 86_400,
        signer,
    )?;
    let secs = start.elapsed().as_secs_f64();
    // To check a large CRL with another tool (`openssl crl -inform DER -CAfile ...`).
    if let Some(out) = std::env::var_os("CRL_BENCH_OUT") {
        std::fs::write(out, &der).expect("write CRL_BENCH_OUT");
    }
    let hwm = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(str::to_string)
        })
        .unwrap_or_default();
    println!(
        "{n} entries, {mode} {:?}: build+sign+verify {secs:.3} s, CRL {:.1} MiB, peak RSS {hwm}",
        signer.algorithm(),
        der.len() as f64 / 1048576.0
    );
    Ok(())
}

/// Record and revoke `n` certificates of the CA `ca_pem` into a new SQLite store `db`, in
/// chunks (one transaction each for the records and for their revocation).
fn fill_store(n: usize, db: &str, ca_pem: &str) -> Result<()> {
    use p11ca::db::{CertRecord, DbConfig, Store};
    assert!(
        !std::path::Path::new(db).exists(),
        "{db} exists; give a new file"
    );
    let pem = std::fs::read_to_string(ca_pem).expect("CA.pem");
    let ca = Certificate::from_pem(pem.as_bytes()).expect("PEM");
    let aki = p11ca::text::hex(&p11ca::x509::crl::ca_key_identifier(&ca)?);
    let mut store = Store::open(&DbConfig::Sqlite(db.into()))?;
    let start = Instant::now();
    let now = p11ca::db::now();
    let all = entries(n);
    for (i, chunk) in all.chunks(50_000).enumerate() {
        let recs: Vec<CertRecord> = chunk
            .iter()
            .map(|e| CertRecord {
                serial_number: p11ca::text::decimal(&e.serial),
                authority_key_identifier: aki.clone(),
                serial_hex: p11ca::text::hex(&e.serial),
                subject: "CN=crl bench node".into(),
                common_name: "crl bench node".into(),
                sans: vec!["node.example".into()],
                profile: "bench".into(),
                not_before: now - 86_400,
                not_after: now + 365 * 86_400,
                pem: pem.clone(),
                requester: "p11ca-crl-bench".into(),
                auth_key: String::new(),
                issued_at: now - 86_400,
            })
            .collect();
        store.insert(&recs.iter().collect::<Vec<_>>())?;
        let items: Vec<(String, String)> = recs
            .into_iter()
            .map(|r| (r.serial_number, r.authority_key_identifier))
            .collect();
        let reason = Reason::ALL[i % Reason::ALL.len()];
        store.revoke_many(&items, reason, now - 3600)?;
    }
    println!(
        "{n} revoked certificates of {aki} recorded in {db} in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .expect("usage: N MODE ...");
    match args.get(1).map(String::as_str) {
        Some("soft-ec") => {
            let (ca, key) = soft_ca(KeyAlg::EcP256)?;
            run(n, &args[1], &ca, &key)
        }
        Some("soft-rsa") => {
            let (ca, key) = soft_ca(KeyAlg::Rsa(2048))?;
            run(n, &args[1], &ca, &key)
        }
        Some("token") => {
            let ca = Certificate::from_pem(std::fs::read(&args[2]).expect("CA.pem")).expect("PEM");
            let uri_text = std::fs::read_to_string(&args[3]).expect("CA-KEY.uri");
            let uri = Pkcs11Uri::parse(uri_text.trim())?;
            let mut op = Pkcs11Uri::default();
            op.token = std::env::var("P11CA_TOKEN").ok();
            let sel = Pkcs11Uri::selector_for_key(&uri, op)?;
            let module = Module::load(&Module::resolve_path(None, Some(&uri))?)?;
            let token = module.select_token(&sel)?;
            let (pin, _) = pin::resolve(None, Some(&sel), &token.label, &mut Vec::new())?;
            let session = module.login(&token, &pin)?;
            let found = key::find_private_key(&session, &token, &uri)?;
            let alg = SigAlg::for_key(KeyAlg::of(&found.spki)?);
            let mechs = module.mechanisms(token.slot)?;
            let mech = SignMech::choose(&mechs, alg, &token.label)?;
            let signer = TokenSigner::new(&session, found.handle, found.spki.clone(), mech)?;
            run(n, "token", &ca, &signer)
        }
        Some("fill-store") => fill_store(n, &args[2], &args[3]),
        _ => panic!(
            "usage: crl_bench N soft-ec|soft-rsa|token CA.pem CA-KEY.uri|fill-store DB CA.pem"
        ),
    }
}
