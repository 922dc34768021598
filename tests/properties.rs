//! Property tests of every input parser: the bounded fuzz pass that CI runs in the normal test
//! build. Each property runs a fixed number of generated cases (a few seconds in total); set
//! `PROPTEST_CASES` to run more. `ci/fuzz` runs the coverage-guided targets in tests/fuzz.
//!
//! Nothing here needs a token: only the parsers are exercised.

use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::Config;
use serde_json::{Map, Value, json};

use p11ca::Kind;
use p11ca::cfssl::certinfo::{cert_info, csr_info};
use p11ca::cfssl::config::SigningConfig;
use p11ca::cfssl::csr::CsrRequest;
use p11ca::cfssl::duration::GoDuration;
use p11ca::cfssl::output::files_from_json;
use p11ca::token::uri::{ObjectType, Pkcs11Uri};
use p11ca::x509::request;

const CSR_EC: &[u8] = include_bytes!("data/fuzz/node-ec.csr");
const CSR_RSA: &[u8] = include_bytes!("data/fuzz/node-rsa.csr");
const CA_CERT: &[u8] = include_bytes!("data/fuzz/ca.pem");

/// `cases` generated inputs per property unless `PROPTEST_CASES` says otherwise; no regression
/// files are written into the source tree (found failures become explicit tests below).
fn config(cases: u32) -> Config {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c.failure_persistence = None;
    c
}

/// A tiny deterministic generator for choices derived from one proptest-drawn seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*; a zero state would stay zero.
        if self.0 == 0 {
            self.0 = 0x9e37_79b9_7f4a_7c15;
        }
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// `s` with each ASCII letter upper- or lower-cased by the bits of `bits`.
fn recase(s: &str, bits: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if bits >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Recase every object key, except the keys of objects under a member named in `maps`.
fn recase_keys(v: &Value, rng: &mut Rng, maps: &[&str]) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let v = if maps.contains(&k.as_str()) {
                        match v {
                            Value::Object(m) => Value::Object(
                                m.iter()
                                    .map(|(k2, v2)| (k2.clone(), recase_keys(v2, rng, maps)))
                                    .collect(),
                            ),
                            other => recase_keys(other, rng, maps),
                        }
                    } else {
                        recase_keys(v, rng, maps)
                    };
                    (recase(k, rng.next()), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|i| recase_keys(i, rng, maps)).collect()),
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Generic JSON

/// Strings that matter to one of the parsers, mixed into generated JSON.
const INTERESTING: &[&str] = &[
    "",
    "0",
    "1h",
    "8760h",
    "1.5h",
    "-1h",
    "0s",
    "1y",
    "365d",
    "rsa",
    "ecdsa",
    "RSA",
    "signing",
    "key encipherment",
    "server auth",
    "client auth",
    "cert sign",
    "bogus",
    "2030-01-01T00:00:00Z",
    "2031-01-01T00:00:00.5+01:00",
    "1969-12-31T23:59:59Z",
    "9999-12-31T23:59:59-23:59",
    "id-qt-cps",
    "id-qt-unotice",
    "1.2.3.4",
    "2.5.29.37.0",
    "http://crl.example/ca.crl",
    "ünicode",
    "(",
    ".*",
    "\\.example\\.com$",
    "10.0.0.1",
    "::1",
    "pkcs11:token=x",
];

fn json_string() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(INTERESTING).prop_map(str::to_string),
        1 => "\\PC{0,12}",
        1 => "[0-9:TZ.+-]{0,25}",
    ]
    .boxed()
}

fn json_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        select(&[0i64, -1, 1, 2, 255, 256, 384, 521, 2048, 4096, 8193][..]).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        json_string().prop_map(Value::String),
    ]
    .boxed()
}

/// JSON whose object keys are mostly `keys` (in random letter case) and sometimes anything.
fn json_value(keys: &'static [&'static str]) -> BoxedStrategy<Value> {
    let key = prop_oneof![
        4 => (select(keys), any::<u64>()).prop_map(|(k, b)| recase(k, b)),
        1 => "\\PC{0,6}",
    ];
    json_leaf()
        .prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..7)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            ]
        })
        .boxed()
}

/// An object at the top (what the parsers want), then anything inside.
fn json_object(keys: &'static [&'static str]) -> BoxedStrategy<Vec<u8>> {
    let key = (select(keys), any::<u64>()).prop_map(|(k, b)| recase(k, b));
    prop::collection::vec((key, json_value(keys)), 0..8)
        .prop_map(|kv| serde_json::to_vec(&Value::Object(kv.into_iter().collect())).unwrap())
        .boxed()
}

/// Valid JSON cut short or with one byte changed: the error paths of the JSON reader.
fn damaged(json: BoxedStrategy<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    (json, any::<Index>(), any::<u8>(), 0..3u8)
        .prop_map(|(mut b, at, byte, op)| {
            if !b.is_empty() {
                let i = at.index(b.len());
                match op {
                    0 => b.truncate(i),
                    1 => b[i] = byte,
                    _ => b.insert(i, byte),
                }
            }
            b
        })
        .boxed()
}

// ---------------------------------------------------------------------------------------------
// CSR JSON (ca-csr.json, csr.json)

const CSR_KEYS: &[&str] = &[
    "cn",
    "names",
    "hosts",
    "key",
    "algo",
    "size",
    "ca",
    "pathlen",
    "pathlenzero",
    "expiry",
    "backdate",
    "serialnumber",
    "crl_url",
    "c",
    "st",
    "l",
    "o",
    "ou",
    "e",
    "oid",
];

