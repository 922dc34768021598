//! The `p11ca` command line: turns parsed arguments into library calls and prints results.
//! The top of the program: it uses the library through `p11ca::` and nothing uses it.

// args.rs declares its clap types `pub` for main.rs; the lint is about the library's API.
#[allow(unreachable_pub)]
pub(crate) mod args;
mod audit;
mod bundle;
mod casigner;
mod certs;
mod crl;
mod keys;
mod kubeadm;
mod meta;
mod ocsp;
mod openssl_conf;
mod record;
mod remote;
mod renew;
mod revoke;
mod serve;
mod sign;
mod stream;
mod token_leaf;

pub(crate) use meta::parse_error_line;

use std::collections::BTreeMap;
use std::io::{Read, Write};

use p11ca::ca::init::{InitCaOptions, InitCaPlan};
use p11ca::cfssl::output;
use p11ca::token::{AuthPin, Module, Pkcs11Uri, Session, TokenSummary, pin, quirks};
use p11ca::{Error, Result};

use args::{
    CertinfoArgs, Cli, Command, GencertArgs, JsonArgs, KeyCommand, TokenArgs, TokenCommand,
};

/// Print a warning line on stderr.
pub(crate) fn warn(msg: &str) {
    eprintln!("p11ca: warning: {msg}");
}

/// Run one command. Token options given after the subcommand win over those before it.
pub(crate) fn run(cli: Cli) -> Result<()> {
    let before = &cli.token;
    match cli.command {
        Command::Gencert(g) if g.renewca => renew::gencert_renewca(&g.token.over(before)?, &g),
        Command::Gencert(g) if g.initca => gencert(&g.token.over(before)?, &g),
        Command::Gencert(g) if g.key_in_token => match remote::wanted(&g.signing)? {
            remote::Mode::Remote(_) => Err(Error::input(
                "--key-in-token makes the key in the CA key's token: the profile must sign locally (with -ca-key), not on a remote",
            )),
            remote::Mode::Local(config) => token_leaf::gencert(&g.token.over(before)?, &g, *config),
        },
        Command::Gencert(g) => match remote::wanted(&g.signing)? {
            remote::Mode::Remote(plan) => remote::gencert(&g, &plan),
            remote::Mode::Local(config) => sign::gencert_ca(&g.token.over(before)?, &g, *config),
        },
        Command::Sign(mut s) => {
            s.fold_csr();
            match remote::wanted(&s.signing)? {
                remote::Mode::Remote(plan) => remote::sign(&s, &plan),
                remote::Mode::Local(config) => sign::sign(&s.token.over(before)?, &s, *config),
            }
        }
        Command::Serve(a) => serve::serve(&a.token.over(before)?, &a),
        Command::Certs(c) => certs::run(&c),
        Command::Audit(c) => audit::run(&c, before),
        Command::Ocspsign(o) => ocsp::ocspsign(&o.token.over(before)?, &o),
        Command::Ocsprefresh(o) => ocsp::ocsprefresh(&o.token.over(before)?, &o),
        Command::Ocspserve(o) => ocsp::ocspserve(&o),
        Command::Gencrl(g) => crl::gencrl(&g.token.over(before)?, &g),
        Command::Kubeadm(k) => kubeadm::run(k, before),
        Command::Revoke(r) => revoke::revoke(&r),
        Command::Crl(c) => crl::crl(&c.token.over(before)?, &c),
        Command::Json(j) => json(&j),
        Command::Certinfo(c) => certinfo(&c),
        Command::Bundle(b) => bundle::bundle(&b),
        Command::Token(TokenCommand::List { token }) => keys::token_list(&token.over(before)?),
        Command::Key(KeyCommand::List { json, token }) => {
            keys::key_list(&token.over(before)?, json)
        }
        Command::Key(KeyCommand::Show { uri, json, token }) => {
            keys::key_show(&token.over(before)?, &uri, json)
        }
        Command::Key(KeyCommand::ImportCert { uri, cert, token }) => {
            renew::import_cert(&token.over(before)?, &uri, &cert)
        }
        Command::Key(KeyCommand::Retire {
            uri,
            delete,
            confirm_delete,
            token,
        }) => keys::key_retire(&token.over(before)?, &uri, delete, confirm_delete),
        Command::Key(KeyCommand::OpensslConf { handle, token }) => {
            openssl_conf::openssl_conf(&token.over(before)?, &handle)
        }
        Command::Key(KeyCommand::Attest {
            uri,
            cert,
            root,
            token,
        }) => keys::key_attest(&token.over(before)?, &uri, &cert, &root),
        Command::Version => meta::version(),
        Command::PrintDefaults { what } => meta::print_defaults(what),
        Command::Completion { shell } => meta::completion(shell),
        Command::Man { dir } => meta::man(&dir),
    }
}

