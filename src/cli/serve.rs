//! `p11ca serve`: check everything, log in once, then serve until SIGTERM/SIGINT.
//!
//! Startup fails fast, with the usual one error line and exit code, on: bad flags or config
//! (1), a port that cannot be bound (1), a store that cannot be opened or migrated (4), a token,
//! login or key problem (2), a CA certificate that does not match the key (3). On SIGTERM or
//! SIGINT the server stops accepting, finishes and records what is in flight, and exits 0.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use socket2::{Domain, Socket, Type};

use p11ca::ca::batch;
use p11ca::ca::issue::CaKey;
use p11ca::ca::ocsp::ResponderKey;
use p11ca::cfssl::config::{AuthKey, SigningConfig};
use p11ca::cfssl::duration::GoDuration;
use p11ca::db::{DbConfig, Recorder, Store};
use p11ca::serve::api::Service;
use p11ca::serve::crl::CrlCache;
use p11ca::serve::guard::{Guard, HostPolicy, Limits};
use p11ca::serve::ocsp::Responder;
use p11ca::serve::signing::Signers;
use p11ca::serve::upkeep::{self, Upkeep};
use p11ca::serve::{Server, Stats, TlsOptions, wake};
use p11ca::tls;
use p11ca::token::pool::SessionPool;
use p11ca::token::{Pkcs11Uri, key};
use p11ca::x509::build;
use p11ca::x509::ocsp::ResponderIdForm;
use p11ca::{Error, Result};
use regex::Regex;

use super::args::{ServeArgs, TokenArgs};
use super::{open_and_login, warn};

/// Pending connections the kernel holds for the accept thread (capped by net.core.somaxconn).
const LISTEN_BACKLOG: i32 = 1024;

pub(super) fn serve(targs: &TokenArgs, a: &ServeArgs) -> Result<()> {
    // 1. Everything that can be checked without the token.
    let given = inputs(a)?;

    let crl = CrlCache::new(&given.ca_cert, given.crl_lifetime)?;

    // 2. The port, before the token: a taken port costs no login.
    let listener = bind(a, given.tls.is_some())?;

    // 3. The store (created and migrated if needed).
    let store = Store::open(&given.db)?;
    let ocsp = ocsp_responder(a, &given.db)?;

    // 4. The token: one login, the keys, the sessions and the signing threads.
    let responder = (given.responder, given.responder_id);
    let signing = open_signing(
        targs,
        a,
        &given.key_uri,
        given.ca_cert,
        &given.ca_source,
        responder,
    )?;
    let service = Arc::new(Service {
        ca: signing.ca,
        ca_pem: given.ca_pem,
        config: given.config,
        pool: signing.pool,
        signers: signing.signers,
        recorder: Recorder::start(store, given.db.clone()),
        max_body: a.max_body,
        replays: Default::default(),
        revoke_key: given.revoke_key,
        crl,
        ocsp,
        responder: signing.responder,
        responder_id: given.responder_id,
    });
    // The CRL is published before the first request (a failure here stops the start-up).
    service.publish_crl("serve")?;
    let stop = Arc::new(AtomicBool::new(false));
    let addr = listener
        .local_addr()
        .map_err(|e| Error::input(format!("cannot read the bound address: {e}")))?;
    let listening = listening(
        given.tls.as_ref(),
        addr,
        &signing.token.label,
        &service,
        &given.key_uri,
        &given.db,
    );
    let mut server = Server::new(service.clone(), listener, stop.clone(), guard(a, addr)?);
    if let Some(t) = given.tls {
        server = server.with_tls(t);
    }
    let stats = server.stats.clone();
    let upkeep = Upkeep::start(service.clone(), given.db.clone(), CHECKPOINT_EVERY)?;

    // 5. Signals: the first stops gracefully; more (a supervisor and `timeout` may both
    // send one) change nothing.
    stop_on_signals(stop, addr)?;

    eprintln!("{listening}");
    server.run();

    // 6. Everything in flight has been answered; flush the store, sign the last audit
    // checkpoint and say goodbye.
    upkeep.stop();
    service.recorder.sync();
    final_checkpoint(&service, &given.db);
    finish(service, &stats);
    drop(signing.module);
    Ok(())
}

