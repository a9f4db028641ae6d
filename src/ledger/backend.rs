//! The two databases behind [`super::Ledger`]: SQLite (the embedded default) and PostgreSQL
//! (DESIGN §16).
//!
//! Each ledger operation is written once, in SQL both databases accept (`$n` parameters, which
//! sqlx's SQLite driver reads as `?n`; `ON CONFLICT`, `UPDATE … FROM`, `RETURNING`,
//! `IS NOT DISTINCT FROM`), and compiled twice by [`on_pool!`] / [`on_tx!`]: once against sqlx's
//! SQLite driver, once against its PostgreSQL driver. The few statements that differ choose their
//! text with the `PG` constant those macros define. Rows are decoded once through [`LedgerRow`].
//! The schemas keep the same column names and kinds (TEXT times and decimals, 64-bit integers),
//! so every row decodes the same way from both.
//!
//! Why not sqlx's `Any` driver: it converts every row and argument into its own values (the
//! no-change sweep would pay for it on SQLite) and still needs the dialects apart.

use sqlx::{Postgres, Sqlite, Transaction};

/// The connection pool of one database.
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    /// An SQLite file in WAL mode.
    Sqlite(sqlx::SqlitePool),
    /// A PostgreSQL database.
    Postgres(sqlx::PgPool),
}