/// Everything a caller does with a decoded request.
fn use_request(r: &CsrRequest) {
    let _ = r.key_spec("csr.json");
    let _ = r.ca_times("csr.json");
    let _ = r.subject_is_empty();
    if let Some(ca) = &r.ca {
        let _ = ca.path_len();
    }
}

/// A well-formed request, keys in lower case.
fn csr_request() -> impl Strategy<Value = Value> {
    let name = (
        "\\PC{0,6}",
        "[A-Z]{0,3}",
        "\\PC{0,6}",
        "\\PC{0,6}",
        prop::collection::btree_map(
            "[0-9]\\.[0-9]\\.[0-9]{1,3}|[A-Za-z]{1,4}",
            "\\PC{0,4}",
            0..3,
        ),
    )
        .prop_map(
            |(o, c, l, ou, oid)| json!({"o": o, "c": c, "l": l, "ou": ou, "st": "", "oid": oid}),
        );
    let key = prop::option::of((
        select(&["rsa", "ecdsa", "dsa"][..]),
        prop::option::of(select(
            &[256u32, 384, 521, 1024, 2048, 3072, 4096, 8192][..],
        )),
    ));
    let ca = prop::option::of((
        -2i64..300,
        any::<bool>(),
        select(&["", "43800h", "1h30m", "1y", "-1h", "0s"][..]),
        select(&["", "5m", "0", "1.5h"][..]),
    ));
    (
        "\\PC{0,12}",
        prop::collection::vec(name, 0..3),
        prop::collection::vec(
            select(&["a.example.com", "10.0.0.1", "::1", "x@y.z", "urn:a:b"][..]),
            0..4,
        ),
        key,
        ca,
        "[0-9]{0,4}",
    )
        .prop_map(|(cn, names, hosts, key, ca, serial)| {
            let mut o = json!({"cn": cn, "names": names, "hosts": hosts, "serialnumber": serial});
            if let Some((algo, size)) = key {
                o["key"] = json!({"algo": algo});
                if let Some(size) = size {
                    o["key"]["size"] = json!(size);
                }
            }
            if let Some((pathlen, zero, expiry, backdate)) = ca {
                o["ca"] = json!({
                    "pathlen": pathlen,
                    "pathlenzero": zero,
                    "expiry": expiry,
                    "backdate": backdate,
                });
            }
            o
        })
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn csr_json_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(r) = CsrRequest::from_json(&bytes, "csr.json") {
            use_request(&r);
        }
    }

}

proptest! {
    #![proptest_config(config(800))]

    #[test]
    fn csr_json_never_panics_on_json(
        bytes in prop_oneof![
            json_object(CSR_KEYS),
            damaged(json_object(CSR_KEYS)),
            csr_request().prop_map(|r| serde_json::to_vec(&r).unwrap()),
        ],
    ) {
        match CsrRequest::from_json(&bytes, "csr.json") {
            Ok(r) => use_request(&r),
            Err(e) => {
                prop_assert_eq!(e.kind(), Kind::Input);
                prop_assert!(e.message().starts_with("csr.json: "), "{}", e);
            }
        }
    }

    #[test]
    fn csr_json_keys_are_case_insensitive(req in csr_request(), seed in any::<u64>()) {
        let lower = serde_json::to_vec(&req).unwrap();
        let mixed = serde_json::to_vec(&recase_keys(&req, &mut Rng(seed), &["oid"])).unwrap();
        let a = CsrRequest::from_json(&lower, "csr.json");
        let b = CsrRequest::from_json(&mixed, "csr.json");
        prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let a = a.unwrap();
        prop_assert_eq!(&a.cn, req["cn"].as_str().unwrap());
        prop_assert_eq!(a.names.len(), req["names"].as_array().unwrap().len());
        prop_assert_eq!(a.hosts.len(), req["hosts"].as_array().unwrap().len());
        let b = b.unwrap();
        prop_assert_eq!(format!("{:?}", a.key_spec("f")), format!("{:?}", b.key_spec("f")));
        prop_assert_eq!(format!("{:?}", a.ca_times("f")), format!("{:?}", b.ca_times("f")));
    }
}

proptest! {
    #![proptest_config(config(2000))]

    /// Go's decoder sets a field once per matching key, in document order, so of two spellings
    /// of one key (`CN`, then `cn`) the later wins; a null leaves the earlier value.
    #[test]
    fn csr_json_later_spelling_wins(
        field in select(&["cn", "serialnumber", "crl_url"][..]),
        bits in any::<(u64, u64)>(),
        values in ("\\PC{0,6}", "\\PC{0,6}"),
        second_is_null in any::<bool>(),
    ) {
        let (k1, k2) = (recase(field, bits.0), recase(field, bits.1));
        let second = if second_is_null { Value::Null } else { Value::from(values.1.clone()) };
        let text = format!("{{{}:{},{}:{}}}", json!(k1), json!(values.0), json!(k2), second);
        let r = CsrRequest::from_json(text.as_bytes(), "csr.json").unwrap();
        let got = match field {
            "cn" => &r.cn,
            "serialnumber" => &r.serialnumber,
            _ => &r.crl_url,
        };
        let want = if second_is_null { &values.0 } else { &values.1 };
        prop_assert_eq!(got, want, "{}", text);
    }
}