/// The line `serve` says it is ready with: where it listens, the token, its sessions, the key
/// and the store.
fn listening(
    tls: Option<&TlsOptions>,
    addr: SocketAddr,
    token: &str,
    service: &Service,
    key_uri: &Pkcs11Uri,
    db: &DbConfig,
) -> String {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mutual = if tls.is_some_and(|t| t.mutual) {
        ", client certificates required"
    } else {
        ""
    };
    let sessions = service.pool.size();
    format!(
        "p11ca: serve: listening on {scheme}://{addr}{mutual} (token \"{token}\", {sessions} signing session{}, {key_uri} with {}, store: {})",
        if sessions == 1 { "" } else { "s" },
        service.ca.mechanism().name(),
        db.describe()
    )
}

/// What `serve` signs with: the module (kept until the end), the token, the CA key, the
/// session pool, the signing threads and the delegated OCSP responder.
struct Signing {
    module: p11ca::token::Module,
    token: p11ca::token::TokenSummary,
    ca: Arc<CaKey>,
    pool: Arc<SessionPool>,
    signers: Signers,
    responder: Option<ResponderKey>,
}

/// Log in once; the CA certificate must belong to the key. Memory is locked first, so the
/// PIN kept for re-logins is never written to swap.
fn open_signing(
    targs: &TokenArgs,
    a: &ServeArgs,
    key_uri: &Pkcs11Uri,
    ca_cert: x509_cert::Certificate,
    ca_source: &str,
    (responder, responder_id): (
        Option<(x509_cert::Certificate, String, Pkcs11Uri)>,
        ResponderIdForm,
    ),
) -> Result<Signing> {
    lock_memory();
    let opened = open_and_login(targs, Some(key_uri))?;
    let found = key::find_private_key(&opened.session, &opened.token, key_uri)?;
    let mut ca = CaKey::new(
        &opened.module,
        &opened.token,
        ca_cert,
        ca_source,
        &found,
        key_uri,
    )?;
    // Kept for keys that need the PIN for every signature (a PIV card's slot 9c).
    ca.set_pin(opened.pin.clone());
    let mut responder = responder_key(&opened, &ca, responder)?;
    if let Some(rk) = &mut responder {
        rk.set_id_form(responder_id);
    }
    // The signing threads (default: the cores), and one session more where the token allows
    // it, so that /revoke's OCSP response and the CRL do not queue behind issuance (/health
    // checks the login session, which is not one of them).
    let signing = batch::session_count(&opened.module, &opened.token, a.jobs, usize::MAX);
    let sessions =
        batch::session_count(&opened.module, &opened.token, Some(signing + 1), usize::MAX);
    let pool = SessionPool::open(&opened.module, &opened.token, sessions, opened.session)?
        .with_relogin_pin(opened.pin.clone());
    let (ca, pool) = (Arc::new(ca), Arc::new(pool));
    let signers = Signers::start(ca.clone(), pool.clone(), signing.min(pool.size()))?;

    Ok(Signing {
        module: opened.module,
        token: opened.token,
        ca,
        pool,
        signers,
        responder,
    })
}

/// The OCSP responder of `-ocsp-path`, if one is asked for (the store is opened after
/// migration, so it is created here if needed).
fn ocsp_responder(a: &ServeArgs, db: &DbConfig) -> Result<Option<Responder>> {
    let Some(path) = &a.ocsp_path else {
        return Ok(None);
    };
    if !path.starts_with('/') || !path.ends_with('/') || path.starts_with("/api/") || path.len() < 2
    {
        return Err(Error::input(format!(
            "-ocsp-path \"{path}\": give a path of its own that starts and ends with /, such as /ocsp/"
        )));
    }
    Ok(Some(Responder::from_store(db.clone(), path)?))
}

