//! Local signing as a stream (`sign`, `gencert -ca`): inputs are read lazily, prepared,
//! signed in the batch's sessions, recorded in the store and output, with at most [`WINDOW`]
//! inputs per session between reading and output, so memory does not grow with their number.
//!
//! Outputs come in input order: the order of the files named, of the CSRs on stdin, or of a
//! folder's entries as the file system lists them. Recording and output are done by one
//! thread, a group of finished inputs at a time: one transaction for the group, then its
//! files or JSON lines, so every certificate output is in the store first.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, IsTerminal, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use p11ca::ca::batch;
use p11ca::ca::issue::LeafRequest;
use p11ca::db::CertRecord;
use p11ca::sync::lock;
use p11ca::x509::build;
use p11ca::{Error, Result};

use super::record::Recording;
use super::sign::{Item, out_base, out_files_of};
use super::{read_input, warn, write_stdout};

/// Inputs per signing session between being read and being output.
pub(super) const WINDOW: usize = 256;

/// Most finished inputs recorded in one transaction and output together.
const GROUP: usize = 256;

/// Inputs read before the token is opened.
const PRIME: usize = 16;

/// How long a group gathers finished inputs before it is recorded and output.
const LINGER: Duration = Duration::from_millis(20);

/// One input as read: its name, and its bytes or why they could not be read.
pub(super) type Raw = (String, Result<Vec<u8>>);

/// Inputs, read as they are needed.
pub(super) type Source = Box<dyn Iterator<Item = Raw> + Send>;

/// Makes an item of one input (name, bytes).
pub(super) type Make<'a> = &'a (dyn Fn(&str, &[u8]) -> Result<Item> + Sync);

/// Checks an item against the issuance policy before it goes to the token.
pub(super) type Check<'a> = &'a (dyn Fn(&Item) -> Result<()> + Sync);

/// The files named, each read when its turn comes.
pub(super) fn files(names: Vec<String>) -> Source {
    Box::new(names.into_iter().map(|f| match read_input(&f) {
        Ok((bytes, name)) => (name, Ok(bytes)),
        Err(e) => (f, Err(e)),
    }))
}

/// Every `*.csr` in `dir`, in the order the file system lists them, read one at a time.
pub(super) fn folder(dir: &str) -> Result<Source> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::input(format!("--batch {dir}: {e}")))?;
    let dir = dir.to_string();
    Ok(Box::new(rd.filter_map(move |e| {
        let path = match e {
            Ok(e) => e.path(),
            Err(e) => {
                return Some((
                    dir.clone(),
                    Err(Error::input(format!("--batch {dir}: {e}"))),
                ));
            }
        };
        if path.extension().is_none_or(|x| x != "csr") {
            return None;
        }
        let name = path.to_string_lossy().into_owned();
        Some(match read_input(&name) {
            Ok((bytes, name)) => (name, Ok(bytes)),
            Err(e) => (name, Err(e)),
        })
    })))
}

/// Refuse a folder in which two CSRs would write the same `--out` files: `X.csr` and
/// `X-csr.csr` both write `X.pem` (names in one folder differ, so that is the only way). One
/// pass over the names, none kept, before anything is signed.
pub(super) fn check_folder_names(dir: &str, out: &str) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::input(format!("--batch {dir}: {e}")))?;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix("-csr.csr")) else {
            continue;
        };
        let twin = Path::new(dir).join(format!("{stem}.csr"));
        if !stem.ends_with("-csr") && twin.exists() {
            let first = e.path().to_string_lossy().into_owned();
            let base = out_base(&first, out);
            return Err(Error::input(format!(
                "inputs {first} and {} would both write {base}.pem (and its .csr); rename one of them. Nothing was signed",
                twin.display()
            )));
        }
    }
    Ok(())
}

/// A CSR block on stdin is refused past this size (a CSR is a few KiB).
const MAX_BLOCK: usize = 1 << 20;
const END_CSR: &[u8] = b"-----END CERTIFICATE REQUEST-----";

/// PEM CSRs concatenated on stdin, each handed on as soon as its END line has arrived and
/// named `stdin#N` (N counts the blocks).
pub(super) fn stdin_pem() -> Source {
    Box::new(PemBlocks {
        r: std::io::BufReader::with_capacity(64 * 1024, std::io::stdin()),
        n: 0,
        done: false,
    })
}

struct PemBlocks<R> {
    r: R,
    n: usize,
    done: bool,
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

impl<R: BufRead> Iterator for PemBlocks<R> {
    type Item = Raw;

