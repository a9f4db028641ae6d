//! Many rows written to SQLite through one prepared single-row statement, their values bound
//! where they lie: the baseline import's write path (`payment_link`, 100,000 rows per account,
//! and `payment`, a history baseline's).
//!
//! Through sqlx, each of a multi-row statement's values became an `Arc` on the caller's thread,
//! was copied again by SQLite (sqlx binds every text `SQLITE_TRANSIENT`) and both were freed on
//! another thread; each statement was also one round trip to the connection's thread. Here the
//! connection is locked out from sqlx's worker ([`sqlx::SqliteConnection::lock_handle`]) and the
//! rows are bound `SQLITE_STATIC` and stepped one by one on the calling thread, inside the
//! caller's transaction. `cargo bench --bench sync`, a baseline import of 10,000 links under
//! callgrind: 1,828.8 M → 1,677.4–1,678.2 M instructions (−8.3%; binding `SQLITE_TRANSIENT`
//! instead gave 1,705.3 M, so most of the gain is sqlx's per-value and per-statement work, not
//! the copy); a history baseline (30,000 payments more) 8,434.8–8,440.4 M → 7,952.9 M, its
//! payments' texts borrowed from the pass's rows, not copied.
//!
//! `libsqlite3-sys` is the crate sqlx's SQLite driver links (the same major, so Cargo builds one
//! SQLite; a sqlx that moves to another major fails the build with two `links = "sqlite3"`
//! until this dependency follows it, as sqlx's docs on `as_raw_handle` ask).

use std::borrow::Cow;
use std::ffi::{CStr, c_char, c_int};
use std::ptr::NonNull;

use libsqlite3_sys as ffi;

use super::{LedgerError, LedgerResult};

/// One column value of a row to write, typed: bound here on SQLite, and bound through sqlx on
/// PostgreSQL by the same callers (which declares each parameter's type, so a NULL keeps its
/// column's). A text is owned when it was made for the row (a link's encoded columns) and
/// borrowed when the caller still holds it (a payment's `raw_json`): either is bound where it
/// lies, never copied.
#[derive(Debug)]
pub(super) enum Value<'a> {
    /// An INTEGER column (or NULL).
    Int(Option<i64>),
    /// A TEXT column (or NULL).
    Text(Option<Cow<'a, str>>),
}

impl<'a> Value<'a> {
    /// A TEXT column's value, owned (`String`) or borrowed (`&str`), or NULL.
    pub(super) fn text(t: Option<impl Into<Cow<'a, str>>>) -> Self {
        Value::Text(t.map(Into::into))
    }
}

/// `INSERT INTO {table} ({columns}) VALUES (?, …) {tail}`: one row of `width` anonymous
/// parameters, which [`execute_rows`] binds by position (when SQLite's statements went through
/// sqlx, which asks for every parameter's name at every execution, thousands of `$n` made the
/// baseline import 3-4 × slower), `tail` what follows (an `ON CONFLICT` clause).
pub(super) fn insert_text(table: &str, columns: &str, width: usize, tail: &str) -> String {
    format!(
        "INSERT INTO {table} ({columns}) VALUES ({}) {tail}",
        vec!["?"; width].join(", ")
    )
}

