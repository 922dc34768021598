//! Command-line syntax (clap). Only syntax lives here; meaning is given in `commands`.
//!
//! cfssl's single-dash long flags (`-initca`, `-bare`, `-ca-key`, …) are accepted by rewriting
//! them to `--` form before clap sees them (see [`cfssl_style`]).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use p11ca::serve::guard::Limits;

/// Exit codes, also listed in the README.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  bad input: command line, JSON, CSR, duration, URI, PIN source
  2  token or PKCS#11 module failure: module load, login, key lookup, signing
  3  refused by policy: duplicate key label/ID, CA/key mismatch, unknown profile
  4  an output file could not be written (nothing was written)
  5  a signature from the token did not verify (nothing was written)
  6  certs list --check: certificates expire within --expiring (or have expired)";

/// A cfssl-compatible CA whose signing keys never leave a PKCS#11 token.
#[derive(Debug, Parser)]
#[command(name = "p11ca", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub token: TokenArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the token. Accepted before the subcommand (for every command, as before) and
/// after it for the commands that use a token; only those show it in their `--help`.
#[derive(Clone, Debug, Default, Args)]
#[command(next_help_heading = "Token options")]
pub struct TokenArgs {
    /// PKCS#11 module (.so); default: $P11CA_MODULE, else the p11-kit proxy.
    #[arg(long, value_name = "PATH")]
    pub module: Option<PathBuf>,
    /// Token by label, or a pkcs11: URI (token=, serial=, model=, manufacturer=, slot-id=);
    /// default: $P11CA_TOKEN, else the only initialized token.
    #[arg(long, value_name = "LABEL|URI")]
    pub token: Option<String>,
    /// Where to read the user PIN: file:PATH or env:VAR (default: $P11CA_PIN, else a prompt).
    #[arg(long, value_name = "file:PATH|env:VAR")]
    pub pin_source: Option<String>,
}

impl TokenArgs {
    /// These options (given after the subcommand) over `before` (given before it), and
    /// `P11CA_TOKEN` when neither names a token.
    pub fn over(&self, before: &TokenArgs) -> p11ca::Result<TokenArgs> {
        let token = match self.token.clone().or_else(|| before.token.clone()) {
            Some(t) => Some(t),
            None => match std::env::var_os("P11CA_TOKEN") {
                Some(v) if !v.is_empty() => Some(
                    v.into_string()
                        .map_err(|_| p11ca::Error::input("P11CA_TOKEN is not valid UTF-8"))?,
                ),
                _ => None,
            },
        };
        Ok(TokenArgs {
            module: self.module.clone().or_else(|| before.module.clone()),
            token,
            pin_source: self
                .pin_source
                .clone()
                .or_else(|| before.pin_source.clone()),
        })
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a CA in the token (-initca), or a node key and certificate signed by the
    /// token CA (-ca/-ca-key), like `cfssl gencert`.
    Gencert(GencertArgs),
    /// Sign a CSR with the CA key in the token, like `cfssl sign`.
    Sign(SignArgs),
    /// Print a certificate's or CSR's details as cfssl-certinfo's JSON.
    Certinfo(CertinfoArgs),
    /// Build and verify a certificate's chain to a trusted root, like `cfssl bundle`.
    Bundle(BundleArgs),
    /// Write the files of a JSON result, like `cfssljson`.
    Json(JsonArgs),
    /// Tokens the module sees.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Keys and certificates in a token.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Run cfssl's signing API (sign, authsign, info, health) with the CA key in the token,
    /// like `cfssl serve`; every issued certificate is recorded in a database.
    Serve(ServeArgs),
    /// Certificates recorded by `serve`.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Sign an OCSP response for one certificate with the CA key in the token, like `cfssl
    /// ocspsign`: prints {"ocspResponse": "<base64 DER>"}.
    Ocspsign(OcspsignArgs),
    /// Sign a fresh OCSP response for every unexpired certificate of the CA in the store and
    /// write them to its ocsp_responses table, like `cfssl ocsprefresh`.
    Ocsprefresh(OcsprefreshArgs),
    /// Answer OCSP requests (RFC 6960, RFC 5019 GET and POST) from pre-signed responses in a
    /// file or the store, like `cfssl ocspserve`; no request reaches the token.
    Ocspserve(OcspserveArgs),
    /// The tamper-evident audit log in the store: verify its chain and signed checkpoints, or
    /// list it.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Make a CRL revoking the serial numbers in a file, signed by the CA key in the token,
    /// like `cfssl gencrl`: prints the DER CRL in base64.
    Gencrl(GencrlArgs),
    /// kubeadm's PKI with the CA keys in the token: the external-CA layout, kubeconfigs,
    /// kubeadm's own CSRs signed (see docs/kubernetes.md).
    #[command(subcommand)]
    Kubeadm(KubeadmCommand),
    /// Revoke certificates recorded in the store, like `cfssl revoke` (by -serial and -aki,
    /// by certificate file, or many from a list in one transaction).
    Revoke(RevokeArgs),
    /// Make the CRL of a CA from the store's revoked certificates, signed by the CA key in the
    /// token, like `cfssl crl`: prints the DER CRL in base64.
    Crl(CrlArgs),
    /// Print p11ca's version, the Rust compiler that built it and the target, like
    /// `cfssl version`.
    Version,
    /// Print a default CSR JSON or signing configuration to start from, like
    /// `cfssl print-defaults`.
    PrintDefaults {
        /// What to print.
        #[arg(value_enum)]
        what: Defaults,
    },
    /// Print a shell completion script (e.g. `p11ca completion bash > /etc/bash_completion.d/p11ca`).
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (p11ca.1 and one per subcommand, such as p11ca-sign.1) into DIR.
    Man {
        /// The folder to write into (created if missing).
        dir: PathBuf,
    },
}

/// What `print-defaults` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Defaults {
    /// A CSR JSON (ca-csr.json, csr.json), cfssl's.
    Csr,
    /// A signing configuration (ca-config.json), cfssl's.
    Config,
}