/// Found by `csr_json_later_spelling_wins`: the keys were folded after parsing, in sorted order
/// (`CN` < `cn`), so `{"cn":"a","CN":"b"}` gave `a` where cfssl gives `b`.
#[test]
fn regression_csr_json_duplicate_key_order() {
    for text in [
        r#"{"cn":"a","CN":"b"}"#,
        r#"{"CN":"a","cn":"b"}"#,
        r#"{"cn":"b","Cn":null}"#,
    ] {
        let r = CsrRequest::from_json(text.as_bytes(), "csr.json").unwrap();
        assert_eq!(r.cn, "b", "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// ca-config.json

const CONFIG_KEYS: &[&str] = &[
    "signing",
    "default",
    "profiles",
    "usages",
    "expiry",
    "backdate",
    "not_before",
    "not_after",
    "ca_constraint",
    "is_ca",
    "max_path_len",
    "max_path_len_zero",
    "crl_url",
    "ocsp_url",
    "issuer_urls",
    "ocsp_no_check",
    "name_whitelist",
    "policies",
    "id",
    "qualifiers",
    "type",
    "value",
    "auth_key",
    "remote",
    "copy_extensions",
    "auth_keys",
    "remotes",
    "ocsp",
    "policy",
    "max_sans",
    "min_rsa_bits",
    "allowed_key_algorithms",
    "subject",
    "allow",
    "deny",
];

const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "Server-Auth",
    "bogus",
];

/// A field that is absent half the time and, when present, mostly valid: one bad field fails
/// the whole file, so bad values must be rare for the later checks to be reached.
fn field(good: BoxedStrategy<Value>, bad: BoxedStrategy<Value>) -> BoxedStrategy<Option<Value>> {
    prop::option::of(prop_oneof![30 => good, 1 => bad, 1 => json_leaf()]).boxed()
}

fn strings(v: &'static [&'static str]) -> BoxedStrategy<Value> {
    select(v).prop_map(Value::from).boxed()
}

/// An RFC 3339 time with a year in `years`.
fn rfc3339(years: std::ops::Range<u32>) -> BoxedStrategy<Value> {
    (
        years,
        1u32..13,
        1u32..29,
        0u32..24,
        0u32..60,
        0u32..60,
        prop::option::of(0u32..1000),
        prop::option::of((any::<bool>(), 0u32..24, 0u32..60)),
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, tz)| {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            let tz = match tz {
                None => "Z".to_string(),
                Some((plus, hh, mm)) => format!("{}{hh:02}:{mm:02}", if plus { '+' } else { '-' }),
            };
            Value::from(format!(
                "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{tz}"
            ))
        })
        .boxed()
}

fn profile() -> BoxedStrategy<Value> {
    let good_usages = &USAGES[..USAGES.len() - 2];
    let usages = prop::collection::vec(select(good_usages), 1..4)
        .prop_map(|u| json!(u))
        .boxed();
    let bad_usages = prop::collection::vec(select(USAGES), 0..4)
        .prop_map(|u| json!(u))
        .boxed();
    let bad_time = prop_oneof![
        concat!(
            "[0-9]{4}-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9]",
            "(\\.[0-9]{0,3})?(Z|[+-][0-2][0-9]:[0-5][0-9])",
        ),
        "\\PC{0,25}",
        Just("1969-12-31T23:59:59Z".to_string()),
    ]
    .prop_map(Value::from)
    .boxed();
    let url = "http://[a-z.]{1,10}/[a-z]{0,5}"
        .prop_map(Value::from)
        .boxed();
    let bad_url = "\\PC{0,10}".prop_map(Value::from).boxed();
    let fields: Vec<(&str, BoxedStrategy<Option<Value>>)> = vec![
        ("usages", field(usages, bad_usages)),
        (
            "expiry",
            field(
                strings(&["1h", "8760h", "1.5h", "90m", "43800h", "0s"]),
                strings(&["-1h", "1y", "0.5s", "", "5 m"]),
            ),
        ),
        (
            "backdate",
            field(
                strings(&["1h", "0s", "-1h", "5m", ""]),
                strings(&["1d", "h", "1e3s"]),
            ),
        ),
        ("not_before", field(rfc3339(1970..2050), bad_time.clone())),
        ("not_after", field(rfc3339(2050..10000), bad_time)),
        (
            "ca_constraint",
            field(ca_constraint(-1..=255), ca_constraint(-300..=300)),
        ),
        ("crl_url", field(url.clone(), bad_url.clone())),
        ("ocsp_url", field(url.clone(), bad_url.clone())),
        ("issuer_urls", url_list(url, bad_url)),
        (
            "ocsp_no_check",
            field(any::<bool>().prop_map(Value::from).boxed(), json_leaf()),
        ),
        (
            "name_whitelist",
            field(
                strings(&["\\.example\\.com$", ".*", "[[:alpha:]]", "^node\\.", ""]),
                strings(&["(", "a{1000}{1000}", "\\p{Nope}"]),
            ),
        ),
        ("policies", policies()),
        ("remote", field(json_leaf(), json_leaf())),
        ("copy_extensions", field(json_leaf(), json_leaf())),
        ("policy", field(issuance_policy(), json_value(CONFIG_KEYS))),
    ];
    let (names, strategies): (Vec<&str>, Vec<_>) = fields.into_iter().unzip();
    strategies
        .prop_map(move |vals| {
            Value::Object(
                names
                    .iter()
                    .zip(vals)
                    .filter_map(|(k, v)| Some((k.to_string(), v?)))
                    .collect(),
            )
        })
        .boxed()
}

/// A list of URLs: up to three good ones, or one or more bad ones.
fn url_list(
    url: BoxedStrategy<Value>,
    bad_url: BoxedStrategy<Value>,
) -> BoxedStrategy<Option<Value>> {
    field(
        prop::collection::vec(url, 0..3)
            .prop_map(Value::from)
            .boxed(),
        prop::collection::vec(bad_url, 1..3)
            .prop_map(Value::from)
            .boxed(),
    )
}

