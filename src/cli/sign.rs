//! `gencert -ca` and `sign`: certificates signed by the CA key in the token, for one input or
//! a batch (one login, N parallel sessions).

use std::collections::BTreeMap;
use std::path::Path;

use p11ca::ca::batch;
use p11ca::ca::issue::{CaKey, LeafRequest, check_leaf, parse_ca_cert};
use p11ca::cfssl::config::{Profile, SigningConfig};
use p11ca::cfssl::csr::CsrRequest;
use p11ca::cfssl::output;
use p11ca::fsio::{OutputSet, PUBLIC_MODE, SECRET_MODE};
use p11ca::token::Pkcs11Uri;
use p11ca::token::key;
use p11ca::x509::hosts::{self, San};
use p11ca::x509::name::{self, SubjectOverride, SubjectSpec};
use p11ca::x509::softkey::SoftKey;
use p11ca::x509::{Signer, build, request};
use p11ca::{Error, Result};

use super::args::{CaArgs, GencertArgs, SignArgs, TokenArgs};
use super::record::Recording;
use super::stream;
use super::{open_and_login, read_input, warn, write_stdout};

/// `-config` as read for local signing, with the notices parsing it gave.
pub(crate) struct LocalConfig {
    pub(super) config: SigningConfig,
    pub(super) notices: Vec<String>,
}

/// Turn a `-ca-key` value into the key's URI.
pub(crate) fn ca_key_uri(value: &str) -> Result<Pkcs11Uri> {
    key_uri_of(value, "-ca-key")
}

/// Turn the value of a key-handle flag (`-ca-key`, `-responder-key`) into the key's URI.
pub(crate) fn key_uri_of(value: &str, flag: &str) -> Result<Pkcs11Uri> {
    let (text, source) = if value.starts_with("pkcs11:") {
        (value.to_string(), flag.to_string())
    } else if let Some(var) = value.strip_prefix("env:") {
        let v = std::env::var(var).map_err(|_| {
            Error::input(format!("{flag} env:{var}: the variable {var} is not set"))
        })?;
        (v, format!("{flag} env:{var}"))
    } else {
        let path = value.strip_prefix("file:").unwrap_or(value);
        let (bytes, name) = read_input(path)?;
        (String::from_utf8_lossy(&bytes).into_owned(), name)
    };
    let text = text.trim();
    if text.contains("PRIVATE KEY") {
        return Err(Error::input(format!(
            "{source} is a private key file: p11ca signs only with keys in a token; create the CA with `p11ca gencert -initca` and use its NAME-key.uri"
        )));
    }
    if !text.starts_with("pkcs11:") {
        return Err(Error::input(format!(
            "{source} does not hold a pkcs11: URI; give the NAME-key.uri written by `p11ca json -bare` or a URI such as 'pkcs11:token=T;object=ca'"
        )));
    }
    let uri = Pkcs11Uri::parse(text).map_err(|e| e.context(&source))?;
    uri.check_key_handle(&source)?;
    Ok(uri)
}

/// The signing configuration from `-config`, or cfssl's default; notices go to stderr.
pub(super) fn load_config(path: Option<&str>) -> Result<SigningConfig> {
    let Some(path) = path else {
        return Ok(SigningConfig::cfssl_default());
    };
    let (bytes, name) = read_input(path)?;
    let mut notices = Vec::new();
    let config = SigningConfig::from_json(&bytes, &name, &mut notices)?;
    for n in &notices {
        warn(n);
    }
    Ok(config)
}

/// Everything needed from -ca/-ca-key/-config/-profile, validated before the token is opened.
pub(super) struct Prepared {
    pub(super) ca_cert: x509_cert::Certificate,
    pub(super) ca_source: String,
    pub(super) key_uri: Pkcs11Uri,
    pub(super) profile: Profile,
}