/// Options shared by everything that signs with the CA (cfssl names).
#[derive(Debug, Args)]
pub struct CaArgs {
    /// The CA certificate (PEM or DER).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<String>,
    /// The CA key: a handle file written by `json -bare` (NAME-key.uri), a pkcs11: URI, or
    /// file:PATH / env:VAR holding one.
    #[arg(long, value_name = "HANDLE|URI")]
    pub ca_key: Option<String>,
    /// cfssl signing configuration (ca-config.json); default: cfssl's default profile.
    #[arg(long, value_name = "FILE")]
    pub config: Option<String>,
    /// Signing profile in the config (default: "default").
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Comma-separated SANs; replaces the request's hosts.
    #[arg(long, value_name = "LIST")]
    pub hostname: Option<String>,
    /// Parallel token sessions for several inputs (default: the number of cores).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Write NAME.pem / NAME.csr (/ NAME-key.pem) per input into DIR instead of printing JSON.
    #[arg(long, value_name = "DIR")]
    pub out: Option<String>,
    /// Sign on a remote signer (`p11ca serve`, `cfssl serve`, multirootca) at HOST:PORT instead
    /// of the local token; overrides the config's `remotes`. A profile with `remote` or
    /// `auth_remote` in -config signs remotely without this flag.
    #[arg(long, value_name = "HOST:PORT")]
    pub remote: Option<String>,
    /// Signer label sent to the remote signer (multirootca).
    #[arg(long, value_name = "LABEL")]
    pub label: Option<String>,
    /// CAs (PEM) to trust for an https remote (default: the system's CA bundle).
    #[arg(long, value_name = "FILE")]
    pub tls_remote_ca: Option<String>,
    /// Client certificate (PEM) for a remote that requires mutual TLS.
    #[arg(long, value_name = "FILE", requires = "mutual_tls_client_key")]
    pub mutual_tls_client_cert: Option<String>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "FILE", requires = "mutual_tls_client_cert")]
    pub mutual_tls_client_key: Option<String>,
    /// Trusted roots (PEM): each issued certificate's chain to one of them is verified and
    /// printed in the `bundle` (certificate and intermediates) and `root` fields.
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<String>,
    /// Intermediates (PEM) for the `bundle` field; needs -ca-bundle.
    #[arg(long, value_name = "FILE", requires = "ca_bundle")]
    pub int_bundle: Option<String>,
    /// Record every issued certificate in the store of this cfssl db-config JSON
    /// ({"driver": "sqlite3"|"postgres", "data_source": ...}) before it is output.
    #[arg(long, value_name = "FILE", conflicts_with = "db")]
    pub db_config: Option<String>,
    /// Record in this SQLite file (default: p11ca-certs.db next to -config, or in the current
    /// folder), as `serve` does.
    #[arg(long, value_name = "PATH")]
    pub db: Option<String>,
}