/// A profile's `ca_constraint` with `max_path_len` in `lens`.
fn ca_constraint(lens: std::ops::RangeInclusive<i64>) -> BoxedStrategy<Value> {
    (any::<bool>(), lens, any::<bool>())
        .prop_map(|(c, n, z)| json!({"is_ca": c, "max_path_len": n, "max_path_len_zero": z}))
        .boxed()
}

/// A profile's `policies`: mostly OIDs with CPS and user-notice qualifiers, some malformed.
fn policies() -> BoxedStrategy<Option<Value>> {
    let qualifier = prop_oneof![
        "[ -~]{1,20}".prop_map(|v| json!({"type": "id-qt-cps", "value": v})),
        "\\PC{1,20}".prop_map(|v| json!({"type": "id-qt-unotice", "value": v})),
    ];
    let policy = (
        "[0-2]\\.[0-3](\\.[0-9]{1,4}){0,4}",
        prop::collection::vec(qualifier, 0..3),
    )
        .prop_map(|(id, q)| json!({"id": id, "qualifiers": q}))
        .boxed();
    let bad_qualifier = (
        select(&["id-qt-cps", "id-qt-unotice", "x", ""][..]),
        prop_oneof!["[ -~]{0,20}", "\\PC{0,20}", "a{201}"],
    )
        .prop_map(|(t, v)| json!({"type": t, "value": v}));
    let bad_policy = (
        prop_oneof!["[0-9](\\.[0-9]{1,4}){0,5}", "\\PC{0,8}"],
        prop::collection::vec(bad_qualifier, 0..3),
    )
        .prop_map(|(id, q)| json!({"id": id, "qualifiers": q}));
    field(
        prop::collection::vec(policy, 0..3)
            .prop_map(Value::from)
            .boxed(),
        prop::collection::vec(bad_policy, 1..3)
            .prop_map(Value::from)
            .boxed(),
    )
}

/// A profile's `policy` object: mostly valid values, some out of range or unknown.
fn issuance_policy() -> BoxedStrategy<Value> {
    let list = prop::collection::vec(
        select(&["system:masters", "acme", "node1", "", "O"][..]),
        0..3,
    );
    let lists = prop::collection::btree_map(select(&["O", "ou", "CN", "L"][..]), list, 0..3);
    (
        prop::option::of(prop_oneof![1usize..200, Just(0), Just(20_000)]),
        prop::option::of(prop_oneof![Just(2048usize), Just(3072), Just(1024)]),
        prop::option::of(prop::collection::vec(
            select(&["rsa", "ECDSA", "dsa"][..]),
            0..3,
        )),
        prop::option::of((lists.clone(), lists)),
    )
        .prop_map(|(max, bits, algs, subject)| {
            let mut p = json!({});
            if let Some(m) = max {
                p["max_sans"] = json!(m);
            }
            if let Some(b) = bits {
                p["min_rsa_bits"] = json!(b);
            }
            if let Some(a) = algs {
                p["allowed_key_algorithms"] = json!(a);
            }
            if let Some((allow, deny)) = subject {
                p["subject"] = json!({"allow": allow, "deny": deny});
            }
            p
        })
        .boxed()
}

fn config_file() -> BoxedStrategy<Vec<u8>> {
    (
        prop::option::weighted(0.8, profile()),
        prop::collection::btree_map(
            prop_oneof![
                select(&["kubernetes", "default", "Kube", ""][..]).prop_map(String::from),
                "\\PC{0,5}"
            ],
            profile(),
            0..3,
        ),
        prop::option::of(json_leaf()),
        any::<u64>(),
    )
        .prop_map(|(default, profiles, auth_keys, seed)| {
            let mut signing = json!({"profiles": profiles});
            if let Some(mut d) = default {
                // The default profile must state an expiry; give it one most of the time.
                if d.get("expiry").is_none() && seed % 8 != 0 {
                    d["expiry"] = json!("8760h");
                }
                signing["default"] = d;
            }
            let mut top = json!({"signing": signing});
            if let Some(a) = auth_keys {
                top["auth_keys"] = a;
            }
            let top = recase_keys(&top, &mut Rng(seed), &["profiles", "auth_keys", "remotes"]);
            serde_json::to_vec(&top).unwrap()
        })
        .boxed()
}

/// Everything a caller does with a parsed config.
fn use_config(c: &SigningConfig) {
    let names = c.profile_names();
    for name in names
        .iter()
        .map(|n| Some(n.as_str()))
        .chain([None, Some("no such profile")])
    {
        if let Ok(p) = c.profile(name) {
            let _ = p.extensions();
            let _ = p.allows(
                "node.example.com",
                &["a.example.com".into(), "10.0.0.1".into()],
            );
            // The configured issuance policy, on a real request and CA.
            let csr = request::parse(CSR_EC, "node-ec.csr").unwrap();
            let ca = p11ca::ca::issue::parse_ca_cert(CA_CERT, "ca.pem").unwrap();
            let ca_subject = ca.tbs_certificate().subject();
            if let Err(e) = p.policy.check(
                &p.name,
                &csr.subject,
                &csr.sans,
                &csr.public_key,
                ca_subject,
            ) {
                assert_eq!(e.kind(), Kind::Policy, "{e}");
            }
        }
    }
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn config_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(c) = SigningConfig::from_json(&bytes, "ca-config.json", &mut Vec::new()) {
            use_config(&c);
        }
    }

}