    fn next(&mut self) -> Option<Raw> {
        let mut block = Vec::new();
        let mut oversize = false;
        while !self.done {
            let mut line = Vec::new();
            let read = (&mut self.r)
                .take(MAX_BLOCK as u64 + 1)
                .read_until(b'\n', &mut line);
            match read {
                Ok(0) => self.done = true,
                Ok(_) => {
                    let end = contains(&line, END_CSR);
                    if block.len() + line.len() > MAX_BLOCK {
                        oversize = true;
                        block.clear();
                    } else if !oversize {
                        block.extend_from_slice(&line);
                    }
                    if !end {
                        continue;
                    }
                    self.n += 1;
                    let name = format!("stdin#{}", self.n);
                    if oversize {
                        let e = format!("{name}: a CSR block larger than 1 MiB; not a CSR");
                        return Some((name, Err(Error::input(e))));
                    }
                    if contains(&block, b"-----BEGIN") {
                        return Some((name, Ok(block)));
                    }
                    block.clear();
                }
                Err(e) => {
                    self.done = true;
                    let e = Error::input(format!("cannot read stdin: {e}"));
                    return Some(("stdin".into(), Err(e)));
                }
            }
        }
        // Text after the last END line that starts a block: let the parser say what is wrong.
        (contains(&block, b"-----BEGIN") || oversize).then(|| {
            self.n += 1;
            (format!("stdin#{}", self.n), Ok(block))
        })
    }
}

/// Whether `source` holds exactly one input, and the source again (nothing lost). An empty
/// one is an error.
pub(super) fn peek_single(source: Source) -> Result<(bool, Source)> {
    let mut src = source.peekable();
    let first = src
        .next()
        .ok_or_else(|| Error::input("no CSR found in the batch input"))?;
    let single = src.peek().is_none();
    Ok((single, Box::new(std::iter::once(first).chain(src))))
}

/// What an input needs for its output besides the certificate.
struct Meta {
    name: String,
    csr_pem: String,
    key_pem: Option<String>,
}

enum Msg {
    /// Input `i` went to the token.
    Input(usize, Meta),
    /// Input `i` failed before it got there (the error names it).
    Failed(usize, Error),
    /// Input `i` is signed and verified, or failed.
    Issued(usize, batch::Issued),
}

/// How far output has got, so that reading never runs more than `size` inputs ahead of it.
pub(super) struct Window {
    emitted: Mutex<usize>,
    moved: Condvar,
    size: usize,
}

impl Window {
    pub(super) fn new(size: usize) -> Self {
        Self {
            emitted: Mutex::new(0),
            moved: Condvar::new(),
            size,
        }
    }

    /// Wait until inputs up to (not including) `upto` may be read.
    fn wait_for(&self, upto: usize) {
        let mut done = lock(&self.emitted);
        while upto > *done + self.size {
            done = self
                .moved
                .wait(done)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn advance(&self, n: usize) {
        *lock(&self.emitted) += n;
        self.moved.notify_all();
    }
}

/// Reads inputs ahead of the signing sessions (a chunk at a time, within the window), makes
/// and checks their items, and hands their certificate requests to the batch. Inputs that
/// fail here go straight to output.
pub(super) struct Feeder<'a> {
    src: Source,
    make: Make<'a>,
    check: Check<'a>,
    /// Threads that make items (node key generation is slow).
    parallel: usize,
    next: usize,
    ready: VecDeque<(usize, Item)>,
    tx: mpsc::Sender<Msg>,
    window: &'a Window,
    stop: &'a AtomicBool,
    ended: bool,
}

impl<'a> Feeder<'a> {
    /// Make and check the first chunk. With a single input its failure is returned, so that
    /// a bad input is reported before the token is opened.
    fn prime(&mut self, single: bool) -> Result<()> {
        if !single {
            // A first chunk, so that a batch whose every input fails never opens the token.
            self.fill(PRIME);
            return Ok(());
        }
        if let Some(r) = self.read_chunk(1).into_iter().next() {
            self.ready.push_back((0, r?));
            self.next = 1;
        }
        Ok(())
    }

    /// Whether anything is left for the token.
    fn has_work(&self) -> bool {
        !self.ready.is_empty() || !self.ended
    }

    /// Read, make and check the next `want` inputs (fewer at the end); items go to `ready`,
    /// failures to the output.
    fn fill(&mut self, want: usize) {
        for r in self.read_chunk(want) {
            let i = self.next;
            self.next += 1;
            match r {
                Ok(item) => self.ready.push_back((i, item)),
                Err(e) => {
                    let _ = self.tx.send(Msg::Failed(i, e));
                }
            }
        }
    }

