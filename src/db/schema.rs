//! The store's schema versions. Version 2 is cfssl's certdb (`certificates` with the columns of
//! cfssl's migrations 001 and 002, `ocsp_responses`), so cfssl's own `revoke`, `ocsprefresh`,
//! `ocspserve` and `sign -db-config` work on a p11ca store, plus p11ca's own columns (all
//! defaulted, so cfssl's INSERTs still work) and the CRL number table.

/// One schema step: its version, a description, and its SQL for SQLite and PostgreSQL.
pub(super) struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// Version 1: p11ca's own table (the 0.x releases); kept to create it in tests of the
/// migration and to migrate stores written by them.
pub const V1_SQL: &str = "CREATE TABLE certificates (
        serial_number TEXT NOT NULL,
        authority_key_identifier TEXT NOT NULL,
        serial_hex TEXT NOT NULL,
        subject TEXT NOT NULL,
        common_name TEXT NOT NULL,
        sans TEXT NOT NULL,
        profile TEXT NOT NULL,
        not_before BIGINT NOT NULL,
        not_after BIGINT NOT NULL,
        pem TEXT NOT NULL,
        requester TEXT NOT NULL,
        auth_key TEXT NOT NULL,
        issued_at BIGINT NOT NULL,
        PRIMARY KEY (serial_number, authority_key_identifier)
    );
    CREATE INDEX certificates_not_after ON certificates (not_after);
    CREATE INDEX certificates_serial_hex ON certificates (serial_hex);";

/// cfssl's `certificates` and `ocsp_responses` (certdb/sqlite/migrations 001 + 002), p11ca's
/// columns after them. `certificates_crl` is a partial covering index of the revoked rows: a
/// CRL of a million entries reads only it, not the table's PEMs. v1 rows are copied over: times become cfssl's text form, `sans` keeps
/// cfssl's meaning (DNS names only, `null` when none) and every name moves to `p11ca_sans`.
const V2_SQLITE: &str = "ALTER TABLE certificates RENAME TO p11ca_v1_certificates;
    DROP INDEX certificates_not_after;
    DROP INDEX certificates_serial_hex;
    CREATE TABLE certificates (
        serial_number blob NOT NULL,
        authority_key_identifier blob NOT NULL,
        ca_label blob,
        status blob NOT NULL,
        reason int,
        expiry timestamp,
        revoked_at timestamp,
        pem blob NOT NULL,
        issued_at timestamp,
        not_before timestamp,
        metadata text,
        sans text,
        common_name text,
        serial_hex TEXT NOT NULL DEFAULT '',
        subject TEXT NOT NULL DEFAULT '',
        profile TEXT NOT NULL DEFAULT '',
        requester TEXT NOT NULL DEFAULT '',
        auth_key TEXT NOT NULL DEFAULT '',
        p11ca_sans TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (serial_number, authority_key_identifier)
    );
    CREATE TABLE ocsp_responses (
        serial_number blob NOT NULL,
        authority_key_identifier blob NOT NULL,
        body blob NOT NULL,
        expiry timestamp,
        PRIMARY KEY (serial_number, authority_key_identifier),
        FOREIGN KEY (serial_number, authority_key_identifier)
            REFERENCES certificates (serial_number, authority_key_identifier)
    );
    INSERT INTO certificates (serial_number, authority_key_identifier, ca_label, status, reason,
        expiry, revoked_at, pem, issued_at, not_before, metadata, sans, common_name,
        serial_hex, subject, profile, requester, auth_key, p11ca_sans)
    SELECT serial_number, authority_key_identifier, '', 'good', 0,
        strftime('%Y-%m-%d %H:%M:%S+00:00', not_after, 'unixepoch'),
        '0001-01-01 00:00:00+00:00', pem,
        strftime('%Y-%m-%d %H:%M:%S+00:00', issued_at, 'unixepoch'),
        strftime('%Y-%m-%d %H:%M:%S+00:00', not_before, 'unixepoch'),
        CAST('null' AS BLOB),
        CAST(COALESCE((SELECT json_group_array(value) FROM json_each(v1.sans)
            WHERE instr(value, '@') = 0 AND instr(value, ':') = 0
              AND value GLOB '*[^0-9.]*'
            HAVING count(*) > 0), 'null') AS BLOB),
        common_name, serial_hex, subject, profile, requester, auth_key, sans
    FROM p11ca_v1_certificates AS v1;
    DROP TABLE p11ca_v1_certificates;
    CREATE INDEX certificates_expiry ON certificates (expiry);
    CREATE INDEX certificates_serial_hex ON certificates (serial_hex);
    CREATE INDEX certificates_aki ON certificates (authority_key_identifier);
    CREATE INDEX certificates_crl ON certificates
        (authority_key_identifier, status, expiry, serial_hex, serial_number, revoked_at, reason)
        WHERE status = 'revoked';
    CREATE TABLE p11ca_crl_numbers (
        authority_key_identifier TEXT PRIMARY KEY,
        last_number BIGINT NOT NULL,
        last_issued BIGINT NOT NULL
    );";