proptest! {
    #![proptest_config(config(800))]

    #[test]
    fn config_never_panics_on_json(
        bytes in prop_oneof![
            3 => config_file(),
            1 => json_object(CONFIG_KEYS),
            1 => damaged(config_file()),
        ],
    ) {
        let mut notices = Vec::new();
        match SigningConfig::from_json(&bytes, "ca-config.json", &mut notices) {
            Ok(c) => use_config(&c),
            Err(e) => {
                prop_assert_eq!(e.kind(), Kind::Input);
                prop_assert!(e.message().starts_with("ca-config.json: "), "{}", e);
                prop_assert!(!e.message().contains('\n'));
            }
        }
        for n in &notices {
            prop_assert!(n.starts_with("ca-config.json: "), "{}", n);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Go durations

const UNITS: &[(&str, i128)] = &[
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ns", 1),
];

/// A valid Go duration and its value in nanoseconds.
fn go_duration() -> impl Strategy<Value = (String, i128)> {
    let part = (
        select(UNITS),
        0u32..100_000,
        prop::option::of((0u32..1000, 1u32..=3)),
    );
    (
        select(&["", "+", "-"][..]),
        prop::collection::vec(part, 1..5),
    )
        .prop_map(|(sign, parts)| {
            let mut text = sign.to_string();
            let mut ns: i128 = 0;
            for ((unit, per), int, frac) in parts {
                text += &int.to_string();
                ns += i128::from(int) * per;
                if let Some((f, digits)) = frac {
                    let f = f % 10u32.pow(digits);
                    text += &format!(".{f:0width$}", width = digits as usize);
                    // Exact for h, m, s, ms, us with up to 3 digits; 0 for ns, as in Go.
                    ns += i128::from(f) * per / 10i128.pow(digits);
                }
                text += unit;
            }
            (text, if sign == "-" { -ns } else { ns })
        })
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn duration_never_panics(
        s in prop_oneof![
            "\\PC{0,16}",
            "[-+]?[0-9.]{0,40}(h|m|s|ms|us|µs|ns|d|y)?[0-9.hmsnuµ]{0,8}",
        ],
    ) {
        let _ = GoDuration::parse(&s);
    }

    #[test]
    fn duration_valid_go_syntax((text, ns) in go_duration()) {
        let d = GoDuration::parse(&text).map_err(TestCaseError::fail)?;
        prop_assert_eq!(i128::from(d.as_secs()), ns / 1_000_000_000, "{}", text);
        prop_assert_eq!(d.is_negative(), ns < 0, "{}", text);
        // Display prints whole seconds (or hours), which parse back to the same seconds.
        let again = GoDuration::parse(&d.to_string()).unwrap();
        prop_assert_eq!(again.as_secs(), d.as_secs());
    }

    #[test]
    fn duration_days_and_years_fail(
        (text, _) in go_duration(),
        unit in select(&["d", "y", "w", "D", "Y", "day", "days", "years"][..]),
        n in 0u32..1000,
        at_end in any::<bool>(),
    ) {
        let bad = if at_end { format!("{text}{n}{unit}") } else { format!("{n}{unit}{text}") };
        let e = GoDuration::parse(&bad).unwrap_err();
        prop_assert!(e.contains("unknown unit") && e.contains("8760h"), "{}: {}", bad, e);
    }

    #[test]
    fn duration_large_values_are_refused_not_wrapped(
        (unit, int) in select(UNITS).prop_flat_map(|unit| {
            let per = unit.1 as u128;
            // Random lengths, and counts just below where i64 and i128 nanoseconds overflow.
            let near = move |limit: u128| {
                prop_oneof![Just(0u128), 0u128..3, 0u128..2000]
                    .prop_map(move |k| (limit / per).saturating_sub(k).max(1).to_string())
            };
            let int = prop_oneof![
                "[1-9][0-9]{0,39}",
                near(i64::MAX as u128),
                near(i128::MAX as u128),
            ];
            (Just(unit), int)
        }),
        frac in "[0-9]{0,40}",
        negative in any::<bool>(),
    ) {
        let text = format!("{}{int}.{frac}{}", if negative { "-" } else { "" }, unit.0);
        // The model: exact value with digit-by-digit truncation of the fraction, in u128.
        let model = int.parse::<u128>().ok().and_then(|i| {
            let mut v = i.checked_mul(unit.1 as u128)?;
            let mut scale = unit.1 as u128;
            for d in frac.bytes().take(30) {
                scale /= 10;
                v = v.checked_add(u128::from(d - b'0') * scale)?;
            }
            Some(v)
        });
        match (GoDuration::parse(&text), model) {
            (Ok(d), Some(v)) if v <= i64::MAX as u128 => {
                let secs = (v / 1_000_000_000) as i64;
                prop_assert_eq!(d.as_secs(), if negative { -secs } else { secs }, "{}", text);
            }
            (Err(e), m) => {
                prop_assert!(m.is_none_or(|v| v > i64::MAX as u128), "{}: {}", text, e);
                prop_assert!(e.contains("too large"), "{}: {}", text, e);
            }
            (Ok(d), m) => prop_assert!(false, "{} parsed to {:?}, model {:?}", text, d, m),
        }
    }
}

/// Found by review and `duration_large_values_are_refused_not_wrapped`: a count of hours just
/// below i128::MAX nanoseconds plus a fraction overflowed while adding the fraction (a panic in
/// debug builds; in release it wrapped, and the minus-signed input parsed as a huge positive).
#[test]
fn regression_duration_fraction_overflow() {
    for s in [
        "47261439850130342147690917.9h",
        "-47261439850130342147690917.9h",
        "2835686391007820528861455061.99999999m",
        "170141183460469231731687303715.9s",
    ] {
        let e = GoDuration::parse(s).unwrap_err();
        assert!(e.contains("too large"), "{s}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// pkcs11: URIs

/// Pieces URIs are made of, for the no-panic and round-trip properties.
const URI_PIECES: &[&str] = &[
    "pkcs11:",
    "token",
    "id",
    "object",
    "type",
    "serial",
    "slot-id",
    "model",
    "manufacturer",
    "library-version",
    "slot-description",
    "pin-source",
    "pin-value",
    "module-path",
    "module-name",
    "x-a",
    "=",
    "=",
    ";",
    ";",
    "?",
    "&",
    "%",
    "%2",
    "%41",
    "%ff",
    "%C3%A9",
    "%00",
    "private",
    "cert",
    "secret-key",
    "a",
    "1",
    "18446744073709551616",
    "+7",
    "é",
    "/",
    "*",
    "***",
    "file:/run/pin",
];

fn uri_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (any::<bool>(), prop::collection::vec(select(URI_PIECES), 0..16))
            .prop_map(|(prefix, p)| {
                format!("{}{}", if prefix { "pkcs11:" } else { "" }, p.concat())
            }),
        1 => "\\PC{0,30}",
        1 => "pkcs11:[ -~]{0,30}",
    ]
}

/// Bytes kept as they are in a path (`;`-separated) or query (`&`-separated) value.
fn keep_raw(b: u8, in_path: bool) -> bool {
    b.is_ascii_alphanumeric()
        || b"-._~:@!$'()*+,=".contains(&b)
        || (in_path && b == b'&')
        || (!in_path && b"/?|".contains(&b))
}

/// Percent-encode `v`, choosing at random for bytes that may also appear raw.
fn encode(v: &[u8], in_path: bool, rng: &mut Rng) -> String {
    let mut s = String::new();
    for &b in v {
        if keep_raw(b, in_path) && rng.coin() {
            s.push(b as char);
        } else if rng.coin() {
            s += &format!("%{b:02x}");
        } else {
            s += &format!("%{b:02X}");
        }
    }
    s
}

type UriFields = (
    Vec<Option<String>>,
    Option<u64>,
    Option<Vec<u8>>,
    Option<ObjectType>,
    Vec<Option<String>>,
    Option<(bool, String)>,
);

const PATH_TEXT: &[&str] = &[
    "token",
    "manufacturer",
    "serial",
    "model",
    "slot-description",
    "slot-manufacturer",
    "library-manufacturer",
    "library-description",
    "library-version",
    "object",
];
const QUERY_TEXT: &[&str] = &["module-path", "module-name"];

fn uri_fields() -> impl Strategy<Value = UriFields> {
    let text = || prop::option::weighted(0.4, "\\PC{0,8}");
    (
        prop::collection::vec(text(), PATH_TEXT.len()),
        prop::option::of(any::<u64>()),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..12)),
        prop::option::of(select(
            &[
                ObjectType::Public,
                ObjectType::Private,
                ObjectType::Cert,
                ObjectType::SecretKey,
                ObjectType::Data,
            ][..],
        )),
        prop::collection::vec(text(), QUERY_TEXT.len()),
        prop::option::weighted(0.3, (any::<bool>(), "\\PC{0,8}")),
    )
}

fn uri_from_fields(f: &UriFields) -> Pkcs11Uri {
    let (path, slot, id, ty, query, pin) = f;
    let mut u = Pkcs11Uri::default();
    let [
        token,
        manufacturer,
        serial,
        model,
        sd,
        sm,
        lm,
        ld,
        lv,
        object,
    ] = path.as_slice()
    else {
        unreachable!()
    };
    u.token = token.clone();
    u.manufacturer = manufacturer.clone();
    u.serial = serial.clone();
    u.model = model.clone();
    u.slot_description = sd.clone();
    u.slot_manufacturer = sm.clone();
    u.library_manufacturer = lm.clone();
    u.library_description = ld.clone();
    u.library_version = lv.clone();
    u.object = object.clone();
    u.slot_id = *slot;
    u.id = id.clone();
    u.object_type = *ty;
    u.module_path = query[0].clone();
    u.module_name = query[1].clone();
    if let Some((false, src)) = pin {
        u.pin_source = Some(src.clone());
    }
    u
}

/// The URI text for `f`, attributes in random order, bytes encoded at random.
fn uri_string(f: &UriFields, rng: &mut Rng) -> String {
    let (path, slot, id, ty, query, pin) = f;
    let mut p: Vec<String> = Vec::new();
    for (name, v) in PATH_TEXT.iter().zip(path) {
        if let Some(v) = v {
            p.push(format!("{name}={}", encode(v.as_bytes(), true, rng)));
        }
    }
    if let Some(s) = slot {
        p.push(format!("slot-id={s}"));
    }
    if let Some(id) = id {
        p.push(format!("id={}", encode(id, true, rng)));
    }
    if let Some(t) = ty {
        p.push(format!("type={}", t.as_str()));
    }
    if rng.coin() {
        p.push(format!("x-vendor={}", encode(b"v;?&", true, rng)));
    }
    let mut q: Vec<String> = Vec::new();
    for (name, v) in QUERY_TEXT.iter().zip(query) {
        if let Some(v) = v {
            q.push(format!("{name}={}", encode(v.as_bytes(), false, rng)));
        }
    }
    if let Some((is_value, v)) = pin {
        let name = if *is_value { "pin-value" } else { "pin-source" };
        q.push(format!("{name}={}", encode(v.as_bytes(), false, rng)));
    }
    rng.shuffle(&mut p);
    rng.shuffle(&mut q);
    let mut s = format!("pkcs11:{}", p.join(";"));
    if !q.is_empty() || rng.coin() {
        s += &format!("?{}", q.join("&"));
    }
    s
}

proptest! {
    #![proptest_config(config(4000))]

    #[test]
    fn uri_print_parse_is_stable(s in uri_text()) {
        let Ok(u) = Pkcs11Uri::parse(&s) else { return Ok(()) };
        let once = u.to_string();
        let reparsed = Pkcs11Uri::parse(&once)
            .map_err(|e| TestCaseError::fail(format!("{s:?} printed as {once:?}: {e}")))?;
        prop_assert_eq!(&reparsed.to_string(), &once, "{:?}", s);
        // The fields survive the round trip (a pin-value is printed as *** on purpose).
        let (mut a, mut b) = (u, reparsed);
        prop_assert_eq!(a.pin_value.is_some(), b.pin_value.is_some());
        a.pin_value = None;
        b.pin_value = None;
        prop_assert_eq!(a, b, "{:?}", s);
    }

}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn uri_generated_parse_to_their_fields(f in uri_fields(), seed in any::<u64>()) {
        let text = uri_string(&f, &mut Rng(seed));
        let mut got = Pkcs11Uri::parse(&text)
            .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        let want = uri_from_fields(&f);
        let pin = got.pin_value.take();
        prop_assert_eq!(
            pin.as_ref().map(|p| p.as_str()),
            f.5.as_ref().filter(|p| p.0).map(|p| p.1.as_str())
        );
        prop_assert_eq!(&got, &want, "{}", text);
        // Printing it (without the PIN) gives a URI that parses to the same fields again.
        let printed = got.to_string();
        prop_assert_eq!(Pkcs11Uri::parse(&printed).unwrap(), got, "{}", printed);
    }
}

// ---------------------------------------------------------------------------------------------
// CSR (and certificate) readers

/// `base` with a few random byte edits.
fn mutated(base: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    (
        select(base),
        prop::collection::vec((any::<Index>(), any::<u8>(), 0..5u8), 0..4),
    )
        .prop_map(|(b, edits)| {
            let mut v = b.to_vec();
            for (at, byte, op) in edits {
                if v.is_empty() {
                    break;
                }
                let i = at.index(v.len());
                match op {
                    0 => v[i] ^= byte | 1,
                    1 => v[i] = byte,
                    2 => {
                        v.remove(i);
                    }
                    3 => v.insert(i, byte),
                    _ => v.truncate(i),
                }
            }
            v
        })
}

/// The DER inside a fixture's PEM.
fn der_of(pem: &[u8]) -> &'static [u8] {
    let text = std::str::from_utf8(pem).unwrap();
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    Box::leak(decode_b64(&b64).into_boxed_slice())
}

