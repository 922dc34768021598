//! Certificate chains, pure DER: from a certificate up to a trusted root through given
//! intermediates, every link checked (issuer name, key identifiers, signature, CA constraint,
//! key usage, path length, validity), as cfssl's bundler does for its common case. Used by
//! `p11ca bundle` and by `-ca-bundle`/`-int-bundle` on `sign` and `gencert -ca`.

use der::{Decode, Encode};
use x509_cert::Certificate;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};

use crate::error::{Error, Result};
use crate::x509::alg::SigAlg;
use crate::x509::build;
use crate::x509::verify::verify;

/// Longest chain searched (leaf, intermediates, root).
const MAX_DEPTH: usize = 8;

/// A verified chain.
#[derive(Clone, Debug)]
pub struct Chain {
    /// The certificate, then each intermediate up to (not including) the root.
    pub certs: Vec<Certificate>,
    /// The trusted root the chain ends in.
    pub root: Certificate,
}

impl Chain {
    /// The certificate and its intermediates, PEM, one after the other with no trailing
    /// newline (cfssl's `bundle` field).
    pub fn bundle_pem(&self) -> Result<String> {
        let mut s = String::new();
        for c in &self.certs {
            s.push_str(&pem_of(c)?);
        }
        Ok(s.trim_end().to_string())
    }

    /// The root, PEM.
    pub fn root_pem(&self) -> Result<String> {
        pem_of(&self.root)
    }

    /// The earliest notAfter of the chain, root included (cfssl's `expires`), Unix seconds.
    pub fn expires(&self) -> i64 {
        self.certs
            .iter()
            .chain(std::iter::once(&self.root))
            .map(not_after)
            .min()
            .unwrap_or_default()
    }
}

fn pem_of(c: &Certificate) -> Result<String> {
    let der = c
        .to_der()
        .map_err(|e| Error::input(format!("cannot encode a certificate: {e}")))?;
    build::pem("CERTIFICATE", &der)
}

fn not_after(c: &Certificate) -> i64 {
    c.tbs_certificate()
        .validity()
        .not_after
        .to_unix_duration()
        .as_secs() as i64
}

fn not_before(c: &Certificate) -> i64 {
    c.tbs_certificate()
        .validity()
        .not_before
        .to_unix_duration()
        .as_secs() as i64
}