/// The same for PostgreSQL (certdb/pg/migrations): bytea, timestamptz and jsonb columns.
const V2_POSTGRES: &str = "ALTER TABLE certificates RENAME TO p11ca_v1_certificates;
    ALTER TABLE p11ca_v1_certificates RENAME CONSTRAINT certificates_pkey TO p11ca_v1_certificates_pkey;
    DROP INDEX certificates_not_after;
    DROP INDEX certificates_serial_hex;
    CREATE TABLE certificates (
        serial_number bytea NOT NULL,
        authority_key_identifier bytea NOT NULL,
        ca_label bytea,
        status bytea NOT NULL,
        reason int,
        expiry timestamptz,
        revoked_at timestamptz,
        pem bytea NOT NULL,
        issued_at timestamptz,
        not_before timestamptz,
        metadata jsonb,
        sans jsonb,
        common_name TEXT,
        serial_hex TEXT NOT NULL DEFAULT '',
        subject TEXT NOT NULL DEFAULT '',
        profile TEXT NOT NULL DEFAULT '',
        requester TEXT NOT NULL DEFAULT '',
        auth_key TEXT NOT NULL DEFAULT '',
        p11ca_sans TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (serial_number, authority_key_identifier)
    );
    CREATE TABLE ocsp_responses (
        serial_number bytea NOT NULL,
        authority_key_identifier bytea NOT NULL,
        body bytea NOT NULL,
        expiry timestamptz,
        PRIMARY KEY (serial_number, authority_key_identifier),
        FOREIGN KEY (serial_number, authority_key_identifier)
            REFERENCES certificates (serial_number, authority_key_identifier)
    );
    INSERT INTO certificates (serial_number, authority_key_identifier, ca_label, status, reason,
        expiry, revoked_at, pem, issued_at, not_before, metadata, sans, common_name,
        serial_hex, subject, profile, requester, auth_key, p11ca_sans)
    SELECT convert_to(serial_number, 'UTF8'), convert_to(authority_key_identifier, 'UTF8'),
        convert_to('', 'UTF8'), convert_to('good', 'UTF8'), 0,
        to_timestamp(not_after), '0001-01-01 00:00:00+00', convert_to(pem, 'UTF8'),
        to_timestamp(issued_at), to_timestamp(not_before), 'null'::jsonb,
        COALESCE((SELECT jsonb_agg(v) FROM jsonb_array_elements_text(v1.sans::jsonb) AS v
            WHERE position('@' in v) = 0 AND position(':' in v) = 0 AND v !~ '^[0-9.]*$'),
            'null'::jsonb),
        common_name, serial_hex, subject, profile, requester, auth_key, sans
    FROM p11ca_v1_certificates AS v1;
    DROP TABLE p11ca_v1_certificates;
    CREATE INDEX certificates_expiry ON certificates (expiry);
    CREATE INDEX certificates_serial_hex ON certificates (serial_hex);
    CREATE INDEX certificates_aki ON certificates (authority_key_identifier);
    CREATE INDEX certificates_crl ON certificates
        (authority_key_identifier, status, expiry, serial_hex, serial_number, revoked_at, reason)
        WHERE status = 'revoked'::bytea;
    CREATE TABLE p11ca_crl_numbers (
        authority_key_identifier TEXT PRIMARY KEY,
        last_number BIGINT NOT NULL,
        last_issued BIGINT NOT NULL
    );";

/// Every migration, in order. Never edit an applied one; add a new one.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "certificates table",
        sqlite: V1_SQL,
        postgres: V1_SQL,
    },
    Migration {
        version: 2,
        description: "cfssl certdb schema, ocsp_responses, CRL numbers",
        sqlite: V2_SQLITE,
        postgres: V2_POSTGRES,
    },
    Migration {
        version: 3,
        description: "audit log",
        sqlite: super::audit::MIGRATION_SQL,
        postgres: super::audit::MIGRATION_SQL,
    },
    Migration {
        version: 4,
        description: "serials looked up by the primary key; the serial_hex index goes",
        sqlite: V4_SQL,
        postgres: V4_SQL,
    },
];