/// Minimal base64 for the test's own fixtures.
fn decode_b64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        acc = (acc << 6) | u32::from(val(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn seeds() -> &'static [&'static [u8]] {
    use std::sync::OnceLock;
    static SEEDS: OnceLock<Vec<&'static [u8]>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        vec![
            CSR_EC,
            CSR_RSA,
            CA_CERT,
            der_of(CSR_EC),
            der_of(CSR_RSA),
            der_of(CA_CERT),
        ]
    })
}

#[test]
fn fixtures_parse() {
    for csr in [CSR_EC, CSR_RSA, der_of(CSR_EC), der_of(CSR_RSA)] {
        let p = request::parse(csr, "t").unwrap();
        assert!(!p.wants_ca);
        let info = csr_info(csr, "t").unwrap();
        assert!(info.signature_valid);
    }
    assert_eq!(request::parse(CSR_EC, "t").unwrap().sans.len(), 4);
    assert_eq!(
        cert_info(CA_CERT, "t").unwrap().sans,
        ["ca.example.com", "192.168.1.1"]
    );
    assert_eq!(
        cert_info(der_of(CA_CERT), "t").unwrap().subject.common_name,
        "fuzz CA"
    );
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn csr_reader_never_panics_on_bytes(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|mut b| { b.insert(0, 0x30); b }),
        concat!(
            "-----BEGIN (NEW )?CERTIFICATE REQUEST-----\n[A-Za-z0-9+/=\n :-]{0,60}",
            "(-----END (NEW )?CERTIFICATE REQUEST-----\n)?",
        )
            .prop_map(String::into_bytes),
    ]) {
        let _ = request::parse(&bytes, "t");
        let _ = csr_info(&bytes, "t");
        let _ = cert_info(&bytes, "t");
    }

}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn csr_reader_never_panics_on_mutations(bytes in mutated(seeds())) {
        if request::parse(&bytes, "t").is_ok() {
            // What p11ca would sign, certinfo describes, with a valid signature.
            let info = csr_info(&bytes, "t");
            prop_assert!(info.as_ref().is_ok_and(|i| i.signature_valid), "{:?}", info);
        }
        if let Err(e) = csr_info(&bytes, "t") {
            prop_assert_eq!(e.kind(), Kind::Input);
        }
        if let Err(e) = cert_info(&bytes, "t") {
            prop_assert_eq!(e.kind(), Kind::Input);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// cfssljson input

const OUTPUT_KEYS: &[&str] = &[
    "cert",
    "certificate",
    "key",
    "private_key",
    "csr",
    "certificate_request",
    "key_uri",
    "success",
    "result",
    "errors",
    "message",
];

/// What `files_from_json` must do with a bare object: `Ok(files)` or an error.
fn output_model(obj: &Map<String, Value>, base: &str) -> Option<Vec<String>> {
    let groups: &[(&[&str], &str)] = &[
        (&["cert", "certificate"], ".pem"),
        (&["key", "private_key"], "-key.pem"),
        (&["csr", "certificate_request"], ".csr"),
        (&["key_uri"], "-key.uri"),
    ];
    let mut files = Vec::new();
    for (keys, suffix) in groups {
        for key in *keys {
            match obj.get(*key) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) if s.is_empty() => {}
                // A key_uri is written only if it is a key handle and nothing more.
                Some(Value::String(s)) if *key == "key_uri" && !is_bare_key_handle(s) => {
                    return None;
                }
                Some(Value::String(_)) => files.push(format!("{base}{suffix}")),
                Some(_) => return None,
            }
            break;
        }
    }
    (!files.is_empty()).then_some(files)
}