/// `serve` options (cfssl's names).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default: loopback only).
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub address: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8888, value_name = "PORT")]
    pub port: u16,
    /// The CA certificate (PEM or DER).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<String>,
    /// The CA key: NAME-key.uri, a pkcs11: URI, or file:PATH / env:VAR holding one.
    #[arg(long, value_name = "HANDLE|URI")]
    pub ca_key: Option<String>,
    /// cfssl signing configuration (profiles, auth_keys); default: cfssl's default profile.
    #[arg(long, value_name = "FILE")]
    pub config: Option<String>,
    /// cfssl db-config JSON ({"driver": "sqlite3"|"postgres", "data_source": ...}).
    #[arg(long, value_name = "FILE", conflicts_with = "db")]
    pub db_config: Option<String>,
    /// SQLite database file (default: p11ca-certs.db next to -config, or in the current folder).
    #[arg(long, value_name = "PATH")]
    pub db: Option<String>,
    /// Signatures made in parallel (default: the number of cores, capped by the token's
    /// session limit); one token session more is kept for revocation, the CRL and /health.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = p11ca::serve::DEFAULT_MAX_BODY, value_name = "BYTES")]
    pub max_body: usize,
    /// Serve https with this certificate (PEM, chain allowed).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<String>,
    /// The TLS certificate's key (PEM; a software key for the connection, not the CA key).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<String>,
    /// Mutual TLS: require client certificates issued by these CAs (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub mutual_tls_ca: Option<String>,
    /// Mutual TLS: a regular expression the whole client certificate CN must match (else
    /// 403); it is anchored, so `admin` matches only "admin" (write `node-.*` for a prefix).
    #[arg(long, value_name = "REGEX", requires = "mutual_tls_ca")]
    pub mutual_tls_cn: Option<String>,
    /// Also accept requests whose Host (or Origin) is NAME (repeatable). Always accepted: the
    /// listen address, the TLS certificate's DNS and IP names, the address a connection came
    /// in on, and localhost/127.0.0.1/::1 on a loopback or wildcard listener. Other hosts get
    /// 421 (DNS rebinding), other origins 403.
    #[arg(long, value_name = "NAME")]
    pub allowed_host: Vec<String>,
    /// Most connections served at once; more are refused (503 without TLS, closed with TLS).
    #[arg(long, default_value_t = Limits::default().max_connections, value_name = "N")]
    pub max_connections: usize,
    /// Most connections open at once from one client address (IPv6: one /64); more are
    /// refused (429 without TLS, closed with TLS).
    #[arg(long, default_value_t = Limits::default().per_client, value_name = "N")]
    pub max_conns_per_client: usize,
    /// Requests per second (and burst) one client address may send; more get 429. 0: no limit.
    #[arg(long, default_value_t = Limits::default().rate, value_name = "N")]
    pub rate_limit: u32,
    /// Accept POST /api/v1/cfssl/revoke, authenticated with this auth_keys entry of -config
    /// (cfssl's authenticated envelope, as authsign); without it /revoke is refused.
    #[arg(long, value_name = "NAME")]
    pub revoke_auth_key: Option<String>,
    /// Also answer OCSP requests under this path (e.g. /ocsp/), from the responses in the
    /// store (`ocsprefresh`, and those /revoke signs), as `p11ca ocspserve` does.
    #[arg(long, value_name = "PATH")]
    pub ocsp_path: Option<String>,
    /// A delegated OCSP responder's certificate (issued by -ca for OCSP signing): the
    /// response /revoke stores is signed with its key (-responder-key) instead of the CA key.
    #[arg(long, value_name = "FILE", requires = "responder_key")]
    pub responder: Option<String>,
    /// The delegated responder key's handle; the key must be in the CA key's token (`gencert
    /// -ca ... --key-in-token` makes it there).
    #[arg(long, value_name = "HANDLE|URI", requires = "responder")]
    pub responder_key: Option<String>,
    /// How the OCSP responses /revoke stores name their responder: name (its subject, as
    /// cfssl) or key (the SHA-1 of its public key, as RFC 5019 recommends).
    #[arg(long, default_value = "name", value_name = "name|key")]
    pub responder_id: String,
    /// Lifetime of the CRL serve publishes (/crl, /crl.der, /crl.pem); it is rebuilt after each
    /// revocation and when half of it has passed.
    #[arg(long, default_value = "168h", value_name = "DURATION")]
    pub crl_expiry: String,
    /// Start even though a profile with ca_constraint.is_ca has no auth_key, so that any
    /// caller can get an intermediate CA certificate.
    #[arg(long)]
    pub allow_unauthenticated_ca: bool,
    /// Start even though -address is not a loopback address and there is no -tls-cert, so
    /// that requests and certificates cross the network in plain text.
    #[arg(long)]
    pub insecure_plaintext: bool,
    #[command(flatten)]
    pub token: TokenArgs,
}

/// Where `certs` finds the database (the same choice as `serve`).
#[derive(Debug, Args)]
pub struct DbArgs {
    /// cfssl db-config JSON.
    #[arg(long, value_name = "FILE", conflicts_with = "db")]
    pub db_config: Option<String>,
    /// SQLite database file.
    #[arg(long, value_name = "PATH")]
    pub db: Option<String>,
    /// The signing config `serve` used: the database is p11ca-certs.db next to it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<String>,
}