/// No query can use the index on `serial_hex` (a hex serial is looked up as its decimal form,
/// through the primary key), and every insert paid for it with a page at a random place.
const V4_SQL: &str = "DROP INDEX IF EXISTS certificates_serial_hex;";

/// The version [`adopt_sql`] brings a cfssl-made store to; later migrations run on it as on
/// any other store.
pub(super) const ADOPTED_AT: i64 = 2;

/// The schema version this binary writes.
pub const CURRENT: i64 = 4;

/// Which SQL dialect [`adopt_sql`] writes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

/// Columns a cfssl-made `certificates` table may lack (cfssl 1.2's schema has no migration
/// 002), with their SQLite and PostgreSQL types.
const ADDED: &[(&str, &str, &str)] = &[
    ("ca_label", "blob", "bytea"),
    ("reason", "int", "int"),
    ("expiry", "timestamp", "timestamptz"),
    ("revoked_at", "timestamp", "timestamptz"),
    ("issued_at", "timestamp", "timestamptz"),
    ("not_before", "timestamp", "timestamptz"),
    ("metadata", "text", "jsonb"),
    ("sans", "text", "jsonb"),
    ("common_name", "text", "TEXT"),
    (
        "serial_hex",
        "TEXT NOT NULL DEFAULT ''",
        "TEXT NOT NULL DEFAULT ''",
    ),
    (
        "subject",
        "TEXT NOT NULL DEFAULT ''",
        "TEXT NOT NULL DEFAULT ''",
    ),
    (
        "profile",
        "TEXT NOT NULL DEFAULT ''",
        "TEXT NOT NULL DEFAULT ''",
    ),
    (
        "requester",
        "TEXT NOT NULL DEFAULT ''",
        "TEXT NOT NULL DEFAULT ''",
    ),
    (
        "auth_key",
        "TEXT NOT NULL DEFAULT ''",
        "TEXT NOT NULL DEFAULT ''",
    ),
    (
        "p11ca_sans",
        "TEXT NOT NULL DEFAULT ''",
        "TEXT NOT NULL DEFAULT ''",
    ),
];

/// The SQL that brings a store cfssl made (with its own schema SQL, so no version table) to
/// version 2: p11ca's columns added, `ocsp_responses` and the CRL numbers created if missing.
/// Rows are not touched: what they lack is read from their PEM.
pub(super) fn adopt_sql(columns: &[String], d: Dialect) -> crate::Result<String> {
    for need in ["serial_number", "authority_key_identifier", "status", "pem"] {
        if !columns.iter().any(|c| c == need) {
            return Err(crate::Error::output(format!(
                "the table \"certificates\" is neither p11ca's nor cfssl's certdb (it has no column {need}); nothing was changed"
            )));
        }
    }
    let (blob, time, revoked) = match d {
        Dialect::Sqlite => ("blob", "timestamp", "'revoked'"),
        Dialect::Postgres => ("bytea", "timestamptz", "'revoked'::bytea"),
    };
    let mut sql = String::new();
    for (name, lite, pg) in ADDED {
        if !columns.iter().any(|c| c == name) {
            let ty = if d == Dialect::Sqlite { lite } else { pg };
            sql.push_str(&format!(
                "ALTER TABLE certificates ADD COLUMN {name} {ty};\n"
            ));
        }
    }
    sql.push_str(&format!(
        "CREATE TABLE IF NOT EXISTS ocsp_responses (
            serial_number {blob} NOT NULL,
            authority_key_identifier {blob} NOT NULL,
            body {blob} NOT NULL,
            expiry {time},
            PRIMARY KEY (serial_number, authority_key_identifier),
            FOREIGN KEY (serial_number, authority_key_identifier)
                REFERENCES certificates (serial_number, authority_key_identifier)
        );
        CREATE INDEX IF NOT EXISTS certificates_expiry ON certificates (expiry);
        CREATE INDEX IF NOT EXISTS certificates_serial_hex ON certificates (serial_hex);
        CREATE INDEX IF NOT EXISTS certificates_aki ON certificates (authority_key_identifier);
        CREATE INDEX IF NOT EXISTS certificates_crl ON certificates
            (authority_key_identifier, status, expiry, serial_hex, serial_number, revoked_at, reason)
            WHERE status = {revoked};
        CREATE TABLE IF NOT EXISTS p11ca_crl_numbers (
            authority_key_identifier TEXT PRIMARY KEY,
            last_number BIGINT NOT NULL,
            last_issued BIGINT NOT NULL
        );"
    ));
    Ok(sql)
}