/// `-ca` (the CA certificate, parsed, and its name for messages) and `-ca-key` (the key
/// handle), both required.
pub(super) fn ca_and_key(
    ca: Option<&str>,
    ca_key: Option<&str>,
) -> Result<(x509_cert::Certificate, String, Pkcs11Uri)> {
    let ca =
        ca.ok_or_else(|| Error::input("-ca is required: the CA certificate, e.g. -ca ca.pem"))?;
    let ca_key = ca_key.ok_or_else(|| {
        Error::input("-ca-key is required: the key handle, e.g. -ca-key ca-key.uri")
    })?;
    let (bytes, ca_source) = read_input(ca)?;
    let ca_cert = parse_ca_cert(&bytes, &ca_source)?;
    Ok((ca_cert, ca_source, ca_key_uri(ca_key)?))
}

pub(super) fn prepare(c: &CaArgs, local: LocalConfig) -> Result<Prepared> {
    let (ca_cert, ca_source, key_uri) = ca_and_key(c.ca.as_deref(), c.ca_key.as_deref())?;
    for n in &local.notices {
        warn(n);
    }
    let profile = local.config.profile(c.profile.as_deref())?;
    super::bundle::check_ca(c, &ca_cert)?;
    if let Some(dir) = c.out.as_deref().filter(|d| !Path::new(d).is_dir()) {
        return Err(Error::output(format!(
            "--out {dir}: not a folder; create it first"
        )));
    }
    if c.jobs == Some(0) {
        return Err(Error::input("--jobs must be at least 1"));
    }
    Ok(Prepared {
        ca_cert,
        ca_source,
        key_uri,
        profile: profile.clone(),
    })
}

pub(super) fn hostname_sans(c: &CaArgs) -> Result<Option<Vec<San>>> {
    c.hostname
        .as_deref()
        .map(|h| hosts::parse_list(&h.split(',').collect::<Vec<_>>(), "-hostname"))
        .transpose()
}

/// One input after local processing: what to certify, plus the outputs that go with it.
pub(super) struct Item {
    pub(super) name: String,
    pub(super) leaf: LeafRequest,
    pub(super) csr_pem: String,
    pub(super) key_pem: Option<String>,
}

/// The files of one issued item, for `--out DIR`.
pub(super) fn out_files(dir: &str, item: &Item, cert_pem: &str) -> OutputSet {
    out_files_of(
        dir,
        &item.name,
        &item.csr_pem,
        item.key_pem.as_deref(),
        cert_pem,
    )
}

/// The `--out DIR` files of input `name`: its certificate, CSR and (`gencert`) node key.
pub(super) fn out_files_of(
    dir: &str,
    name: &str,
    csr_pem: &str,
    key_pem: Option<&str>,
    cert_pem: &str,
) -> OutputSet {
    let base = out_base(name, dir);
    let mut set = OutputSet::new();
    set.add(format!("{base}.pem"), cert_pem.to_string(), PUBLIC_MODE);
    set.add(format!("{base}.csr"), csr_pem.to_string(), PUBLIC_MODE);
    if let Some(k) = key_pem {
        set.add(format!("{base}-key.pem"), k.to_string(), SECRET_MODE);
    }
    set
}

/// The base name for `--out`: the input's file stem without a trailing `-csr`.
pub(super) fn out_base(input: &str, dir: &str) -> String {
    let stem = Path::new(input)
        .file_stem()
        .map_or("cert".into(), |s| s.to_string_lossy().into_owned());
    let stem = stem.strip_suffix("-csr").unwrap_or(&stem).to_string();
    Path::new(dir).join(stem).to_string_lossy().into_owned()
}