/// Read a named input file, or stdin for `-`. Returns the bytes and the name to use in errors.
pub(crate) fn read_input(path: &str) -> Result<(Vec<u8>, String)> {
    if path == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| Error::input(format!("cannot read stdin: {e}")))?;
        return Ok((buf, "stdin".into()));
    }
    let bytes =
        std::fs::read(path).map_err(|e| Error::input(format!("{path}: cannot read: {e}")))?;
    Ok((bytes, path.to_string()))
}

/// Parse `--key-id` hex.
pub(crate) fn parse_hex(s: &str, flag: &str) -> Result<Vec<u8>> {
    let s = s.trim_start_matches("0x");
    match p11ca::text::unhex(s) {
        Some(b) if !b.is_empty() => Ok(b),
        _ => Err(Error::input(format!(
            "{flag} \"{s}\": give an even number of hex digits, e.g. 01a2"
        ))),
    }
}

/// A logged-in token.
pub(crate) struct Opened {
    /// The module.
    pub module: Module,
    /// The chosen token.
    pub token: TokenSummary,
    /// A logged-in read-write session.
    pub session: Session,
    /// The PIN, kept (zeroized on drop) for keys that need it for every signature.
    pub pin: AuthPin,
}

/// The token selector: the key handle's token attributes, which must agree with `--token`;
/// the module and the PIN source only ever come from the operator.
pub(crate) fn selector(args: &TokenArgs, key_uri: Option<&Pkcs11Uri>) -> Result<Pkcs11Uri> {
    let operator = Pkcs11Uri::operator(args.token.as_deref())?;
    match key_uri {
        Some(handle) => Pkcs11Uri::selector_for_key(handle, operator),
        None => Ok(operator),
    }
}

/// Load the module and choose the token, without logging in.
pub(crate) fn open_module(
    args: &TokenArgs,
    key_uri: Option<&Pkcs11Uri>,
) -> Result<(Module, TokenSummary, Pkcs11Uri)> {
    let sel = selector(args, key_uri)?;
    let path = Module::resolve_path(args.module.as_deref(), Some(&sel))?;
    let module = Module::load(&path)?;
    let token = module.select_token(&sel)?;
    Ok((module, token, sel))
}

/// Load, choose, get the PIN, and log in (once).
pub(crate) fn open_and_login(args: &TokenArgs, key_uri: Option<&Pkcs11Uri>) -> Result<Opened> {
    let mut warnings = Vec::new();
    let (module, token, pin) = module_and_pin(args, key_uri, &mut warnings)?;
    for w in &warnings {
        warn(w);
    }
    let session = module.login(&token, &pin)?;
    Ok(Opened {
        module,
        token,
        session,
        pin,
    })
}

/// [`open_and_login`] for making keys: the session is [`keygen_session`]'s.
pub(crate) fn open_for_keygen(
    args: &TokenArgs,
    key_uri: Option<&Pkcs11Uri>,
    so_pin_source: Option<&str>,
) -> Result<Opened> {
    let mut warnings = Vec::new();
    let (module, token, pin) = module_and_pin(args, key_uri, &mut warnings)?;
    let session = keygen_session(&module, &token, so_pin_source, &pin, &mut warnings)?;
    for w in &warnings {
        warn(w);
    }
    Ok(Opened {
        module,
        token,
        session,
        pin,
    })
}

/// Load, choose and get the user PIN.
fn module_and_pin(
    args: &TokenArgs,
    key_uri: Option<&Pkcs11Uri>,
    warnings: &mut Vec<String>,
) -> Result<(Module, TokenSummary, AuthPin)> {
    let (module, token, sel) = open_module(args, key_uri)?;
    let (pin, _origin) = pin::resolve(
        args.pin_source.as_deref(),
        Some(&sel),
        &token.label,
        warnings,
    )?;
    Ok((module, token, pin))
}

pub(crate) fn write_stdout(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::output(format!("cannot write to stdout: {e}")))
}

