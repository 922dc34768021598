//! `p11ca bundle` (cfssl's `bundle` for local files) and the `bundle`/`root` fields that
//! `-ca-bundle`/`-int-bundle` add to `sign` and `gencert -ca` output. The chain is built and
//! verified by `p11ca::x509::chain`.

use std::collections::BTreeMap;

use der::Decode;
use serde_json::{Value, json};
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use p11ca::x509::chain::{self, Chain};
use p11ca::{Error, Result};

use super::args::{BundleArgs, CaArgs};
use super::{read_input, write_stdout};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn certs_from(path: &str) -> Result<Vec<Certificate>> {
    let (bytes, name) = read_input(path)?;
    chain::read_certs(&bytes, &name)
}

/// The chain of `leaf` to a root in the file `roots`, through `extra` and the file `ints`.
fn chain_for(
    leaf: &Certificate,
    extra: &[Certificate],
    roots: &str,
    ints: Option<&str>,
) -> Result<Chain> {
    let roots = certs_from(roots)?;
    let mut intermediates = extra.to_vec();
    if let Some(i) = ints {
        intermediates.extend(certs_from(i)?);
    }
    chain::build_chain(leaf, &intermediates, &roots, now())
}

/// Before anything is signed: with -ca-bundle, the CA certificate `ca` (from -ca) must chain
/// to a root there (through -int-bundle), so every certificate it issues will.
pub(super) fn check_ca(c: &CaArgs, ca: &Certificate) -> Result<()> {
    let Some(roots) = c.ca_bundle.as_deref() else {
        return Ok(());
    };
    chain_for(ca, &[], roots, c.int_bundle.as_deref())
        .map(|_| ())
        .map_err(|e| e.context("-ca-bundle: the CA certificate given with -ca"))
}

/// What `-ca-bundle` chains are built from, read once per run (not per issued certificate):
/// the roots, and the intermediates (the issuing CA from -ca, then -int-bundle).
pub(super) struct ChainFiles {
    roots: Vec<Certificate>,
    intermediates: Vec<Certificate>,
}

impl ChainFiles {
    /// The files named by `c`, or `None` without -ca-bundle.
    pub(super) fn read(c: &CaArgs) -> Result<Option<Self>> {
        let Some(roots) = c.ca_bundle.as_deref() else {
            return Ok(None);
        };
        // The issuing CA (-ca) is an intermediate of the chain unless it is the root itself.
        let mut intermediates = match c.ca.as_deref() {
            Some(path) => certs_from(path)?,
            None => Vec::new(),
        };
        let in_bundle = |e: Error| e.context("-ca-bundle");
        let roots = certs_from(roots).map_err(in_bundle)?;
        if let Some(i) = c.int_bundle.as_deref() {
            intermediates.extend(certs_from(i).map_err(in_bundle)?);
        }
        Ok(Some(Self {
            roots,
            intermediates,
        }))
    }

    /// The `bundle` and `root` fields for the issued certificate `der`.
    pub(super) fn fields(&self, der: &[u8]) -> Result<Vec<(&'static str, String)>> {
        let leaf = Certificate::from_der(der)
            .map_err(|e| Error::input(format!("cannot re-read the issued certificate: {e}")))?;
        let chain = chain::build_chain(&leaf, &self.intermediates, &self.roots, now())
            .map_err(|e| e.context("-ca-bundle"))?;
        Ok(vec![
            ("bundle", chain.bundle_pem()?),
            ("root", chain.root_pem()?),
        ])
    }
}

/// [`ChainFiles::fields`] of `files`, none without -ca-bundle.
pub(super) fn fields_of(
    files: Option<&ChainFiles>,
    der: &[u8],
) -> Result<Vec<(&'static str, String)>> {
    files.map_or(Ok(Vec::new()), |f| f.fields(der))
}

/// `p11ca bundle -cert FILE -ca-bundle ROOTS [-int-bundle INTS]`: the chain, verified, as
/// cfssl bundle's JSON fields `bundle`, `crt`, `root`, `expires`, `leaf_expires`,
/// `hostnames`, `subject`, `issuer`.
pub(super) fn bundle(b: &BundleArgs) -> Result<()> {
    let mut given = certs_from(&b.cert)?;
    let leaf = given.remove(0);
    let chain = chain_for(&leaf, &given, &b.ca_bundle, b.int_bundle.as_deref())
        .map_err(|e| e.context(&b.cert))?;
    let tbs = leaf.tbs_certificate();
    let mut hostnames: Vec<String> = Vec::new();
    for atv in tbs
        .subject()
        .iter()
        .filter(|a| a.oid == const_oid::db::rfc4519::CN)
    {
        if let Some(cn) = p11ca::x509::name::value_text(&atv.value) {
            hostnames.push(cn);
        }
    }
    let sans = tbs
        .get_extension::<SubjectAltName>()
        .ok()
        .flatten()
        .map(|(_, s)| s.0)
        .unwrap_or_default();
    for san in sans {
        if let GeneralName::DnsName(h) = san
            && !hostnames.contains(&h.to_string())
        {
            hostnames.push(h.to_string());
        }
    }
    let mut out: BTreeMap<&str, Value> = BTreeMap::new();
    out.insert("bundle", json!(chain.bundle_pem()?));
    let crt = der::Encode::to_der(&leaf)
        .map_err(|e| Error::input(format!("{}: cannot encode the certificate: {e}", b.cert)))?;
    // As cfssl's bundler: PEM without the final newline.
    let crt = p11ca::x509::build::pem("CERTIFICATE", &crt)?;
    out.insert("crt", json!(crt.trim_end()));
    out.insert("root", json!(chain.root_pem()?.trim_end()));
    out.insert("expires", json!(super::certs::time(chain.expires())));
    let leaf_na = tbs.validity().not_after.to_unix_duration().as_secs() as i64;
    out.insert("leaf_expires", json!(super::certs::time(leaf_na)));
    out.insert("hostnames", json!(hostnames));
    out.insert("subject", json!(tbs.subject().to_string()));
    out.insert("issuer", json!(tbs.issuer().to_string()));
    let mut s = serde_json::to_string(&out).unwrap_or_default();
    s.push('\n');
    write_stdout(&s)
}