/// Print the results (unless `--out` wrote them already); report failures per input. Exit
/// code: the first failure's.
pub(super) fn emit(
    c: &CaArgs,
    items: &[Item],
    results: Vec<batch::Issued>,
    mut failures: Vec<Error>,
) -> Result<()> {
    let single = items.len() + failures.len() == 1;
    let files = super::bundle::ChainFiles::read(c)?;
    let mut stdout = String::new();
    for (item, r) in items.iter().zip(results) {
        let (der, warnings) = match r {
            Ok(x) => x,
            Err(e) => {
                failures.push(if single { e } else { e.context(&item.name) });
                continue;
            }
        };
        for w in &warnings {
            warn(&if single {
                w.clone()
            } else {
                format!("{}: {w}", item.name)
            });
        }
        if c.out.is_some() {
            continue;
        }
        let mut fields = BTreeMap::new();
        fields.insert("cert", build::pem("CERTIFICATE", &der)?);
        fields.insert("csr", item.csr_pem.clone());
        // -ca-bundle/-int-bundle: the verified chain (bundle, root).
        match super::bundle::fields_of(files.as_ref(), &der) {
            Ok(b) => fields.extend(b),
            Err(e) => {
                failures.push(if single { e } else { e.context(&item.name) });
                continue;
            }
        }
        if let Some(k) = &item.key_pem {
            fields.insert("key", k.clone());
        }
        if !single {
            fields.insert("input", item.name.clone());
        }
        stdout.push_str(&output::result_json(&fields));
    }
    write_stdout(&stdout)?;
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        n => {
            let first = failures.remove(0);
            for f in &failures {
                eprintln!("p11ca: error: {f}");
            }
            Err(Error::new(
                first.kind(),
                format!("{first} ({n} inputs failed)"),
            ))
        }
    }
}

/// Read the CSR inputs of `sign`: files, a --batch folder, or concatenated PEM on stdin.
/// Named input bytes.
pub(super) type Inputs = Vec<(String, Vec<u8>)>;

pub(super) fn sign_inputs(s: &SignArgs) -> Result<(Inputs, Option<CsrRequest>)> {
    let mut inputs = Vec::new();
    let mut subject = None;
    let positional = s.inputs.clone();
    match (&s.batch, positional.as_slice()) {
        (Some(_), [_, ..]) => return Err(Error::input("give CSR files or --batch, not both")),
        (None, []) => return Err(Error::input("sign needs a CSR file (or --batch DIR)")),
        (Some(dir), []) if dir == "-" => {
            let (bytes, _) = read_input("-")?;
            let text = String::from_utf8_lossy(&bytes);
            for (i, block) in text
                .split_inclusive("-----END CERTIFICATE REQUEST-----")
                .enumerate()
            {
                if block.contains("-----BEGIN") {
                    inputs.push((format!("stdin#{}", i + 1), block.as_bytes().to_vec()));
                }
            }
        }
        (Some(dir), []) => {
            let rd =
                std::fs::read_dir(dir).map_err(|e| Error::input(format!("--batch {dir}: {e}")))?;
            let mut names: Vec<_> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "csr"))
                .collect();
            names.sort();
            for p in names {
                let (b, n) = read_input(&p.to_string_lossy())?;
                inputs.push((n, b));
            }
        }
        (None, [csr, second]) if looks_like_json(second) => {
            let (b, n) = read_input(second)?;
            subject = Some(parse_request(&b, &n)?);
            let (b, n) = read_input(csr)?;
            inputs.push((n, b));
        }
        (None, files) => {
            for f in files {
                let (b, n) = read_input(f)?;
                inputs.push((n, b));
            }
        }
    }
    if inputs.is_empty() {
        return Err(Error::input("no CSR found in the batch input"));
    }
    Ok((inputs, subject))
}

pub(super) fn looks_like_json(path: &str) -> bool {
    path.ends_with(".json")
        || std::fs::read(path).is_ok_and(|b| b.trim_ascii_start().first() == Some(&b'{'))
}

/// The subject override a cfssl subject.json gives (none without one).
pub(super) fn subject_override(req: Option<&CsrRequest>) -> SubjectOverride<'_> {
    match req {
        Some(r) => SubjectOverride {
            cn: &r.cn,
            names: &r.names,
            serial_number: &r.serialnumber,
        },
        None => SubjectOverride::default(),
    }
}