/// Runs `sql`, a statement of `columns` anonymous (`?`) parameters, once per row of `sets`
/// (each set `columns` values per row, in parameter order, the sets in order; a set that does
/// not make whole rows is refused before anything runs) on `conn`, inside whatever transaction
/// it has open, which must hold SQLite's write lock (`BEGIN IMMEDIATE`,
/// `backend::Pool::begin`): the rows are stepped on the calling thread, where a wait for another
/// connection's lock would hold up the runtime that connection needs to commit. The statement
/// is compiled once per call.
///
/// On a multi-threaded runtime the statements run under [`tokio::task::block_in_place`], so the
/// worker's other tasks move to another thread meanwhile.
///
/// Errors: [`LedgerError::Sqlite`] with `SQLITE_MISUSE` when a set does not make whole rows,
/// `sql` holds no statement, its parameters are not `columns`, or the connection holds no write
/// lock (nothing is run); with
/// SQLite's code and message when the statement does not compile, a value is refused (e.g. a
/// text over SQLite's length limit) or a row fails (a constraint, I/O): the rows before it are
/// written, and the caller's transaction decides what happens to them. [`LedgerError::Sql`]
/// when sqlx's worker thread is gone.
pub(super) async fn execute_rows(
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
    columns: usize,
    sets: &[&[Value<'_>]],
) -> LedgerResult<()> {
    if let Some(set) = sets
        .iter()
        .find(|set| columns == 0 || !set.len().is_multiple_of(columns))
    {
        return Err(misuse(format!(
            "{} values do not make rows of {columns}",
            set.len()
        )));
    }
    if sets.iter().all(|set| set.is_empty()) {
        return Ok(());
    }
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle();
    let run = || {
        run_rows(
            db,
            sql,
            columns,
            sets.iter().flat_map(|set| set.chunks(columns)),
        )
    };
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(run),
        _ => run(),
    }
}

/// A call that breaks [`execute_rows`]'s contract, as SQLite's `SQLITE_MISUSE`.
fn misuse(message: String) -> LedgerError {
    LedgerError::Sqlite {
        code: ffi::SQLITE_MISUSE,
        message,
    }
}

/// A prepared statement, finalized when dropped.
struct Statement(NonNull<ffi::sqlite3_stmt>);

impl Drop for Statement {
    fn drop(&mut self) {
        // SAFETY: the statement was prepared on a connection that stays locked for longer than
        // this value lives (`execute_rows`), and is finalized once.
        unsafe { ffi::sqlite3_finalize(self.0.as_ptr()) };
    }
}

/// The body of [`execute_rows`]: `db` must be locked out from sqlx's worker for the whole call,
/// and each of `rows` holds `columns` values.
fn run_rows<'v>(
    db: NonNull<ffi::sqlite3>,
    sql: &str,
    columns: usize,
    rows: impl Iterator<Item = &'v [Value<'v>]>,
) -> LedgerResult<()> {
    let db = db.as_ptr();
    // SAFETY: `db` is a live connection; a NULL schema asks about all of them.
    if unsafe { ffi::sqlite3_txn_state(db, std::ptr::null()) } != ffi::SQLITE_TXN_WRITE {
        return Err(misuse(
            "rows written outside a write transaction (BEGIN IMMEDIATE)".into(),
        ));
    }
    let fail = || {
        // SAFETY: `db` is a live connection; both calls return values SQLite owns, the message
        // a NUL-terminated string valid until the next call on the connection (copied at once).
        let (code, message) = unsafe {
            let code = ffi::sqlite3_extended_errcode(db);
            let message = CStr::from_ptr(ffi::sqlite3_errmsg(db)).to_string_lossy();
            (code, message.into_owned())
        };
        LedgerError::Sqlite { code, message }
    };
    let sql_len = c_int::try_from(sql.len()).map_err(|_| LedgerError::Sqlite {
        code: ffi::SQLITE_TOOBIG,
        message: "statement too long".into(),
    })?;
    let mut raw = std::ptr::null_mut();
    // SAFETY: `sql` is valid for `sql_len` bytes (no NUL needed with an explicit length); `raw`
    // receives the statement or NULL.
    let rc = unsafe {
        ffi::sqlite3_prepare_v3(
            db,
            sql.as_ptr().cast::<c_char>(),
            sql_len,
            0,
            &mut raw,
            std::ptr::null_mut(),
        )
    };
    if rc != ffi::SQLITE_OK {
        return Err(fail());
    }
    let Some(stmt) = NonNull::new(raw) else {
        return Err(misuse(format!("no statement in {sql:?}")));
    };
    let stmt = Statement(stmt);
    let s = stmt.0.as_ptr();
    // SAFETY: `s` is live.
    let params = unsafe { ffi::sqlite3_bind_parameter_count(s) };
    if usize::try_from(params).ok() != Some(columns) {
        return Err(misuse(format!(
            "the statement takes {params} parameters, the rows have {columns} values"
        )));
    }
    for row in rows {
        for (i, value) in (1..).zip(row) {
            // SAFETY: `s` is live; a text is bound `SQLITE_STATIC`: it stays where it is, in
            // the caller's sets, until `stmt` is finalized (every parameter is bound again
            // before each step, and the sets outlive `stmt`).
            let rc = unsafe {
                match value {
                    Value::Int(Some(n)) => ffi::sqlite3_bind_int64(s, i, *n),
                    Value::Int(None) | Value::Text(None) => ffi::sqlite3_bind_null(s, i),
                    Value::Text(Some(t)) => ffi::sqlite3_bind_text64(
                        s,
                        i,
                        t.as_ptr().cast::<c_char>(),
                        t.len() as u64,
                        ffi::SQLITE_STATIC(),
                        ffi::SQLITE_UTF8 as u8,
                    ),
                }
            };
            if rc != ffi::SQLITE_OK {
                return Err(fail());
            }
        }
        // SAFETY: `s` is live and every parameter is bound.
        let rc = unsafe { ffi::sqlite3_step(s) };
        // A statement prepared with `_v3` reports its error from the step itself: read it before
        // the reset, which only readies the next row.
        let failed = (rc != ffi::SQLITE_DONE).then(fail);
        // SAFETY: as above.
        unsafe { ffi::sqlite3_reset(s) };
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, SqliteConnection};

    use super::*;

    const INSERT: &str = "INSERT INTO t (n, s) VALUES (?, ?)";

    async fn conn() -> SqliteConnection {
        let mut c = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER, s TEXT NOT NULL) STRICT")
            .execute(&mut c)
            .await
            .unwrap();
        c
    }

    fn row(n: Option<i64>, s: Option<&'static str>) -> [Value<'static>; 2] {
        [Value::Int(n), Value::text(s)]
    }

    async fn rows(c: &mut SqliteConnection) -> Vec<(Option<i64>, String)> {
        sqlx::query_as("SELECT n, s FROM t ORDER BY rowid")
            .fetch_all(c)
            .await
            .unwrap()
    }

    async fn written_by(c: &mut SqliteConnection, sets: &[&[Value<'_>]]) -> LedgerResult<()> {
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *c)
            .await
            .unwrap();
        let r = execute_rows(c, INSERT, 2, sets).await;
        let end = if r.is_ok() { "COMMIT" } else { "ROLLBACK" };
        sqlx::query(end).execute(&mut *c).await.unwrap();
        r
    }

    #[tokio::test]
    async fn every_set_s_rows_are_written_in_order_with_their_exact_values() {
        let mut c = conn().await;
        let a: Vec<Value> = [row(Some(1), Some("Rp 20.000,00")), row(None, Some(""))]
            .into_iter()
            .flatten()
            .collect();
        // Owned, as a link's encoded columns are; the rows above borrow theirs.
        let b = vec![
            Value::Int(Some(i64::MIN)),
            Value::text(Some(String::from("nul \0 inside, é"))),
        ];
        written_by(&mut c, &[&a, &[], &b]).await.unwrap();
        assert_eq!(
            rows(&mut c).await,
            vec![
                (Some(1), "Rp 20.000,00".to_owned()),
                (None, String::new()),
                (Some(i64::MIN), "nul \0 inside, é".to_owned()),
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_multi_threaded_runtime_writes_the_same() {
        let mut c = conn().await;
        let a: Vec<Value> = row(Some(7), Some("x")).into();
        written_by(&mut c, &[&a]).await.unwrap();
        assert_eq!(rows(&mut c).await, vec![(Some(7), "x".to_owned())]);
    }

    #[tokio::test]
    async fn a_failing_row_names_sqlite_s_reason_and_its_transaction_keeps_nothing() {
        let mut c = conn().await;
        let a: Vec<Value> = [row(Some(1), Some("ok")), row(Some(2), None)]
            .into_iter()
            .flatten()
            .collect();
        let e = written_by(&mut c, &[&a]).await.unwrap_err();
        let LedgerError::Sqlite { code, message } = e else {
            panic!("{e:?}")
        };
        assert_eq!(code, ffi::SQLITE_CONSTRAINT_NOTNULL, "{message}");
        assert!(message.contains("t.s"), "{message}");
        assert!(rows(&mut c).await.is_empty());
    }

    #[tokio::test]
    async fn misuse_is_refused_before_anything_runs() {
        let mut c = conn().await;
        let one: Vec<Value> = row(Some(1), Some("a")).into();
        // Outside a write transaction: autocommit, then a deferred transaction that only read.
        let e = execute_rows(&mut c, INSERT, 2, &[&one]).await.unwrap_err();
        assert!(
            matches!(
                e,
                LedgerError::Sqlite {
                    code: ffi::SQLITE_MISUSE,
                    ..
                }
            ),
            "{e:?}"
        );
        sqlx::query("BEGIN").execute(&mut c).await.unwrap();
        sqlx::query("SELECT count(*) FROM t")
            .execute(&mut c)
            .await
            .unwrap();
        let e = execute_rows(&mut c, INSERT, 2, &[&one]).await.unwrap_err();
        assert!(e.to_string().contains("BEGIN IMMEDIATE"), "{e}");
        sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
        // Three values are not rows of two.
        let odd = [Value::Int(Some(1)), Value::Text(None), Value::Int(None)];
        let e = written_by(&mut c, &[&one, &odd]).await.unwrap_err();
        assert!(
            e.to_string().contains("3 values do not make rows of 2"),
            "{e}"
        );
        // No statement at all; then one that does not compile.
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut c)
            .await
            .unwrap();
        let empty = execute_rows(&mut c, "  ", 2, &[&one]).await.unwrap_err();
        // Rows of three for a statement of two parameters.
        let wide = execute_rows(&mut c, INSERT, 3, &[&odd]).await.unwrap_err();
        let bad = execute_rows(&mut c, "INSERT INTO nowhere VALUES (?, ?)", 2, &[&one]).await;
        sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
        assert!(
            matches!(
                empty,
                LedgerError::Sqlite {
                    code: ffi::SQLITE_MISUSE,
                    ..
                }
            ),
            "{empty:?}"
        );
        assert!(
            wide.to_string()
                .contains("the statement takes 2 parameters, the rows have 3 values"),
            "{wide}"
        );
        let bad = bad.unwrap_err().to_string();
        assert!(bad.contains("no such table: nowhere"), "{bad}");
        assert!(rows(&mut c).await.is_empty());
    }
}