/// `certs` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// List recorded certificates, soonest expiry first.
    List {
        #[command(flatten)]
        db: DbArgs,
        /// Only certificates that expire within this Go duration (e.g. 720h), or already have.
        #[arg(long, value_name = "DURATION")]
        expiring: Option<String>,
        /// Only revoked certificates.
        #[arg(long)]
        revoked: bool,
        /// With --expiring: exit 6 when a certificate that is not revoked is listed (for cron;
        /// the CA certificates that `gencert -initca` recorded are listed too).
        #[arg(long, requires = "expiring", conflicts_with = "revoked")]
        check: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show one recorded certificate by serial (decimal, or hex with or without colons).
    Show {
        #[command(flatten)]
        db: DbArgs,
        /// The serial number.
        serial: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `p11ca audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the audit chain and its signed checkpoints; name the first record that was
    /// edited, removed or reordered (exit 5), else print a summary.
    Verify {
        #[command(flatten)]
        db: DbArgs,
        /// CA certificate(s) whose keys sign the checkpoints (repeatable): a checkpoint signed
        /// by any other key fails the check.
        #[arg(long, value_name = "FILE", required = true)]
        ca: Vec<String>,
    },
    /// Sign a checkpoint over the audit chain so far with the CA key in the token, so that
    /// the records up to it can no longer be changed or cut off unseen (`crl` and `serve`
    /// also sign them; run this after command-line issuance, e.g. from cron).
    Checkpoint {
        #[command(flatten)]
        db: DbArgs,
        /// The CA certificate whose key signs.
        #[arg(long, value_name = "FILE")]
        ca: String,
        /// The CA key's handle: a NAME-key.uri file, a pkcs11: URI, file:PATH or env:VAR.
        #[arg(long, value_name = "URI")]
        ca_key: String,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// List the audit records, oldest first.
    List {
        #[command(flatten)]
        db: DbArgs,
        /// Only the last N records.
        #[arg(long, value_name = "N")]
        last: Option<usize>,
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `ocspserve`, cfssl's flags.
#[derive(Debug, Args)]
pub(crate) struct OcspserveArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub(crate) address: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8889, value_name = "PORT")]
    pub(crate) port: u16,
    /// Serve the responses in this file (base64 DER separated by white space, as `cfssl
    /// ocspdump` writes) instead of the store.
    #[arg(long, value_name = "FILE")]
    pub(crate) responses: Option<String>,
    #[command(flatten)]
    pub(crate) db: DbArgs,
    /// The path requests come under (RFC 5019 GET: PATH followed by the base64 request).
    #[arg(long, default_value = "/", value_name = "PATH")]
    pub(crate) path: String,
    /// Most connections served at once.
    #[arg(long, default_value_t = Limits::default().max_connections, value_name = "N")]
    pub(crate) max_connections: usize,
    /// Most connections open at once from one client address.
    #[arg(long, default_value_t = Limits::default().per_client, value_name = "N")]
    pub(crate) max_conns_per_client: usize,
    /// Requests per second (and burst) one client address may send; 0: no limit.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) rate_limit: u32,
}

/// `ocsprefresh`, cfssl's flags.
#[derive(Debug, Args)]
pub(crate) struct OcsprefreshArgs {
    #[command(flatten)]
    pub(crate) db: DbArgs,
    /// The CA certificate whose certificates are refreshed.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: String,
    /// The responder's certificate (default: the CA certificate itself).
    #[arg(long, value_name = "FILE")]
    pub(crate) responder: Option<String>,
    /// The responder key's handle (NAME-key.uri, a pkcs11: URI, file:PATH or env:VAR).
    #[arg(long, value_name = "HANDLE|URI")]
    pub(crate) responder_key: String,
    /// How responses name their responder: name (its subject, as cfssl) or key (the SHA-1
    /// of its public key, as RFC 5019 recommends).
    #[arg(long, default_value = "name", value_name = "name|key")]
    pub(crate) responder_id: String,
    /// How long each response holds (Go duration).
    #[arg(long, default_value = "96h", value_name = "DURATION")]
    pub(crate) interval: String,
    /// Token sessions signing in parallel (default: the number of cores, capped by the
    /// token's session limit).
    #[arg(long, value_name = "N")]
    pub(crate) jobs: Option<usize>,
    #[command(flatten)]
    pub(crate) token: TokenArgs,
}

/// `ocspsign`, cfssl's flags.
#[derive(Debug, Args)]
pub(crate) struct OcspsignArgs {
    /// The CA certificate that issued -cert.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: String,
    /// The responder's certificate: the CA certificate itself (the default), or a delegated
    /// responder the CA issued for OCSP signing.
    #[arg(long, value_name = "FILE")]
    pub(crate) responder: Option<String>,
    /// The responder key's handle (NAME-key.uri, a pkcs11: URI, file:PATH or env:VAR).
    #[arg(long, value_name = "HANDLE|URI")]
    pub(crate) responder_key: String,
    /// How responses name their responder: name (its subject, as cfssl) or key (the SHA-1
    /// of its public key, as RFC 5019 recommends).
    #[arg(long, default_value = "name", value_name = "name|key")]
    pub(crate) responder_id: String,
    /// The certificate the response is about.
    #[arg(long, value_name = "FILE")]
    pub(crate) cert: String,
    /// good, revoked or unknown.
    #[arg(long, default_value = "good", value_name = "STATUS")]
    pub(crate) status: String,
    /// Why it was revoked: a cfssl reason name (keyCompromise, superseded, ...) or its code.
    #[arg(long, default_value = "0", value_name = "REASON")]
    pub(crate) reason: String,
    /// When it was revoked: YYYY-MM-DD (UTC midnight), or now.
    #[arg(long, default_value = "now", value_name = "DATE")]
    pub(crate) revoked_at: String,
    /// How long the response holds (Go duration; nextUpdate = thisUpdate + interval).
    #[arg(long, default_value = "96h", value_name = "DURATION")]
    pub(crate) interval: String,
    #[command(flatten)]
    pub(crate) token: TokenArgs,
}

/// `gencrl SERIALS CERT KEY [TIME]`, cfssl's arguments.
#[derive(Debug, Args)]
pub(crate) struct GencrlArgs {
    /// File with one serial number (decimal) per line, or `-` for stdin.
    pub(crate) serials: String,
    /// The CA certificate that signs the CRL.
    pub(crate) cert: String,
    /// The CA key's handle: a NAME-key.uri file, a pkcs11: URI, file:PATH or env:VAR.
    pub(crate) key: String,
    /// Seconds from now until nextUpdate (default, and 0: one week, as cfssl).
    pub(crate) time: Option<String>,
    /// The cRLNumber (default: the current Unix time, which grows from one run to the next).
    #[arg(long, value_name = "N")]
    pub(crate) number: Option<u64>,
    /// Write the CRL to FILE instead of printing base64: PEM when FILE ends in .pem, else DER.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<String>,
    #[command(flatten)]
    pub(crate) token: TokenArgs,
}

/// `revoke` options (cfssl's, plus certificate files and lists).
#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    #[command(flatten)]
    pub(crate) db: DbArgs,
    /// The serial number, decimal as cfssl stores it (hex only with 0x or colons).
    #[arg(long, value_name = "SERIAL", requires = "aki")]
    pub(crate) serial: Option<String>,
    /// The issuing CA's key identifier (the certificate's AKI), hex.
    #[arg(long, value_name = "AKI", requires = "serial")]
    pub(crate) aki: Option<String>,
    /// Why: a cfssl reason name (keyCompromise, superseded, ..., any case) or code 1-9
    /// (default: unspecified).
    #[arg(long, value_name = "REASON", default_value = "")]
    pub(crate) reason: String,
    /// A file of `SERIAL AKI` lines (or `-` for stdin) to revoke together.
    #[arg(long, value_name = "FILE")]
    pub(crate) list: Option<String>,
    /// Certificate files to revoke (serial and AKI read from each).
    pub(crate) certs: Vec<String>,
}