/// One CSR input as an item: self-signature checked, subject canonicalized with `ov`, SANs
/// from the CSR unless `-hostname` replaces them.
pub(super) fn csr_item(
    name: &str,
    bytes: &[u8],
    ov: &SubjectOverride<'_>,
    host_override: &Option<Vec<San>>,
) -> Result<Item> {
    let csr = request::parse(bytes, name)?;
    let leaf =
        LeafRequest::from_csr(&csr, ov, host_override.clone()).map_err(|e| e.context(name))?;
    Ok(Item {
        name: name.to_string(),
        leaf,
        csr_pem: build::pem("CERTIFICATE REQUEST", &csr.der)?,
        key_pem: None,
    })
}

/// Refuse a batch in which two inputs would write the same `--out` files (`a.csr` and
/// `a-csr.csr` both write `a.pem`): one certificate would silently replace the other, or the
/// files of one input would end up beside the key or CSR of the other.
fn check_out_names(out: Option<&str>, items: &[Item]) -> Result<()> {
    check_names(out, items.iter().map(|i| i.name.as_str()))
}

/// [`check_out_names`] for the inputs' names (a list given on the command line).
fn check_names<'a>(out: Option<&str>, names: impl Iterator<Item = &'a str>) -> Result<()> {
    let Some(dir) = out else { return Ok(()) };
    let mut seen: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for name in names {
        let name = if name == "-" { "stdin" } else { name };
        let base = out_base(name, dir);
        if let Some(first) = seen.insert(base.clone(), name) {
            return Err(Error::input(format!(
                "inputs {first} and {name} would both write {base}.pem (and its .csr); rename one of them. Nothing was signed"
            )));
        }
    }
    Ok(())
}

/// Split per-input results into items and failures; with a single input its error is the
/// run's error. Inputs whose `--out` files would collide refuse the whole run.
pub(super) fn collect_items(
    made: Vec<Result<Item>>,
    out: Option<&str>,
) -> Result<(Vec<Item>, Vec<Error>)> {
    let single = made.len() == 1;
    let mut items = Vec::new();
    let mut failures = Vec::new();
    for r in made {
        match r {
            Ok(i) => items.push(i),
            Err(e) if single => return Err(e),
            Err(e) => failures.push(e),
        }
    }
    check_out_names(out, &items)?;
    Ok((items, failures))
}

pub(super) fn sign(targs: &TokenArgs, s: &SignArgs, local: LocalConfig) -> Result<()> {
    let (source, subject_req) = sign_source(s)?;
    let ov = subject_override(subject_req.as_ref());
    let host_override = hostname_sans(&s.signing)?;
    let prepared = prepare(&s.signing, local)?;
    let make = |name: &str, bytes: &[u8]| csr_item(name, bytes, &ov, &host_override);
    stream_local(targs, &s.signing, prepared, source, &make, 1)
}

/// The CSR inputs of local `sign`, read lazily: files, a --batch folder, or PEM on stdin;
/// and the subject JSON of `sign CSR SUBJECT.json`. Inputs that would write the same
/// `--out` files are refused here, before anything is signed.
fn sign_source(s: &SignArgs) -> Result<(stream::Source, Option<CsrRequest>)> {
    let out = s.signing.out.as_deref();
    match (&s.batch, s.inputs.as_slice()) {
        (Some(_), [_, ..]) => Err(Error::input("give CSR files or --batch, not both")),
        (None, []) => Err(Error::input("sign needs a CSR file (or --batch DIR)")),
        (Some(dir), []) if dir == "-" => Ok((stream::stdin_pem(), None)),
        (Some(dir), []) => {
            if let Some(out) = out {
                stream::check_folder_names(dir, out)?;
            }
            Ok((stream::folder(dir)?, None))
        }
        (None, [csr, second]) if looks_like_json(second) => {
            let (b, n) = read_input(second)?;
            let subject = parse_request(&b, &n)?;
            Ok((stream::files(vec![csr.clone()]), Some(subject)))
        }
        (None, files) => {
            check_names(out, files.iter().map(String::as_str))?;
            Ok((stream::files(files.to_vec()), None))
        }
    }
}