/// How often `serve` signs an audit checkpoint (when something was appended since the last).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);

/// The checkpoint over everything this run appended (a failure is a warning: the records are
/// chained and the next run's checkpoint covers them).
fn final_checkpoint(service: &Service, db: &DbConfig) {
    let r = Store::open(db).and_then(|mut store| upkeep::checkpoint(service, &mut store));
    if let Err(e) = r {
        warn(&format!(
            "serve: the last audit checkpoint failed: {}",
            e.message()
        ));
    }
}

/// After the last request: the store flushed and closed, and the closing line with the counts.
fn finish(service: Arc<Service>, stats: &Stats) {
    let (requests, issued, failed) = (
        stats.requests.load(Ordering::Relaxed),
        stats.issued.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed),
    );
    if let Ok(service) = Arc::try_unwrap(service) {
        service.recorder.close();
    }
    eprintln!(
        "p11ca: serve: stopped: {requests} requests, {issued} certificates issued and recorded, {failed} refused or failed"
    );
}

/// What `serve` checks before it touches the network or the token.
struct Inputs {
    ca_cert: x509_cert::Certificate,
    ca_source: String,
    ca_pem: String,
    key_uri: Pkcs11Uri,
    config: SigningConfig,
    db: DbConfig,
    tls: Option<TlsOptions>,
    revoke_key: Option<AuthKey>,
    crl_lifetime: i64,
    /// The delegated OCSP responder: its certificate, the file it came from, its key's handle.
    responder: Option<(x509_cert::Certificate, String, Pkcs11Uri)>,
    /// How responses name their responder.
    responder_id: ResponderIdForm,
}

/// Everything that can be checked without the token: the CA certificate, the key handle, the
/// signing config and its profiles, the limits, the store's configuration and TLS.
fn inputs(a: &ServeArgs) -> Result<Inputs> {
    let (ca_cert, ca_source, key_uri) =
        super::sign::ca_and_key(a.ca.as_deref(), a.ca_key.as_deref())?;
    let ca_pem = build::pem(
        "CERTIFICATE",
        &der::Encode::to_der(&ca_cert).map_err(|e| Error::input(format!("{ca_source}: {e}")))?,
    )?;
    let config = super::sign::load_config(a.config.as_deref())?;
    if a.max_body < 1024 {
        return Err(Error::input("--max-body must be at least 1024 bytes"));
    }
    if a.jobs == Some(0) {
        return Err(Error::input("--jobs must be at least 1"));
    }
    if a.max_connections == 0 || a.max_conns_per_client == 0 {
        return Err(Error::input(
            "--max-connections and --max-conns-per-client must be at least 1",
        ));
    }
    let db = DbConfig::resolve(a.db_config.as_deref(), a.db.as_deref(), a.config.as_deref())?;
    check_profiles(&config, a)?;
    let tls = tls_options(a)?;
    let revoke_key = match &a.revoke_auth_key {
        None => None,
        Some(_) if a.config.is_none() => {
            return Err(Error::input(
                "-revoke-auth-key names an auth_keys entry of the signing config; give -config",
            ));
        }
        Some(name) => Some(config.named_auth_key(name, "-revoke-auth-key")?),
    };
    let crl_lifetime = GoDuration::parse(&a.crl_expiry)
        .map_err(|m| {
            Error::input(format!(
                "-crl-expiry \"{}\": {m}; give a Go duration such as 168h",
                a.crl_expiry
            ))
        })?
        .as_secs();
    if crl_lifetime < 60 {
        return Err(Error::input(format!(
            "-crl-expiry \"{}\": a CRL must hold at least a minute",
            a.crl_expiry
        )));
    }
    let responder = match (&a.responder, &a.responder_key) {
        (Some(path), Some(key)) => {
            let (cert, source) = super::ocsp::responder_for(&ca_cert, &ca_source, Some(path))?;
            Some((
                cert,
                source,
                super::sign::key_uri_of(key, "-responder-key")?,
            ))
        }
        _ => None,
    };

    Ok(Inputs {
        ca_cert,
        ca_source,
        ca_pem,
        key_uri,
        config,
        db,
        tls,
        revoke_key,
        crl_lifetime,
        responder,
        responder_id: super::ocsp::responder_id_form(&a.responder_id)?,
    })
}