/// `crl` options (cfssl 1.6's).
#[derive(Debug, Args)]
pub(crate) struct CrlArgs {
    #[command(flatten)]
    pub(crate) db: DbArgs,
    /// The CA certificate whose CRL this is.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: String,
    /// The CA key's handle: a NAME-key.uri file, a pkcs11: URI, file:PATH or env:VAR.
    #[arg(long, value_name = "URI")]
    pub(crate) ca_key: String,
    /// Time from now until nextUpdate, a Go duration.
    #[arg(long, value_name = "DURATION", default_value = "168h")]
    pub(crate) expiry: String,
    /// Write the CRL to FILE instead of printing base64: PEM when FILE ends in .pem, else DER.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<String>,
    #[command(flatten)]
    pub(crate) token: TokenArgs,
}

/// `gencert` options (cfssl names).
#[derive(Debug, Args)]
pub struct GencertArgs {
    /// Create a new CA: generate its key in the token and self-sign.
    #[arg(long, conflicts_with_all = ["ca", "ca_key", "config", "profile", "hostname", "cn", "remote", "label", "tls_remote_ca", "mutual_tls_client_cert"])]
    pub initca: bool,
    /// Renew the CA certificate given with -ca around its key in the token (-ca-key): new
    /// serial and validity, same key, subject and extensions; the token's certificate object
    /// is replaced. The CSR JSON is optional (its ca.expiry sets the new lifetime).
    #[arg(long, conflicts_with_all = ["initca", "config", "profile", "hostname", "cn", "remote", "label", "tls_remote_ca", "mutual_tls_client_cert"])]
    pub renewca: bool,
    /// With -initca, for an intermediate: make the key and print only its CSR (and key_uri)
    /// for the parent CA to sign; store the signed certificate with `p11ca key import-cert`.
    #[arg(long, requires = "initca")]
    pub csr_only: bool,
    /// With -ca: generate the new certificate's key in the CA key's token (sensitive,
    /// non-extractable, as a CA key) instead of in software, for a delegated OCSP responder
    /// and the like; prints key_uri in place of key. One CSR JSON file.
    #[arg(long, conflicts_with_all = ["initca", "renewca", "remote", "label", "out", "always_authenticate"])]
    pub key_in_token: bool,
    /// With -renewca: accept a CSR JSON whose subject differs from the old certificate's.
    #[arg(long, requires = "renewca")]
    pub allow_subject_change: bool,
    #[command(flatten)]
    pub signing: CaArgs,
    /// Replace the request's CN.
    #[arg(long, value_name = "CN")]
    pub cn: Option<String>,
    /// CKA_LABEL of the new key (-initca, --key-in-token; default: the CN).
    #[arg(long, value_name = "LABEL")]
    pub key_label: Option<String>,
    /// PIV slot for the new key on a YubiKey (9a, 9c, 9d, 9e, 82..95): sets the one-byte
    /// CKA_ID ykcs11 maps to that slot. A CA key usually goes in 9c.
    #[arg(long, value_name = "SLOT", conflicts_with = "key_id")]
    pub piv_slot: Option<String>,
    /// Where to read the SO PIN for tokens whose key generation needs the SO (YubiKey: the PIV
    /// management key in hex): file:PATH or env:VAR.
    #[arg(long, value_name = "file:PATH|env:VAR")]
    pub so_pin_source: Option<String>,
    /// Make the new CA key need the PIN for every signature (CKA_ALWAYS_AUTHENTICATE).
    #[arg(long)]
    pub always_authenticate: bool,
    /// CKA_ID of the new key in hex (-initca, --key-in-token; default: 16 random bytes from
    /// the token).
    #[arg(long, value_name = "HEX")]
    pub key_id: Option<String>,
    /// The cfssl CSR JSON file(s) (`-` for stdin); several only with -ca.
    #[arg(required_unless_present = "renewca")]
    pub csr_json: Vec<String>,
    #[command(flatten)]
    pub token: TokenArgs,
}