/// Every certificate in a PEM file (or the one DER certificate) read from `source`.
pub fn read_certs(bytes: &[u8], source: &str) -> Result<Vec<Certificate>> {
    if bytes.first() == Some(&0x30) {
        return Certificate::from_der(bytes)
            .map(|c| vec![c])
            .map_err(|e| Error::input(format!("{source}: not a valid X.509 certificate: {e}")));
    }
    let certs = Certificate::load_pem_chain(bytes)
        .map_err(|e| Error::input(format!("{source}: not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(Error::input(format!("{source}: holds no certificate")));
    }
    Ok(certs)
}

/// Whether `issuer` signed `child`, and may: names and key identifiers agree, the signature
/// verifies, `issuer` is a CA allowed to sign certificates, with `below` intermediates under
/// it within its path length. Err says why not.
fn check_link(
    child: &Certificate,
    issuer: &Certificate,
    below: usize,
) -> std::result::Result<(), String> {
    let (c, i) = (child.tbs_certificate(), issuer.tbs_certificate());
    if c.issuer() != i.subject() {
        return Err("names differ".into());
    }
    let aki = c
        .get_extension::<AuthorityKeyIdentifier>()
        .ok()
        .flatten()
        .and_then(|(_, a)| a.key_identifier);
    let ski = i.get_extension::<SubjectKeyIdentifier>().ok().flatten();
    if let (Some(aki), Some((_, ski))) = (aki, ski)
        && aki.as_bytes() != ski.0.as_bytes()
    {
        return Err("its key identifier is not the one the certificate names".into());
    }
    let alg = SigAlg::from_identifier(child.signature_algorithm()).map_err(|e| e.to_string())?;
    let tbs = c.to_der().map_err(|e| e.to_string())?;
    let sig = child.signature().raw_bytes();
    verify(i.subject_public_key_info(), alg, &tbs, sig)
        .map_err(|_| "the signature does not verify with its key".to_string())?;
    match i.get_extension::<BasicConstraints>().ok().flatten() {
        Some((_, bc)) if bc.ca => {
            if let Some(p) = bc.path_len_constraint
                && below > usize::from(p)
            {
                return Err(format!(
                    "its path length {p} does not allow {below} intermediate(s) below it"
                ));
            }
        }
        _ => return Err("it is not a CA (no basicConstraints CA:TRUE)".into()),
    }
    if let Some((_, KeyUsage(ku))) = i.get_extension::<KeyUsage>().ok().flatten()
        && !ku.contains(KeyUsages::KeyCertSign)
    {
        return Err("its key usage does not include certificate signing".into());
    }
    Ok(())
}

fn describe(c: &Certificate) -> String {
    c.tbs_certificate().subject().to_string()
}

/// The chain from `leaf` to one of `roots` through `intermediates`, every certificate valid
/// at `at` (Unix seconds). Roots are tried before intermediates at each step, so the shortest
/// chain wins; a cross-certificate among the intermediates leads to the other root.
pub fn build_chain(
    leaf: &Certificate,
    intermediates: &[Certificate],
    roots: &[Certificate],
    at: i64,
) -> Result<Chain> {
    let mut why = Vec::new();
    let mut path = vec![leaf.clone()];
    if let Some(chain) = search(&mut path, intermediates, roots, at, &mut why) {
        return Ok(chain);
    }
    why.dedup();
    let detail = if why.is_empty() {
        format!(
            "no certificate named {} among the intermediates and roots",
            leaf.tbs_certificate().issuer()
        )
    } else {
        why.join("; ")
    };
    Err(Error::policy(format!(
        "no chain from {} to a trusted root: {detail}",
        describe(leaf)
    )))
}

fn valid_at(c: &Certificate, at: i64) -> std::result::Result<(), String> {
    if at < not_before(c) {
        return Err("not valid yet".into());
    }
    if at > not_after(c) {
        return Err("expired".into());
    }
    Ok(())
}

fn search(
    path: &mut Vec<Certificate>,
    intermediates: &[Certificate],
    roots: &[Certificate],
    at: i64,
    why: &mut Vec<String>,
) -> Option<Chain> {
    let child = path.last()?.clone();
    if let Err(e) = valid_at(&child, at) {
        why.push(format!("{}: {e}", describe(&child)));
        return None;
    }
    let below = path.len() - 1;
    for root in roots {
        if child.tbs_certificate().issuer() != root.tbs_certificate().subject() {
            continue;
        }
        match check_link(&child, root, below).and_then(|()| valid_at(root, at)) {
            Ok(()) => {
                return Some(Chain {
                    certs: path.clone(),
                    root: root.clone(),
                });
            }
            Err(e) => why.push(format!("root {}: {e}", describe(root))),
        }
    }
    if path.len() >= MAX_DEPTH {
        return None;
    }
    for int in intermediates {
        if path.contains(int) || child.tbs_certificate().issuer() != int.tbs_certificate().subject()
        {
            continue;
        }
        if let Err(e) = check_link(&child, int, below) {
            why.push(format!("intermediate {}: {e}", describe(int)));
            continue;
        }
        path.push(int.clone());
        if let Some(c) = search(path, intermediates, roots, at, why) {
            return Some(c);
        }
        path.pop();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x509::Signer;
    use crate::x509::alg::KeyAlg;
    use crate::x509::build::CertParams;
    use crate::x509::name::{self, SubjectSpec};
    use crate::x509::softkey::SoftKey;
    use der::flagset::FlagSet;

    const NOW: i64 = 1_800_000_000;

    fn name(cn: &str) -> x509_cert::name::Name {
        name::build(&SubjectSpec {
            cn,
            names: &[],
            serial_number: "",
        })
        .unwrap()
    }

    /// A certificate for `key` named `cn`, signed by `by` (key, name); CA with `path_len`
    /// when `ca`; valid from `from` to `to`.
    fn cert(
        key: &SoftKey,
        cn: &str,
        by: (&SoftKey, &str),
        ca: Option<Option<u8>>,
        (from, to): (i64, i64),
    ) -> Certificate {
        let mut exts = vec![build::ski_ext(key.public_key()).unwrap()];
        if let Some(p) = ca {
            exts.push(build::basic_constraints_ext(true, p).unwrap());
            exts.push(
                build::key_usage_ext(FlagSet::from(KeyUsages::KeyCertSign) | KeyUsages::CRLSign)
                    .unwrap(),
            );
        }
        let params = CertParams {
            serial: build::random_serial(by.0).unwrap(),
            issuer: name(by.1),
            subject: name(cn),
            subject_key: key.public_key().clone(),
            not_before: from,
            not_after: to,
            extensions: exts,
        };
        Certificate::from_der(&build::certificate(&params, by.0).unwrap()).unwrap()
    }

    const LIFE: (i64, i64) = (NOW - 100, NOW + 100);

    #[test]
    fn root_intermediate_leaf() {
        let (rk, ik, lk) = (
            SoftKey::generate(KeyAlg::EcP256).unwrap(),
            SoftKey::generate(KeyAlg::EcP256).unwrap(),
            SoftKey::generate(KeyAlg::EcP256).unwrap(),
        );
        let root = cert(&rk, "root", (&rk, "root"), Some(None), LIFE);
        let int = cert(&ik, "int", (&rk, "root"), Some(Some(0)), LIFE);
        let (ints1, roots1) = (std::slice::from_ref(&int), std::slice::from_ref(&root));
        let leaf = cert(&lk, "leaf", (&ik, "int"), None, LIFE);
        let c = build_chain(&leaf, ints1, roots1, NOW).unwrap();
        assert_eq!(c.certs, [leaf.clone(), int.clone()]);
        assert_eq!(c.root, root);
        assert_eq!(c.expires(), NOW + 100);
        // Missing intermediate, expired root, wrong root.
        let e = build_chain(&leaf, &[], roots1, NOW).unwrap_err();
        assert!(e.message().contains("no certificate named CN=int"), "{e}");
        let e = build_chain(&leaf, ints1, roots1, NOW + 200).unwrap_err();
        assert!(e.message().contains("expired"), "{e}");
        let other = cert(&lk, "root", (&lk, "root"), Some(None), LIFE);
        let e = build_chain(&leaf, ints1, &[other], NOW).unwrap_err();
        assert!(e.message().contains("signature does not verify"), "{e}");
        // pathlen 0 on int: no intermediate below it.
        let k2 = SoftKey::generate(KeyAlg::EcP256).unwrap();
        let int2 = cert(&k2, "int2", (&ik, "int"), Some(None), LIFE);
        let leaf2 = cert(&lk, "leaf2", (&k2, "int2"), None, LIFE);
        let e = build_chain(&leaf2, &[int.clone(), int2], roots1, NOW).unwrap_err();
        assert!(e.message().contains("path length 0"), "{e}");
        // A non-CA cannot issue.
        let fake = cert(&ik, "int", (&rk, "root"), None, LIFE);
        let e = build_chain(&leaf, &[fake], &[root], NOW).unwrap_err();
        assert!(e.message().contains("not a CA"), "{e}");
    }

    #[test]
    fn a_file_without_certificates_is_an_error() {
        let e = read_certs(b"hello\n", "x.pem").unwrap_err();
        assert!(e.message().starts_with("x.pem: "), "{e}");
    }
}