/// Issue every input of `source` locally: items made by `make` (with `parallel` threads),
/// checked against the policy, signed in parallel sessions, recorded, then output.
fn stream_local(
    targs: &TokenArgs,
    c: &CaArgs,
    p: Prepared,
    source: stream::Source,
    make: stream::Make<'_>,
    parallel: usize,
) -> Result<()> {
    let (single, source) = stream::peek_single(source)?;
    let rec = Recording::new(c.db_config.as_deref(), c.db.as_deref(), c.config.as_deref())?;
    let Prepared {
        ca_cert,
        ca_source,
        key_uri,
        profile,
    } = p;
    let ca_subject = ca_cert.tbs_certificate().subject().clone();
    let check = |item: &Item| {
        check_leaf(&item.leaf, &profile, &ca_subject).map_err(|e| e.context(&item.name))
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sessions = c.jobs.unwrap_or(cores).max(1);
    let mut ca_cert = Some(ca_cert);
    let mut sign = |leaves: batch::Leaves<'_>, on_issued: batch::OnIssued<'_>| {
        let ca_cert = ca_cert
            .take()
            .ok_or_else(|| Error::input("the batch was started twice"))?;
        let opened = open_and_login(targs, Some(&key_uri))?;
        let found = key::find_private_key(&opened.session, &opened.token, &key_uri)?;
        let mut ca = CaKey::new(
            &opened.module,
            &opened.token,
            ca_cert,
            &ca_source,
            &found,
            &key_uri,
        )?;
        // Kept for a re-login after a stale session and for always-authenticate keys.
        ca.set_pin(opened.pin.clone());
        let inputs = if single { 1 } else { usize::MAX };
        let jobs = batch::session_count(&opened.module, &opened.token, c.jobs, inputs);
        // The login session signs too (on this thread when the input is single).
        let super::Opened {
            module,
            token,
            session,
            ..
        } = opened;
        let batch = batch::Batch {
            module: &module,
            token: &token,
            ca: &ca,
            profile: &profile,
        };
        let r = batch.issue_stream(leaves, jobs, on_issued, Some(session));
        // The process exits after this: finalize, but leave the library loaded.
        drop(ca);
        module.finalize_for_exit();
        r
    };
    let files = super::bundle::ChainFiles::read(c)?;
    let chain = |der: &[u8]| super::bundle::fields_of(files.as_ref(), der);
    let plan = stream::OutPlan {
        chain: &chain,
        out: c.out.as_deref(),
        single,
        profile: &profile.name,
        writers: sessions.max(2),
    };
    let inputs = stream::Inputs {
        source,
        make,
        check: &check,
        parallel,
    };
    stream::run(inputs, plan, rec, stream::WINDOW * sessions, &mut sign)
}

/// A CSR JSON (or subject JSON) file, each field it ignores warned about.
pub(super) fn parse_request(bytes: &[u8], name: &str) -> Result<CsrRequest> {
    let mut notices = Vec::new();
    let req = CsrRequest::from_json_noting(bytes, name, &mut notices)?;
    for n in &notices {
        warn(n);
    }
    Ok(req)
}

/// Whether certificates of this profile can serve TLS: server auth, any, or no extended key
/// usage at all (which restricts nothing).
pub(super) fn for_servers(profile: &Profile) -> bool {
    use const_oid::db::rfc5280::{ANY_EXTENDED_KEY_USAGE, ID_KP_SERVER_AUTH};
    profile.ext_key_usage.is_empty()
        || profile
            .ext_key_usage
            .iter()
            .any(|o| *o == ID_KP_SERVER_AUTH || *o == ANY_EXTENDED_KEY_USAGE)
}

/// Build one `gencert -ca` item: parse, make the node key, and its CSR. `for_servers`: the
/// profile is for TLS servers, so a certificate without hosts is warned about.
pub(super) fn gencert_item(
    name: &str,
    bytes: &[u8],
    cn: Option<&str>,
    host_override: &Option<Vec<San>>,
    for_servers: bool,
) -> Result<Item> {
    let req = parse_request(bytes, name)?;
    if req.ca.is_some() {
        return Err(Error::input(format!(
            "{name}: the \"ca\" section is only allowed with -initca"
        )));
    }
    let spec = req.key_spec(name)?;
    let cn = cn.unwrap_or(&req.cn);
    let subject = name::build(&SubjectSpec {
        cn,
        names: &req.names,
        serial_number: &req.serialnumber,
    })
    .map_err(|e| e.context(name))?;
    let sans = match host_override {
        Some(s) => s.clone(),
        None => hosts::parse_list(&req.hosts, &format!("{name}: hosts"))?,
    };
    if sans.is_empty() && for_servers {
        warn(&format!(
            "{name}: this certificate lacks a \"hosts\" field, so it is not suitable for websites (as cfssl warns)"
        ));
    }
    // The node key is made in software, as in cfssl: it is shipped to the node.
    let node_key = SoftKey::generate(spec.into())?;
    let mut csr_exts = Vec::new();
    if let Some(e) = hosts::extension(&sans, subject.is_empty())? {
        csr_exts.push(e);
    }
    let csr_der = build::csr(&subject, csr_exts, &node_key)?;
    Ok(Item {
        name: name.to_string(),
        leaf: LeafRequest {
            subject,
            public_key: node_key.public_key().clone(),
            sans,
            wants_ca: false,
        },
        csr_pem: build::pem("CERTIFICATE REQUEST", &csr_der)?,
        key_pem: Some(node_key.to_pem()?.to_string()),
    })
}

/// The items of `gencert -ca` (local or remote): each csr.json read, its node key made (in
/// parallel, one thread per core: RSA generation is slow) and its CSR signed by that key.
pub(super) fn gencert_items(
    g: &GencertArgs,
    host_override: &Option<Vec<San>>,
    for_servers: bool,
) -> Result<(Vec<Item>, Vec<Error>)> {
    let mut inputs = Vec::new();
    for f in &g.csr_json {
        inputs.push(read_input(f)?);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let made: Vec<Result<Item>> = std::thread::scope(|scope| {
        let chunk = inputs.len().div_ceil(cores).max(1);
        let handles: Vec<_> = inputs
            .chunks(chunk)
            .map(|part| {
                let cn = g.cn.as_deref();
                scope.spawn(move || {
                    part.iter()
                        .map(|(b, n)| gencert_item(n, b, cn, host_override, for_servers))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Err(Error::input("node key generation failed"))])
            })
            .collect()
    });
    collect_items(made, g.signing.out.as_deref())
}

pub(super) fn gencert_ca(targs: &TokenArgs, g: &GencertArgs, local: LocalConfig) -> Result<()> {
    let host_override = hostname_sans(&g.signing)?;
    // Validate the signing side before spending time on keys.
    let prepared = prepare(&g.signing, local)?;
    let servers = for_servers(&prepared.profile);
    check_names(
        g.signing.out.as_deref(),
        g.csr_json.iter().map(String::as_str),
    )?;
    let cn = g.cn.as_deref();
    let make = |name: &str, bytes: &[u8]| gencert_item(name, bytes, cn, &host_override, servers);
    // Node keys are made in parallel, one thread per core: RSA generation is slow.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let source = stream::files(g.csr_json.clone());
    stream_local(targs, &g.signing, prepared, source, &make, cores)
}