/// The delegated responder's key, found in the CA key's token with serve's login and paired
/// with its certificate before the first request.
fn responder_key(
    opened: &super::Opened,
    ca: &CaKey,
    responder: Option<(x509_cert::Certificate, String, Pkcs11Uri)>,
) -> Result<Option<ResponderKey>> {
    let Some((cert, source, uri)) = responder else {
        return Ok(None);
    };
    let found = key::find_private_key(&opened.session, &opened.token, &uri).map_err(|e| {
        e.context(
            "-responder-key (serve signs with one login: the key must be in the CA key's token)",
        )
    })?;
    let mut rk = ResponderKey::new(
        &opened.module,
        &opened.token,
        ca.certificate().clone(),
        (cert, &source),
        &found,
        &uri,
    )?;
    rk.set_pin(opened.pin.clone());
    Ok(Some(rk))
}

/// Listen on `-address`:`-port` (refusing plain text off loopback unless allowed), with the
/// open-file limit raised for the connection cap.
fn bind(a: &ServeArgs, has_tls: bool) -> Result<TcpListener> {
    let spec = if a.address.contains(':') && !a.address.starts_with('[') {
        format!("[{}]:{}", a.address, a.port)
    } else {
        format!("{}:{}", a.address, a.port)
    };
    let addrs: Vec<_> = spec
        .to_socket_addrs()
        .map_err(|e| Error::input(format!("-address {}: {e}", a.address)))?
        .collect();
    check_plaintext(a, has_tls, &addrs)?;
    raise_open_file_limit(a.max_connections);
    listen(&addrs).map_err(|e| {
        Error::input(format!(
            "cannot listen on {spec}: {e}; choose another -port or -address"
        ))
    })
}

/// The first SIGTERM or SIGINT sets `stop` and wakes the listener at `addr`; more change
/// nothing.
pub(super) fn stop_on_signals(stop: Arc<AtomicBool>, addr: SocketAddr) -> Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])
        .map_err(|e| Error::input(format!("cannot install signal handlers: {e}")))?;
    std::thread::spawn(move || {
        for _ in signals.forever() {
            if !stop.swap(true, Ordering::SeqCst) {
                eprintln!("p11ca: serve: stopping: finishing requests in flight");
            }
            wake(addr);
        }
    });

    Ok(())
}

/// TLS options from the flags; `-mutual-tls-cn` is anchored so that it matches whole CNs.
fn tls_options(a: &ServeArgs) -> Result<Option<TlsOptions>> {
    let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) else {
        return Ok(None);
    };
    let cn_regex = a
        .mutual_tls_cn
        .as_deref()
        .map(|r| {
            Regex::new(&format!("^(?:{r})$")).map_err(|e| {
                Error::input(format!(
                    "-mutual-tls-cn \"{r}\": invalid regular expression: {e}"
                ))
            })
        })
        .transpose()?;
    Ok(Some(TlsOptions {
        config: tls::server_config(cert, key, a.mutual_tls_ca.as_deref())?,
        mutual: a.mutual_tls_ca.is_some(),
        cn_regex,
    }))
}

/// Refuse a profile that issues CA certificates to any caller (no auth_key), unless the
/// operator says so.
fn check_profiles(config: &SigningConfig, a: &ServeArgs) -> Result<()> {
    if a.allow_unauthenticated_ca {
        return Ok(());
    }
    let names = std::iter::once("default".to_string()).chain(config.profile_names());
    for name in names {
        let p = config.client_profile(Some(&name));
        if p.is_ca && p.auth_key.is_none() && p.remote.is_none() {
            return Err(Error::input(format!(
                "profile \"{name}\" in {} issues CA certificates (ca_constraint.is_ca) without an auth_key, so any client of serve could get an intermediate CA; give the profile an auth_key, or pass --allow-unauthenticated-ca",
                a.config.as_deref().unwrap_or("the configuration")
            )));
        }
    }
    Ok(())
}