fn is_bare_key_handle(s: &str) -> bool {
    p11ca::token::Pkcs11Uri::parse(s.trim()).is_ok_and(|u| {
        u.module_path.is_none()
            && u.module_name.is_none()
            && u.pin_source.is_none()
            && u.pin_value.is_none()
    })
}

fn output_object() -> impl Strategy<Value = Map<String, Value>> {
    let value = prop_oneof![
        2 => "pkcs11:token=[a-z]{1,4}(;object=[a-z]{1,3})?(\\?(module-path=/x|pin-source=file:/p|pin-value=1))?"
            .prop_map(Value::from),
        3 => "\\PC{0,5}".prop_map(Value::from),
        1 => Just(Value::from("")),
        2 => json_leaf(),
        1 => json_value(OUTPUT_KEYS),
    ];
    prop::collection::vec((select(OUTPUT_KEYS).prop_map(String::from), value), 0..6)
        .prop_map(|kv| kv.into_iter().collect())
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn output_never_panics_on_bytes(
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..100), json_object(OUTPUT_KEYS)],
        bare in any::<bool>(),
        base in "\\PC{0,8}",
    ) {
        if let Err(e) = files_from_json(&bytes, "stdin", bare, &base) {
            prop_assert_eq!(e.kind(), Kind::Input);
        }
    }

    #[test]
    fn output_matches_cfssljson(obj in output_object(), envelope in any::<bool>()) {
        let want = output_model(&obj, "out/n");
        let input = if envelope {
            json!({"success": true, "result": obj, "errors": [], "messages": []})
        } else {
            Value::Object(obj.clone())
        };
        let bytes = serde_json::to_vec(&input).unwrap();
        let got = files_from_json(&bytes, "in.json", !envelope, "out/n");
        match (got, want) {
            (Ok(set), Some(files)) => {
                let paths: Vec<String> = set.paths().map(|p| p.display().to_string()).collect();
                prop_assert_eq!(paths, files);
            }
            (Err(e), None) => {
                prop_assert_eq!(e.kind(), Kind::Input);
                prop_assert!(e.message().starts_with("in.json: "), "{}", e);
            }
            (got, want) => {
                let got = got.map(|s| s.paths().count());
                prop_assert!(false, "{:?}: got {:?}, want {:?}", obj, got, want);
            }
        }
    }

    #[test]
    fn output_non_string_value_is_an_input_error(
        key in select(&["cert", "key", "csr", "key_uri"][..]),
        value in json_leaf()
            .prop_filter("not a string or null", |v| !v.is_string() && !v.is_null()),
        others in output_object(),
    ) {
        let mut obj = others;
        obj.insert(key.to_string(), value);
        let e = files_from_json(&serde_json::to_vec(&obj).unwrap(), "in.json", true, "n")
            .map(|s| s.paths().count())
            .unwrap_err();
        prop_assert_eq!(e.kind(), Kind::Input);
        prop_assert!(e.message().contains("must be a string"), "{}", e);
    }
}