fn gencert(targs: &TokenArgs, g: &GencertArgs) -> Result<()> {
    let [file] = g.csr_json.as_slice() else {
        return Err(Error::input(
            "gencert -initca takes exactly one CSR JSON file",
        ));
    };
    let (bytes, name) = read_input(file)?;
    let req = sign::parse_request(&bytes, &name)?;
    let key_id = new_key_id(g)?;
    let opts = InitCaOptions {
        key_label: g.key_label.clone(),
        always_authenticate: g.always_authenticate,
        key_id,
        csr_only: g.csr_only,
    };
    // Validate the request fully before the token is touched or a PIN is asked for.
    let plan = InitCaPlan::new(&req, &name, &opts)?;
    let mut rec = record::Recording::new(
        g.signing.db_config.as_deref(),
        g.signing.db.as_deref(),
        None,
    )?;
    let Opened {
        module,
        token,
        session,
        pin,
    } = open_for_keygen(targs, None, g.so_pin_source.as_deref())?;
    // The CA certificate is recorded before it is output; if that fails, the new key goes.
    let mut record = |cert_pem: &str| {
        if cert_pem.is_empty() {
            // --csr-only: the parent signs the CSR; its certificate is recorded where it is issued.
            return Ok(());
        }
        rec.insert_pem(cert_pem, "the CA certificate", "initca")
    };
    let out = plan.run_recorded(&module, &token, &session, Some(&pin), &mut record)?;
    for w in &out.warnings {
        warn(w);
    }
    let mut fields = BTreeMap::new();
    if !out.cert_pem.is_empty() {
        fields.insert("cert", out.cert_pem);
    }
    fields.insert("csr", out.csr_pem);
    fields.insert("key_uri", out.key_uri.to_string());
    write_stdout(&output::result_json(&fields))
}

/// The session new keys are made in: the SO's where the token's key generation needs it
/// (ykcs11: the SO "PIN" is the PIV management key, read from `so_pin_source`; the user `pin`
/// still serves the per-signature logins), else the user's.
fn keygen_session(
    module: &Module,
    token: &TokenSummary,
    so_pin_source: Option<&str>,
    pin: &AuthPin,
    warnings: &mut Vec<String>,
) -> Result<Session> {
    let rules = quirks::for_token(token);
    if rules.keygen_needs_so {
        let src = so_pin_source.ok_or_else(|| {
            Error::input(format!(
                "{}: key generation needs the SO login (the PIV management key in hex): give --so-pin-source file:PATH or env:VAR",
                rules.name
            ))
        })?;
        let (so_pin, _) = pin::resolve(Some(src), None, &token.label, warnings)?;
        return module.login_so(token, &so_pin);
    }
    if so_pin_source.is_some() {
        warnings.push(format!(
            "--so-pin-source is not needed for token \"{}\" ({}); ignored",
            token.label, rules.name
        ));
    }
    module.login(token, pin)
}

/// The CKA_ID asked for the new key: `--piv-slot`'s byte, or `--key-id` in hex.
pub(crate) fn new_key_id(g: &GencertArgs) -> Result<Option<Vec<u8>>> {
    Ok(match (&g.piv_slot, &g.key_id) {
        (Some(slot), _) => Some(vec![quirks::piv_slot_id(slot)?]),
        (None, Some(hex)) => Some(parse_hex(hex, "--key-id")?),
        (None, None) => None,
    })
}

fn certinfo(c: &CertinfoArgs) -> Result<()> {
    use p11ca::cfssl::certinfo;
    if let Some(path) = &c.cert {
        let (bytes, name) = read_input(path)?;
        return write_stdout(&certinfo::to_go_json(&certinfo::cert_info(&bytes, &name)?));
    }
    let path = c.csr.as_deref().unwrap_or("-");
    let (bytes, name) = read_input(path)?;
    write_stdout(&certinfo::to_go_json(&certinfo::csr_info(&bytes, &name)?))
}

fn json(j: &JsonArgs) -> Result<()> {
    output::check_base(&j.name)?;
    let (bytes, name) = read_input(&j.file)?;
    let set = output::files_from_json(&bytes, &name, j.bare, &j.name)?;
    if j.stdout {
        let mut s = String::new();
        for (_, contents) in set.contents() {
            s.push_str(&String::from_utf8_lossy(contents));
            s.push('\n');
        }
        return write_stdout(&s);
    }
    set.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_lists_every_exit_code() {
        let listed: Vec<&str> = args::EXIT_CODES
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let mut codes = vec!["0".to_string()];
        codes.extend(p11ca::Kind::ALL.iter().map(|k| k.exit_code().to_string()));
        assert_eq!(listed, codes);
    }

    #[test]
    fn hex_ids() {
        assert_eq!(parse_hex("01a2", "--key-id").unwrap(), [1, 0xa2]);
        assert!(parse_hex("1", "--key-id").is_err());
        assert!(parse_hex("zz", "--key-id").is_err());
    }
}