    fn read_chunk(&mut self, want: usize) -> Vec<Result<Item>> {
        self.window.wait_for(self.next + want);
        let raws: Vec<Raw> = self.src.by_ref().take(want).collect();
        if raws.len() < want {
            self.ended = true;
        }
        let (make, check) = (self.make, self.check);
        let one = |(name, bytes): &Raw| {
            let bytes = bytes.as_ref().map_err(Clone::clone)?;
            let item = make(name, bytes)?;
            check(&item)?;
            Ok(item)
        };
        if self.parallel <= 1 || raws.len() <= 1 {
            return raws.iter().map(one).collect();
        }
        let per = raws.len().div_ceil(self.parallel);
        std::thread::scope(|s| {
            let parts: Vec<_> = raws
                .chunks(per)
                .map(|part| s.spawn(move || part.iter().map(one).collect::<Vec<_>>()))
                .collect();
            parts
                .into_iter()
                .flat_map(|h| {
                    h.join()
                        .unwrap_or_else(|_| vec![Err(Error::input("node key generation failed"))])
                })
                .collect()
        })
    }
}

impl Iterator for Feeder<'_> {
    type Item = (usize, LeafRequest);

    fn next(&mut self) -> Option<(usize, LeafRequest)> {
        loop {
            if let Some((i, item)) = self.ready.pop_front() {
                let Item {
                    name,
                    leaf,
                    csr_pem,
                    key_pem,
                } = item;
                let meta = Meta {
                    name,
                    csr_pem,
                    key_pem,
                };
                let _ = self.tx.send(Msg::Input(i, meta));
                return Some((i, leaf));
            }
            if self.ended || self.stop.load(Ordering::Relaxed) {
                return None;
            }
            // One at a time, so that an input on stdin is signed as soon as it has arrived;
            // node keys are made a few per thread at once.
            self.fill(if self.parallel > 1 {
                self.parallel * 4
            } else {
                1
            });
        }
    }
}

/// One finished input, ready for output.
enum Done {
    Issued(Meta, Vec<u8>, Vec<String>),
    Failed(Error),
    /// Not output because the store failed: reported once, as the run's error (unless an
    /// earlier input failed), and counted.
    Unrecorded(Error),
}

/// Where and how results go out.
pub(super) struct OutPlan<'a> {
    /// `--out DIR`, else JSON lines on stdout.
    pub(super) out: Option<&'a str>,
    /// One input only: no `input` field, errors not prefixed with its name.
    pub(super) single: bool,
    /// The profile, as recorded.
    pub(super) profile: &'a str,
    /// Parallel writers for `--out` files.
    pub(super) writers: usize,
    /// Extra JSON fields of an issued certificate (-ca-bundle's `bundle` and `root`).
    pub(super) chain: &'a ChainFields<'a>,
}

/// Extra JSON fields made from an issued certificate's DER.
pub(super) type ChainFields<'a> = dyn Fn(&[u8]) -> Result<Vec<(&'static str, String)>> + Sync + 'a;

/// Takes finished inputs in any order and records and outputs them in input order.
struct Emitter<'a> {
    plan: OutPlan<'a>,
    rec: Recording,
    window: &'a Window,
    stop: &'a AtomicBool,
    in_flight: HashMap<usize, Meta>,
    done: HashMap<usize, Done>,
    next: usize,
    group: Vec<Done>,
    /// The store failed: nothing more is output.
    fatal: Option<Error>,
    first_failure: Option<Error>,
    failures: usize,
    issued: usize,
    show: bool,
}