// ---------------------------------------------------------------------------------------------
// Issuance policy: host names

/// Host-name-like strings: mostly LDH labels, with dots, stars and stray bytes mixed in.
fn host_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "(\\*\\.)?([a-zA-Z0-9-]{0,70}\\.){0,5}[a-zA-Z0-9-]{0,70}",
        "[a-z*.\\x00-\\x1f _@:/\\[\\]-]{0,40}",
        "\\PC{0,40}",
    ]
}

proptest! {
    #![proptest_config(config(3000))]

    /// Whatever the string, the check does not panic, a refusal is one policy line without raw
    /// control characters, and an accepted DNS name is a real host name.
    #[test]
    fn accepted_dns_names_are_host_names(h in host_like()) {
        use p11ca::x509::hosts::San;
        match p11ca::x509::policy::check_san(&San::Dns(h.clone())) {
            Ok(()) => {
                prop_assert!(h.len() <= 253, "{:?}", h);
                let bare = h.strip_prefix("*.").unwrap_or(&h);
                prop_assert!(bare.contains('.') || !h.starts_with("*."), "{:?}", h);
                for label in bare.split('.') {
                    prop_assert!((1..=63).contains(&label.len()), "{:?}", h);
                    prop_assert!(label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "{:?}", h);
                    prop_assert!(!label.starts_with('-') && !label.ends_with('-'), "{:?}", h);
                }
            }
            Err(e) => {
                prop_assert_eq!(e.kind(), Kind::Policy);
                prop_assert!(!e.message().chars().any(char::is_control), "{:?}", e.message());
            }
        }
    }
}