/// `sign` options (cfssl's).
#[derive(Debug, Args)]
pub struct SignArgs {
    #[command(flatten)]
    pub signing: CaArgs,
    /// CSR file(s), PEM or DER (`-` for stdin). `CSR SUBJECT.json` (cfssl's form): a subject
    /// JSON ({"CN", "names", "SerialNumber"}) overriding the CSR's subject.
    pub inputs: Vec<String>,
    /// Sign every *.csr in DIR (`-`: PEM CSRs concatenated on stdin), streamed: inputs are
    /// read as they are needed. Outputs come in input order (a folder's entries in the order
    /// the file system lists them, not sorted), whatever --jobs is.
    #[arg(long, value_name = "DIR")]
    pub batch: Option<String>,
    /// The CSR file (cfssl's `-csr FILE`); an INPUT after it is then the subject JSON.
    #[arg(long, value_name = "FILE", conflicts_with = "batch")]
    pub csr: Option<String>,
    #[command(flatten)]
    pub token: TokenArgs,
}

impl SignArgs {
    /// Put `-csr FILE` first among the inputs, where cfssl reads the CSR.
    pub fn fold_csr(&mut self) {
        if let Some(csr) = self.csr.take() {
            self.inputs.insert(0, csr);
        }
    }
}

/// `certinfo` options (cfssl's).
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct CertinfoArgs {
    /// A certificate file, PEM or DER (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub cert: Option<String>,
    /// A CSR file, PEM or DER (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub csr: Option<String>,
}

/// `bundle` options (cfssl's).
#[derive(Debug, Args)]
pub struct BundleArgs {
    /// The certificate (PEM or DER); certificates after the first in the file are taken as
    /// intermediates.
    #[arg(long, value_name = "FILE")]
    pub cert: String,
    /// Trusted roots (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: String,
    /// Intermediates (PEM), cross-certificates included.
    #[arg(long, value_name = "FILE")]
    pub int_bundle: Option<String>,
}

/// `json` options (cfssljson's).
#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Input file (`-` for stdin).
    #[arg(short = 'f', default_value = "-")]
    pub file: String,
    /// The input is a bare result (gencert/sign output), not an API envelope.
    #[arg(long)]
    pub bare: bool,
    /// Print the contents to stdout instead of writing files.
    #[arg(long)]
    pub stdout: bool,
    /// Base name of the files (NAME.pem, NAME.csr, NAME-key.uri, NAME-key.pem).
    #[arg(default_value = "cert")]
    pub name: String,
}

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// List slots and tokens with what each can do for p11ca.
    List {
        #[command(flatten)]
        token: TokenArgs,
    },
}