impl Emitter<'_> {
    fn run(mut self, rx: &mpsc::Receiver<Msg>) -> Result<()> {
        // A group gathers for up to LINGER after its first message (or until GROUP inputs, or
        // the end), so that a durable commit is made per group, not per few certificates.
        while let Ok(msg) = rx.recv() {
            self.absorb(msg);
            let started = Instant::now();
            loop {
                self.take_ready();
                if self.group.len() >= GROUP {
                    self.flush();
                }
                let left = LINGER.saturating_sub(started.elapsed());
                match rx.recv_timeout(left) {
                    Ok(m) => self.absorb(m),
                    Err(_) => break,
                }
            }
            self.take_ready();
            self.flush();
        }
        // Handed to the batch but never finished (cannot happen; reported all the same).
        let mut left: Vec<(usize, Meta)> = self.in_flight.drain().collect();
        left.sort_by_key(|(i, _)| *i);
        for (i, m) in left {
            let e = Error::token(format!(
                "{}: not signed: the signing sessions stopped",
                m.name
            ));
            self.done.insert(i, Done::Failed(e));
        }
        self.take_ready();
        self.flush();
        if self.show && self.issued > 0 {
            eprintln!();
        }
        match (self.failures, self.first_failure) {
            (_, None) => Ok(()),
            (1, Some(e)) => Err(e),
            (n, Some(first)) => Err(Error::new(
                first.kind(),
                format!("{first} ({n} inputs failed)"),
            )),
        }
    }

    fn named(&self, e: Error, name: &str) -> Error {
        if self.plan.single { e } else { e.context(name) }
    }

    fn absorb(&mut self, msg: Msg) {
        match msg {
            Msg::Input(i, meta) => {
                self.in_flight.insert(i, meta);
            }
            Msg::Failed(i, e) => {
                self.done.insert(i, Done::Failed(e));
            }
            Msg::Issued(i, r) => {
                let Some(meta) = self.in_flight.remove(&i) else {
                    return;
                };
                let d = match r {
                    Ok((der, warnings)) => Done::Issued(meta, der, warnings),
                    Err(e) => Done::Failed(self.named(e, &meta.name)),
                };
                self.done.insert(i, d);
            }
        }
    }

    fn take_ready(&mut self) {
        while let Some(d) = self.done.remove(&self.next) {
            self.group.push(d);
            self.next += 1;
        }
    }

    /// Record the group's certificates in one transaction, then output them.
    fn flush(&mut self) {
        if self.group.is_empty() {
            return;
        }
        let mut group = std::mem::take(&mut self.group);
        let n = group.len();
        self.record(&mut group);
        self.output(group);
        self.window.advance(n);
    }

    fn record(&mut self, group: &mut [Done]) {
        let mut records: Vec<(usize, CertRecord)> = Vec::new();
        for (k, d) in group.iter_mut().enumerate() {
            let Done::Issued(meta, der, _) = d else {
                continue;
            };
            if let Some(f) = &self.fatal {
                *d = Done::Unrecorded(f.clone());
                continue;
            }
            match self.rec.record_of(der, self.plan.profile) {
                Ok(rec) => records.push((k, rec)),
                Err(e) => *d = Done::Failed(self.named(e, &meta.name)),
            }
        }
        if records.is_empty() {
            return;
        }
        let refs: Vec<&CertRecord> = records.iter().map(|(_, r)| r).collect();
        if let Err(e) = self.rec.insert(&refs) {
            // The store cannot take records: stop reading inputs; nothing more is output.
            self.stop.store(true, Ordering::Relaxed);
            for (k, _) in &records {
                if let Done::Issued(meta, _, _) = &group[*k] {
                    group[*k] = Done::Unrecorded(self.named(e.clone(), &meta.name));
                }
            }
            self.fatal = Some(e);
        }
    }

    fn output(&mut self, group: Vec<Done>) {
        let mut stdout = String::new();
        let mut to_write: Vec<(Meta, String)> = Vec::new();
        for d in group {
            let (meta, der, warnings) = match d {
                Done::Failed(e) => {
                    self.fail(e);
                    continue;
                }
                Done::Unrecorded(e) => {
                    self.failures += 1;
                    self.first_failure.get_or_insert(e);
                    continue;
                }
                Done::Issued(m, der, w) => (m, der, w),
            };
            for w in &warnings {
                warn(&if self.plan.single {
                    w.clone()
                } else {
                    format!("{}: {w}", meta.name)
                });
            }
            let pem = match build::pem("CERTIFICATE", &der) {
                Ok(p) => p,
                Err(e) => {
                    let e = self.named(e, &meta.name);
                    self.fail(e);
                    continue;
                }
            };
            if self.plan.out.is_some() {
                self.issued += 1;
                to_write.push((meta, pem));
                continue;
            }
            match (self.plan.chain)(&der) {
                Ok(extra) => {
                    self.issued += 1;
                    stdout.push_str(&json_line(&meta, pem, extra, self.plan.single));
                }
                Err(e) => {
                    let e = self.named(e, &meta.name);
                    self.fail(e);
                }
            }
        }
        if let Some(dir) = self.plan.out {
            for (meta, r) in write_files(dir, to_write, self.plan.writers) {
                if let Err(e) = r {
                    let e = self.named(e, &meta.name);
                    self.issued -= 1;
                    self.fail(e);
                }
            }
        }
        if !stdout.is_empty()
            && let Err(e) = write_stdout(&stdout)
        {
            self.stop.store(true, Ordering::Relaxed);
            self.fail(e);
        }
        if self.show {
            eprint!("\rp11ca: signed {}", self.issued);
        }
    }

    fn fail(&mut self, e: Error) {
        self.failures += 1;
        if self.first_failure.is_none() {
            self.first_failure = Some(e);
        } else {
            eprintln!("p11ca: error: {e}");
        }
    }
}

