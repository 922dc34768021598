//! cfssl's `ocsp_responses` table: pre-signed OCSP responses, one per (serial, AKI), written
//! by `ocsprefresh` (p11ca's or cfssl's) and read by the responders (p11ca's or cfssl's).
//! The body is the response's raw DER (cfssl writes it as a Go string: TEXT in SQLite, which
//! may hold NULs; p11ca writes a BLOB, which cfssl reads the same); `expiry` is when the row
//! stops being served, in the certdb's time form.

use rusqlite::types::ValueRef;

use super::{Store, gotime};
use crate::error::{Error, Result};

/// One stored response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    /// Decimal serial.
    pub serial: String,
    /// Lower-case hex AKI.
    pub aki: String,
    /// The OCSPResponse, DER.
    pub body: Vec<u8>,
}

fn sq(what: &str, e: rusqlite::Error) -> Error {
    Error::output(format!("{what}: {e}"))
}

fn pgerr(what: &str, e: postgres::Error) -> Error {
    let detail = e
        .as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string());
    Error::output(format!("{what}: {detail}"))
}

/// Text or blob, as bytes (cfssl's TEXT bodies may not be UTF-8).
fn bytes(v: ValueRef<'_>) -> rusqlite::Result<Vec<u8>> {
    match v {
        ValueRef::Text(b) | ValueRef::Blob(b) => Ok(b.to_vec()),
        other => Err(rusqlite::Error::InvalidColumnType(
            0,
            "body".into(),
            other.data_type(),
        )),
    }
}

impl Store {
    /// Write `responses` (each with the Unix time it stops being served) in one transaction,
    /// replacing the ones stored for the same certificates.
    pub fn upsert_ocsp(&mut self, responses: &[(StoredResponse, i64)]) -> Result<()> {
        match self {
            Self::Sqlite(s) => {
                let tx = s
                    .conn_mut()
                    .transaction()
                    .map_err(|e| sq("cannot start a transaction", e))?;
                sqlite_upsert(&tx, responses)?;
                tx.commit().map_err(|e| sq("cannot commit", e))
            }
            Self::Postgres(p) => {
                let mut tx = p
                    .client_mut()
                    .transaction()
                    .map_err(|e| pgerr("cannot start a transaction", e))?;
                pg_upsert(&mut tx, responses)?;
                tx.commit().map_err(|e| pgerr("cannot commit", e))
            }
        }
    }

    /// The stored response for (serial, AKI), if any.
    pub fn ocsp_response(&mut self, serial: &str, aki: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Self::Sqlite(s) => {
                use rusqlite::OptionalExtension;
                s.conn_mut()
                    .prepare_cached(
                        "SELECT body FROM ocsp_responses WHERE serial_number = ?1 AND authority_key_identifier = ?2",
                    )
                    .and_then(|mut st| st.query_row([serial, aki], |r| bytes(r.get_ref(0)?)).optional())
                    .map_err(|e| sq("cannot read the OCSP response", e))
            }
            Self::Postgres(p) => Ok(p
                .client_mut()
                .query_opt(
                    "SELECT body FROM ocsp_responses WHERE serial_number = convert_to($1, 'UTF8') AND authority_key_identifier = convert_to($2, 'UTF8')",
                    &[&serial, &aki],
                )
                .map_err(|e| pgerr("cannot read the OCSP response", e))?
                .map(|r| r.get(0))),
        }
    }
}

/// [`Store::upsert_ocsp`]'s statements inside the SQLite transaction `tx`.
pub(super) fn sqlite_upsert(
    tx: &rusqlite::Transaction,
    responses: &[(StoredResponse, i64)],
) -> Result<()> {
    let mut st = tx
        .prepare_cached(
            "INSERT INTO ocsp_responses (serial_number, authority_key_identifier, body, expiry)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (serial_number, authority_key_identifier)
             DO UPDATE SET body = excluded.body, expiry = excluded.expiry",
        )
        .map_err(|e| sq("cannot prepare the OCSP upsert", e))?;
    for (r, expiry) in responses {
        st.execute(rusqlite::params![
            r.serial,
            r.aki,
            r.body,
            gotime::format(*expiry)
        ])
        .map_err(|e| {
            sq(
                &format!("cannot store the response for serial {}", r.serial),
                e,
            )
        })?;
    }
    Ok(())
}

/// [`Store::upsert_ocsp`]'s statements inside the PostgreSQL transaction `tx`.
pub(super) fn pg_upsert(
    tx: &mut postgres::Transaction,
    responses: &[(StoredResponse, i64)],
) -> Result<()> {
    let st = tx
        .prepare(
            "INSERT INTO ocsp_responses (serial_number, authority_key_identifier, body, expiry)
             VALUES (convert_to($1, 'UTF8'), convert_to($2, 'UTF8'), $3, to_timestamp($4::BIGINT))
             ON CONFLICT (serial_number, authority_key_identifier)
             DO UPDATE SET body = excluded.body, expiry = excluded.expiry",
        )
        .map_err(|e| pgerr("cannot prepare the OCSP upsert", e))?;
    for (r, expiry) in responses {
        tx.execute(&st, &[&r.serial, &r.aki, &r.body, expiry])
            .map_err(|e| {
                pgerr(
                    &format!("cannot store the response for serial {}", r.serial),
                    e,
                )
            })?;
    }
    Ok(())
}