/// A transaction on either database.
pub(crate) enum Tx<'c> {
    /// SQLite.
    Sqlite(Transaction<'c, Sqlite>),
    /// PostgreSQL.
    Postgres(Transaction<'c, Postgres>),
}

impl Pool {
    /// Begins a write transaction. On SQLite it is `BEGIN IMMEDIATE`: the write lock is taken
    /// at once, any wait for another connection's commit (up to the busy timeout) happens in
    /// sqlx's worker thread, and the statements `super::sqlite_rows` then steps on the caller's
    /// thread never wait for it (a deferred transaction took the lock at its first write, which
    /// blocked a single-threaded runtime while the connection holding the lock could not commit).
    pub(crate) async fn begin(&self) -> sqlx::Result<Tx<'static>> {
        Ok(match self {
            Pool::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }

    /// Whether this is PostgreSQL.
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Pool::Postgres(_))
    }

    /// Closes the pool.
    pub(crate) async fn close(&self) {
        match self {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

impl Tx<'_> {
    /// Commits.
    pub(crate) async fn commit(self) -> sqlx::Result<()> {
        match self {
            Tx::Sqlite(t) => t.commit().await,
            Tx::Postgres(t) => t.commit().await,
        }
    }
}

/// The `SET` list of an upsert's `ON CONFLICT … DO UPDATE` that gives every one of `columns`
/// (a comma-separated list, as in the INSERT) the new row's value (`c = excluded.c`), except
/// those in `keep` (the key, and what the stored row keeps or the caller sets otherwise). Built
/// from the INSERT's own column list, so that a column added to it is updated too.
pub(crate) fn set_excluded(columns: &str, keep: &[&str]) -> String {
    columns
        .split(',')
        .map(str::trim)
        .filter(|c| !keep.contains(c))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Fails the test unless `set` (an upsert's `ON CONFLICT … DO UPDATE SET` clause) gives every
/// one of `columns` but those in `kept` the new row's value (`c = excluded.c`), and none of
/// `kept` (tests of the upserts built with [`set_excluded`]).
#[cfg(test)]
pub(crate) fn assert_sets_all_but(set: &str, columns: &str, kept: &[&str]) {
    for c in columns.split(',').map(str::trim) {
        let updated = set.contains(&format!(" {c} = excluded.{c}"));
        assert_eq!(updated, !kept.contains(&c), "{c}: {set}");
    }
}

/// Runs `$body` with `$p` bound to the concrete pool (`&SqlitePool` or `&PgPool`); inside,
/// `Db` names the database type and `PG` says whether it is PostgreSQL.
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match &$pool {
            $crate::ledger::backend::Pool::Sqlite($p) => {
                #[allow(dead_code)]
                type Db = sqlx::Sqlite;
                #[allow(dead_code)]
                const PG: bool = false;
                $body
            }
            $crate::ledger::backend::Pool::Postgres($p) => {
                #[allow(dead_code)]
                type Db = sqlx::Postgres;
                #[allow(dead_code)]
                const PG: bool = true;
                $body
            }
        }
    };
}

/// Runs `$body` with `$c` bound to the concrete connection of a [`Tx`] (`&mut SqliteConnection`
/// or `&mut PgConnection`); `Db` and `PG` as in [`on_pool!`].
macro_rules! on_tx {
    ($tx:expr, |$c:ident| $body:expr) => {
        match $tx {
            $crate::ledger::backend::Tx::Sqlite(t) => {
                #[allow(dead_code)]
                type Db = sqlx::Sqlite;
                #[allow(dead_code)]
                const PG: bool = false;
                let $c = &mut **t;
                $body
            }
            $crate::ledger::backend::Tx::Postgres(t) => {
                #[allow(dead_code)]
                type Db = sqlx::Postgres;
                #[allow(dead_code)]
                const PG: bool = true;
                let $c = &mut **t;
                $body
            }
        }
    };
}

pub(crate) use {on_pool, on_tx};

/// A value both drivers decode (`i64`, `String`, `bool`, their `Option`s…).
pub(crate) trait Decodes:
    for<'r> sqlx::Decode<'r, Sqlite>
    + sqlx::Type<Sqlite>
    + for<'r> sqlx::Decode<'r, Postgres>
    + sqlx::Type<Postgres>
{
}

impl<T> Decodes for T where
    T: for<'r> sqlx::Decode<'r, Sqlite>
        + sqlx::Type<Sqlite>
        + for<'r> sqlx::Decode<'r, Postgres>
        + sqlx::Type<Postgres>
{
}

/// A row of either database, read by column name.
pub(crate) trait LedgerRow {
    /// The value of column `col`.
    ///
    /// Errors: no such column, or its value is not a `T`.
    fn col<T: Decodes>(&self, col: &str) -> sqlx::Result<T>;
}

impl LedgerRow for sqlx::sqlite::SqliteRow {
    fn col<T: Decodes>(&self, col: &str) -> sqlx::Result<T> {
        sqlx::Row::try_get(self, col)
    }
}

impl LedgerRow for sqlx::postgres::PgRow {
    fn col<T: Decodes>(&self, col: &str) -> sqlx::Result<T> {
        sqlx::Row::try_get(self, col)
    }
}

/// The PostgreSQL text of a statement written for SQLite with `$n` parameters: `INDEXED BY`
/// hints dropped, `IFNULL(` written `COALESCE(` (the spelling of each schema's expression index
/// `link_event_sequence`, which a query must repeat to use it), `json_array(` written
/// `json_build_array(` (PostgreSQL 15 has no `json_array`), and `col IN (SELECT value FROM json_each($n))` id lists read with
/// `json_array_elements_text` (cast to `bigint` for a column named `…id`) into an array, matched
/// with `col = ANY(…)`. The array form is an index condition beside `account_id = $1` whatever
/// the planner believes of the table's size; the `IN (SELECT …)` form became a hash semi-join
/// over the account's whole index when the table had no statistics yet (a fresh ledger filling
/// in its baseline import): 15.7 ms against 0.55 ms per lookup of 100 in 20,000 links.
pub(crate) fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 32);
    let mut rest = sql;
    while let Some(at) = rest.find("INDEXED BY ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "INDEXED BY ".len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        rest = after[end..].trim_start_matches(' ');
    }
    out.push_str(rest);
    const EACH: &str = " IN (SELECT value FROM json_each($";
    let mut sql = out;
    while let Some(at) = sql.find(EACH) {
        let column = sql[..at]
            .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .next()
            .unwrap_or("");
        let cast = if column.ends_with("id") {
            "::bigint"
        } else {
            ""
        };
        let digits_at = at + EACH.len();
        let digits = sql[digits_at..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(0);
        let n = sql[digits_at..digits_at + digits].to_string();
        let close = digits_at + digits + "))".len();
        sql = format!(
            "{} = ANY(ARRAY(SELECT value{cast} FROM json_array_elements_text(${n}::json) AS value)){}",
            &sql[..at],
            &sql[close..]
        );
    }
    sql.replace("IFNULL(", "COALESCE(")
        .replace("json_array(", "json_build_array(")
}

/// The statement text for the database at hand: `$text` itself on SQLite, its
/// [`to_postgres`] translation on PostgreSQL (translated once per call site). `$pg` is the `PG`
/// constant of [`on_pool!`] / [`on_tx!`].
macro_rules! sql {
    ($pg:expr, $text:expr) => {{
        static POSTGRES_TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let text: &'static str = if $pg {
            POSTGRES_TEXT
                .get_or_init(|| $crate::ledger::backend::to_postgres($text))
                .as_str()
        } else {
            $text
        };
        sqlx::AssertSqlSafe(text)
    }};
}

pub(crate) use sql;

#[cfg(test)]
mod tests {
    use super::to_postgres;

    #[test]
    fn sqlite_statements_are_translated_for_postgres() {
        assert_eq!(
            to_postgres(
                "SELECT a FROM delivery INDEXED BY delivery_pending WHERE id IN \
                 (SELECT value FROM json_each($2)) AND reff_no IN (SELECT value FROM json_each($3))"
            ),
            "SELECT a FROM delivery WHERE id = ANY(ARRAY(SELECT value::bigint FROM \
             json_array_elements_text($2::json) AS value)) AND reff_no = ANY(ARRAY(SELECT value \
             FROM json_array_elements_text($3::json) AS value))"
        );
        assert_eq!(to_postgres("SELECT 1"), "SELECT 1");
        assert_eq!(
            to_postgres("WHERE IFNULL(e2.payment_id, -1) = IFNULL(e.payment_id, -1)"),
            "WHERE COALESCE(e2.payment_id, -1) = COALESCE(e.payment_id, -1)"
        );
        assert_eq!(
            to_postgres("SELECT CAST(json_array(d.id, e.link_id) AS TEXT) AS meta"),
            "SELECT CAST(json_build_array(d.id, e.link_id) AS TEXT) AS meta"
        );
    }
}