/// Refuse plain HTTP beyond this machine, unless the operator says so.
fn check_plaintext(a: &ServeArgs, tls: bool, addrs: &[SocketAddr]) -> Result<()> {
    if tls || a.insecure_plaintext {
        return Ok(());
    }
    match addrs.iter().find(|s| !s.ip().is_loopback()) {
        Some(s) => Err(Error::input(format!(
            "-address {} ({}) is reachable from other machines and there is no -tls-cert: requests and certificates would cross the network in plain text and unauthenticated; give -tls-cert and -tls-key, or pass --insecure-plaintext",
            a.address,
            s.ip()
        ))),
        None => Ok(()),
    }
}

/// Listen on the first of `addrs` that can be bound (as `TcpListener::bind`), with a backlog
/// that absorbs a burst of connects while the accept thread catches up.
pub(super) fn listen(addrs: &[SocketAddr]) -> std::io::Result<TcpListener> {
    let mut last = std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address");
    for a in addrs {
        let bound = Socket::new(Domain::for_address(*a), Type::STREAM, None).and_then(|s| {
            s.set_reuse_address(true)?;
            s.bind(&(*a).into())?;
            s.listen(LISTEN_BACKLOG)?;
            Ok(s)
        });
        match bound {
            Ok(s) => return Ok(s.into()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The server's limits and the host names it answers to.
fn guard(a: &ServeArgs, bound: SocketAddr) -> Result<Guard> {
    let tls_names = match &a.tls_cert {
        Some(cert) => tls::cert_names(cert)?,
        None => Vec::new(),
    };
    let hosts = HostPolicy::new(&a.address, bound.ip(), &tls_names, &a.allowed_host);
    let limits = Limits {
        max_connections: a.max_connections,
        per_client: a.max_conns_per_client,
        rate: a.rate_limit,
    };
    Ok(Guard::new(limits, hosts))
}

/// Lock the server's memory, as it comes into use, so that the PIN it keeps for re-logins (and
/// the sessions' state) is never written to swap. Only where the lock cannot hit a limit later
/// (RLIMIT_MEMLOCK unlimited, or CAP_IPC_LOCK): under a finite limit a locked process would
/// fail to allocate once it grows past it, so there the server warns instead.
fn lock_memory() {
    use rustix::mm::{MlockAllFlags, mlockall};
    use rustix::process::{Resource, getrlimit};
    let unlimited = getrlimit(Resource::Memlock).current.is_none();
    if !unlimited && !has_cap_ipc_lock() {
        eprintln!(
            "p11ca: warning: serve: memory is not locked (RLIMIT_MEMLOCK is finite and there is no CAP_IPC_LOCK), so the kept PIN could reach swap; run with LimitMEMLOCK=infinity (systemd) or ulimit -l unlimited"
        );
        return;
    }
    let flags = MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT;
    if let Err(e) = mlockall(flags) {
        eprintln!(
            "p11ca: warning: serve: cannot lock memory ({e}), so the kept PIN could reach swap"
        );
    }
}

/// Whether this process holds CAP_IPC_LOCK (bit 14 of CapEff in /proc/self/status).
fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Raise the soft open-file limit to the hard one: every connection is a descriptor, and at
/// the limit `accept` fails for everyone. Warn if it is still below what the caps allow.
pub(super) fn raise_open_file_limit(max_connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (limit.current, limit.maximum)
        && soft < hard
    {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    // The store, the token module and the listener need some descriptors of their own.
    let needed = max_connections as u64 + 64;
    if let Some(n) = getrlimit(Resource::Nofile).current.filter(|n| *n < needed) {
        eprintln!(
            "p11ca: warning: serve: the open-file limit is {n}, below --max-connections + 64 ({needed}); raise it (ulimit -n) or lower --max-connections"
        );
    }
}