/// `key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List keys and certificates with their pkcs11: URIs and security attributes.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Show one private key's attributes and prove its secret cannot be read.
    Show {
        /// pkcs11: URI of the key (object= and/or id=).
        uri: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Store the certificate a parent CA signed for this key (an intermediate's) in the token,
    /// replacing the key's certificate object; refused unless it carries the key's public key.
    ImportCert {
        /// pkcs11: URI of the key, or a NAME-key.uri file.
        uri: String,
        /// The certificate (PEM or DER; one certificate, not a chain).
        cert: String,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Stop a key from signing (CKA_SIGN set to false), or destroy it with --delete
    /// --confirm-delete.
    Retire {
        /// pkcs11: URI of the key, or a NAME-key.uri file.
        uri: String,
        /// Destroy the key pair and its certificates instead (needs --confirm-delete).
        #[arg(long)]
        delete: bool,
        /// Confirm --delete: the key is gone for good, and so is everything it could sign.
        #[arg(long, requires = "delete")]
        confirm_delete: bool,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Print an OpenSSL configuration with which OpenSSL's pkcs11 engine signs with this key
    /// (the module p11ca uses, the PIN asked on the terminal), and the command that uses it.
    OpensslConf {
        /// The key handle (NAME-key.uri) or a pkcs11: URI.
        handle: String,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// YubiKey PIV: print the key's attestation chain and check that the key in CERT is the
    /// one the card attests it generated (docs/yubikey.md).
    Attest {
        /// pkcs11: URI of the key (as in NAME-key.uri).
        uri: String,
        /// The CA certificate whose key must be the attested one.
        #[arg(long, value_name = "CERT", default_value = "ca.pem")]
        cert: String,
        /// The attestation root to trust: Yubico's PIV attestation root CA for a real key.
        #[arg(long, value_name = "PEM")]
        root: String,
        #[command(flatten)]
        token: TokenArgs,
    },
}

/// `kubeadm` subcommands (kubeadm's own flag names).
#[derive(Debug, Subcommand)]
pub enum KubeadmCommand {
    /// The three CAs (keys in the token, only ca.crt, front-proxy-ca.crt and etcd/ca.crt on
    /// disk), every leaf certificate and key of kubeadm's table, sa.key and sa.pub, like
    /// `kubeadm init phase certs all`; files already there are checked and kept.
    Certs {
        /// kubeadm's configuration file (InitConfiguration or JoinConfiguration, and
        /// ClusterConfiguration).
        #[arg(long, value_name = "FILE")]
        config: String,
        /// Where the certificates go (kubeadm's certificatesDir).
        #[arg(long, value_name = "DIR", default_value = "/etc/kubernetes/pki")]
        cert_dir: PathBuf,
        /// List what would be made or kept, touching neither the token nor the folder.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// admin.conf, super-admin.conf, controller-manager.conf, scheduler.conf and kubelet.conf
    /// with client certificates from the Kubernetes CA in the token, like `kubeadm init phase
    /// kubeconfig all`; with --client-name, one user's kubeconfig on stdout instead, like
    /// `kubeadm kubeconfig user`.
    Kubeconfig {
        /// kubeadm's configuration file.
        #[arg(long, value_name = "FILE")]
        config: String,
        /// The certificate folder holding ca.crt (made by `p11ca kubeadm certs`).
        #[arg(long, value_name = "DIR", default_value = "/etc/kubernetes/pki")]
        cert_dir: PathBuf,
        /// Where the kubeconfig files go.
        #[arg(long, value_name = "DIR", default_value = "/etc/kubernetes")]
        kubeconfig_dir: PathBuf,
        /// Print a kubeconfig for this user (the client certificate's CN) instead.
        #[arg(long, value_name = "NAME")]
        client_name: Option<String>,
        /// Organizations (groups) of --client-name; repeat for several.
        #[arg(long, value_name = "O", requires = "client_name")]
        org: Vec<String>,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Sign the CSRs `kubeadm certs generate-csr` left (NAME.csr beside NAME.key, and
    /// NAME.conf.csr beside NAME.conf) with the right CA in the token, writing NAME.crt and
    /// completing the kubeconfigs; a missing CA is made in the token first.
    SignCsrs {
        /// kubeadm's configuration file, for clusterName, the key type of new CAs and the
        /// validity periods (default: kubeadm's defaults).
        #[arg(long, value_name = "FILE")]
        config: Option<String>,
        /// The certificate folder generate-csr wrote into.
        #[arg(long, value_name = "DIR", default_value = "/etc/kubernetes/pki")]
        cert_dir: PathBuf,
        /// The kubeconfig folder generate-csr wrote into (its *.conf.csr are signed too).
        #[arg(long, value_name = "DIR")]
        kubeconfig_dir: Option<PathBuf>,
        #[command(flatten)]
        token: TokenArgs,
    },
}

/// Long flags cfssl users write with one dash.
const CFSSL_LONG_FLAGS: &[&str] = &[
    "initca",
    "bare",
    "stdout",
    "ca",
    "ca-key",
    "config",
    "profile",
    "hostname",
    "cn",
    "cert",
    "csr",
    "module",
    "token",
    "pin-source",
    "key-label",
    "key-id",
    "always-authenticate",
    "piv-slot",
    "so-pin-source",
    "json",
    "batch",
    "jobs",
    "out",
    "number",
    "remote",
    "label",
    "address",
    "port",
    "db-config",
    "responder",
    "responses",
    "path",
    "responder-key",
    "responder-id",
    "status",
    "reason",
    "revoked-at",
    "interval",
    "db",
    "max-body",
    "expiring",
    "tls-cert",
    "tls-key",
    "mutual-tls-ca",
    "mutual-tls-cn",
    "tls-remote-ca",
    "mutual-tls-client-cert",
    "mutual-tls-client-key",
    "allowed-host",
    "max-connections",
    "max-conns-per-client",
    "rate-limit",
    "allow-unauthenticated-ca",
    "insecure-plaintext",
    "revoke-auth-key",
    "crl-expiry",
    "ocsp-path",
    "serial",
    "aki",
    "reason",
    "expiry",
    "revoked",
    "renewca",
    "allow-subject-change",
    "delete",
    "confirm-delete",
    "csr-only",
    "ca-bundle",
    "int-bundle",
    "cert-dir",
    "dry-run",
    "kubeconfig-dir",
    "client-name",
    "org",
    "root",
    "check",
    "key-in-token",
    "last",
    "list",
];

/// The boolean flags among them: cfssl (Go's flag package) also takes `-initca=true`.
const CFSSL_BOOL_FLAGS: &[&str] = &[
    "initca",
    "bare",
    "stdout",
    "always-authenticate",
    "json",
    "allow-unauthenticated-ca",
    "insecure-plaintext",
    "revoked",
    "renewca",
    "allow-subject-change",
    "delete",
    "confirm-delete",
    "csr-only",
    "dry-run",
    "check",
    "key-in-token",
];

/// Go's spellings of a boolean flag's value (strconv.ParseBool).
fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// One argument in clap's form: `-initca` becomes `--initca` (and `-ca-key=x` `--ca-key=x`)
/// for known long flags; a boolean flag with a Go value (`-initca=true`, `--bare=0`) becomes
/// the bare flag, or nothing when false. Other arguments are returned unchanged.
fn cfssl_arg(s: &str) -> Option<Option<String>> {
    let body = s.strip_prefix("--").or_else(|| s.strip_prefix('-'))?;
    let (name, value) = match body.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (body, None),
    };
    if !CFSSL_LONG_FLAGS.contains(&name) || (s.starts_with("--") && value.is_none()) {
        return None;
    }
    if let Some(on) = value
        .and_then(go_bool)
        .filter(|_| CFSSL_BOOL_FLAGS.contains(&name))
    {
        return Some(on.then(|| format!("--{name}")));
    }
    Some(Some(format!("--{body}")))
}

/// Rewrite cfssl's spellings of long flags to clap's (see [`cfssl_arg`]); nothing after `--`.
pub fn cfssl_style(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut rest = false;
    for a in args {
        if rest {
            out.push(a);
            continue;
        }
        let Some(s) = a.to_str() else {
            out.push(a);
            continue;
        };
        if s == "--" {
            rest = true;
            out.push(a);
            continue;
        }
        match cfssl_arg(s) {
            Some(Some(rewritten)) => out.push(OsString::from(rewritten)),
            Some(None) => {}
            None => out.push(a),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(v: &[&str]) -> Vec<String> {
        cfssl_style(v.iter().map(OsString::from))
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn single_dash_long_flags() {
        assert_eq!(
            rw(&["p11ca", "gencert", "-initca", "ca-csr.json"]),
            ["p11ca", "gencert", "--initca", "ca-csr.json"]
        );
        assert_eq!(
            rw(&["json", "-bare", "-f", "x", "ca"]),
            ["json", "--bare", "-f", "x", "ca"]
        );
        assert_eq!(
            rw(&["-ca-key=pkcs11:x", "--", "-bare"]),
            ["--ca-key=pkcs11:x", "--", "-bare"]
        );
        assert_eq!(rw(&["-", "-x"]), ["-", "-x"]);
        assert_eq!(
            rw(&["certinfo", "-cert", "a", "-csr=b"]),
            ["certinfo", "--cert", "a", "--csr=b"]
        );
    }

    #[test]
    fn go_boolean_values() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "true",
                &["gencert", "-initca=true", "x"],
                &["gencert", "--initca", "x"],
            ),
            (
                "one",
                &["json", "-bare=1", "-stdout=T"],
                &["json", "--bare", "--stdout"],
            ),
            (
                "false drops",
                &["gencert", "-initca=false", "x"],
                &["gencert", "x"],
            ),
            (
                "double dash",
                &["key", "list", "--json=0"],
                &["key", "list"],
            ),
            (
                "not Go",
                &["gencert", "-initca=yes"],
                &["gencert", "--initca=yes"],
            ),
            (
                "valued flag",
                &["sign", "-csr=a.csr"],
                &["sign", "--csr=a.csr"],
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(rw(input), *want, "{name}");
        }
    }

    /// Every long flag of every subcommand (help and version aside).
    fn long_flags(cmd: &clap::Command, out: &mut Vec<(String, bool)>) {
        for a in cmd.get_arguments() {
            if let Some(l) = a.get_long().filter(|l| !["help", "version"].contains(l)) {
                let boolean = matches!(a.get_action(), clap::ArgAction::SetTrue);
                out.push((l.to_string(), boolean));
            }
        }
        for sc in cmd.get_subcommands() {
            long_flags(sc, out);
        }
    }

    #[test]
    fn cfssl_flag_lists_match_the_definition() {
        use clap::CommandFactory;
        let mut flags = Vec::new();
        long_flags(&Cli::command(), &mut flags);
        for (flag, boolean) in &flags {
            assert!(CFSSL_LONG_FLAGS.contains(&flag.as_str()), "-{flag} missing");
            assert_eq!(
                CFSSL_BOOL_FLAGS.contains(&flag.as_str()),
                *boolean,
                "-{flag} boolean?"
            );
        }
        for f in CFSSL_LONG_FLAGS {
            assert!(flags.iter().any(|(l, _)| l == f), "-{f} is no flag");
        }
    }

    #[test]
    fn clap_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