/// cfssl's JSON for one issued input (with the `input` field in a batch).
fn json_line(
    meta: &Meta,
    cert_pem: String,
    extra: Vec<(&'static str, String)>,
    single: bool,
) -> String {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("cert", cert_pem);
    fields.extend(extra);
    fields.insert("csr", meta.csr_pem.clone());
    if let Some(k) = &meta.key_pem {
        fields.insert("key", k.clone());
    }
    if !single {
        fields.insert("input", meta.name.clone());
    }
    p11ca::cfssl::output::result_json(&fields)
}

/// Write each input's `--out` files (with `writers` threads: each file is synced), in order.
fn write_files(dir: &str, items: Vec<(Meta, String)>, writers: usize) -> Vec<(Meta, Result<()>)> {
    let write = |(meta, pem): (Meta, String)| {
        let m = &meta;
        let r = out_files_of(dir, &m.name, &m.csr_pem, m.key_pem.as_deref(), &pem).commit();
        (meta, r)
    };
    if writers <= 1 || items.len() <= 1 {
        return items.into_iter().map(write).collect();
    }
    let per = items.len().div_ceil(writers);
    let mut parts: Vec<Vec<(Meta, String)>> = Vec::new();
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        parts.push(it.by_ref().take(per).collect());
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| s.spawn(move || part.into_iter().map(write).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// The inputs of a run and how each becomes an item.
pub(super) struct Inputs<'a> {
    pub(super) source: Source,
    pub(super) make: Make<'a>,
    pub(super) check: Check<'a>,
    /// Threads that make items.
    pub(super) parallel: usize,
}

/// Run the pipeline: read `inputs` within a window of `window` inputs, hand their requests to
/// `sign` (which opens the token and runs the batch over them), and record and output each
/// result in input order. Not called for nothing to sign; with `plan.single`, a bad input is
/// returned before `sign` is called. Exit: the first failure's, with the count.
pub(super) fn run(
    inputs: Inputs<'_>,
    plan: OutPlan<'_>,
    rec: Recording,
    window: usize,
    sign: &mut dyn FnMut(batch::Leaves<'_>, batch::OnIssued<'_>) -> Result<()>,
) -> Result<()> {
    let window = Window::new(window);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel();
    let mut feeder = Feeder {
        src: inputs.source,
        make: inputs.make,
        check: inputs.check,
        parallel: inputs.parallel,
        next: 0,
        ready: VecDeque::new(),
        tx: tx.clone(),
        window: &window,
        stop: &stop,
        ended: false,
    };
    feeder.prime(plan.single)?;
    let show = !plan.single && std::io::stderr().is_terminal();
    let emitter = Emitter {
        plan,
        rec,
        window: &window,
        stop: &stop,
        in_flight: HashMap::new(),
        done: HashMap::new(),
        next: 0,
        group: Vec::new(),
        fatal: None,
        first_failure: None,
        failures: 0,
        issued: 0,
        show,
    };
    std::thread::scope(|s| {
        let output = s.spawn(move || emitter.run(&rx));
        let signed = if feeder.has_work() {
            let on_issued = |i: usize, r: batch::Issued| {
                let _ = tx.send(Msg::Issued(i, r));
            };
            sign(&mut feeder, &on_issued)
        } else {
            Ok(())
        };
        drop(feeder);
        drop(tx);
        let emitted = output
            .join()
            .unwrap_or_else(|_| Err(Error::output("the output thread failed")));
        // No session was left to sign with: the inputs not yet read were not signed.
        let stopped = |s: Error| {
            Error::new(
                s.kind(),
                format!(
                    "{s}; the batch stopped there: inputs neither written nor named above were not signed"
                ),
            )
        };
        match (signed, emitted) {
            (Ok(()), r) => r,
            (Err(s), Ok(())) => Err(stopped(s)),
            (Err(s), Err(e)) => {
                eprintln!("p11ca: error: {e}");
                Err(stopped(s))
            }
        }
    })
}
