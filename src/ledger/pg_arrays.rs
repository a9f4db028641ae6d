//! PostgreSQL's multi-row writes as one statement whatever the row count: one parameter per
//! column, an array of that column's values (`INSERT … SELECT * FROM unnest($1::text[], …)`).
//! The ledger's connections plan every statement for its own arguments (`plan_cache_mode`,
//! `Ledger::open_postgres`): the link upserts of a baseline import of 100,000 links, as
//! multi-row `VALUES` of 25 parameters per row, took 0.92 ms of the server's time each to plan
//! (774 statements, 712 ms), as arrays 0.52 ms (535 statements, 278 ms; docs/PERFORMANCE.md,
//! eleventh session).

use sqlx::Arguments;
use sqlx::postgres::PgArguments;

use super::sqlite_rows::Value;
use super::{LedgerError, LedgerResult};

/// `INSERT INTO {table} ({columns}) SELECT * FROM unnest($1::{types[0]}[], …) {tail}`: one
/// array parameter per column, `types` their PostgreSQL types in `columns`' order (`text` or
/// `bigint`), `tail` what follows (an `ON CONFLICT` clause).
pub(super) fn insert_text(table: &str, columns: &str, types: &[&str], tail: &str) -> String {
    let arrays: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", i + 1))
        .collect();
    format!(
        "INSERT INTO {table} ({columns}) SELECT * FROM unnest({}) {tail}",
        arrays.join(", ")
    )
}

/// The rows of a multi-row upsert, given by their keys in order, cut into runs (index ranges, in
/// order, covering every row) in which no key appears twice: PostgreSQL refuses an upsert that
/// touches a row twice ("ON CONFLICT DO UPDATE command cannot affect row a second time"). A
/// repeat starts the next run, so the later row is written after the earlier, as SQLite writes
/// them. Usually one run; none for no rows.
pub(super) fn distinct_runs<K: Eq + std::hash::Hash>(
    keys: impl IntoIterator<Item = K>,
) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let (mut start, mut end) = (0, 0);
    for (i, k) in keys.into_iter().enumerate() {
        if seen.contains(&k) {
            runs.push(start..i);
            start = i;
            seen.clear();
        }
        seen.insert(k);
        end = i + 1;
    }
    if end > start {
        runs.push(start..end);
    }
    runs
}

/// Runs `sql`, an [`insert_text`] into `table` (named in errors) of `types`' columns, on
/// `conn`, with `values` bound as its column arrays ([`column_arrays`]).
///
/// Errors: as [`column_arrays`] (nothing run), or the statement fails.
pub(super) async fn execute(
    conn: &mut sqlx::PgConnection,
    sql: &'static str,
    table: &str,
    values: &[Value<'_>],
    types: &[&str],
) -> LedgerResult<()> {
    let args = column_arrays(table, values, types)?;
    sqlx::query_with(sql, args).execute(conn).await?;
    Ok(())
}

/// `values` (whole rows of `types.len()` columns of `table`, row after row) bound as one array
/// per column, for [`insert_text`]: a `bigint` column's [`Value::Int`]s as `bigint[]`, a
/// `text` one's [`Value::Text`]s as `text[]` (encoded into the arguments, not copied first).
///
/// Errors: [`LedgerError::Corrupt`], naming `table`, when the values do not make whole rows, a
/// type is neither `bigint` nor `text`, or a value's kind is not its column's.
fn column_arrays(table: &str, values: &[Value<'_>], types: &[&str]) -> LedgerResult<PgArguments> {
    let width = types.len();
    if width == 0 || !values.len().is_multiple_of(width) {
        return Err(LedgerError::Corrupt(format!(
            "{table} rows: {} values do not make rows of {width} columns",
            values.len()
        )));
    }
    let mismatch = |c: usize| {
        LedgerError::Corrupt(format!(
            "{table} rows: column {c} holds a value of another kind"
        ))
    };
    let mut args = PgArguments::default();
    for (c, ty) in types.iter().enumerate() {
        let column = values.iter().skip(c).step_by(width);
        let added = match *ty {
            "bigint" => {
                let ints = column
                    .map(|v| match v {
                        Value::Int(i) => Ok(*i),
                        Value::Text(_) => Err(mismatch(c)),
                    })
                    .collect::<LedgerResult<Vec<Option<i64>>>>()?;
                args.add(ints)
            }
            "text" => {
                let texts = column
                    .map(|v| match v {
                        Value::Text(t) => Ok(t.as_deref()),
                        Value::Int(_) => Err(mismatch(c)),
                    })
                    .collect::<LedgerResult<Vec<Option<&str>>>>()?;
                args.add(texts)
            }
            other => {
                return Err(LedgerError::Corrupt(format!(
                    "{table} rows: column {c} is of type {other}, which is bound neither as bigint[] nor as text[]"
                )));
            }
        };
        added.map_err(|e| LedgerError::Corrupt(format!("{table} rows: column {c}: {e}")))?;
    }
    Ok(args)
}

/// Fails the test unless `values` (whole rows of `types.len()` columns) bind as
/// [`column_arrays`] binds them: each value of its column's kind (tests of the modules whose
/// rows go through here, their `PG_TYPES` against the order they push values in).
#[cfg(test)]
pub(super) fn assert_binds(values: &[Value<'_>], types: &[&str]) {
    if let Err(e) = column_arrays("test", values, types) {
        panic!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_one_typed_array_per_column_and_keeps_the_tail() {
        assert_eq!(
            insert_text(
                "t",
                "a, b, c",
                &["text", "bigint", "text"],
                "ON CONFLICT DO NOTHING"
            ),
            "INSERT INTO t (a, b, c) SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]) \
             ON CONFLICT DO NOTHING"
        );
    }

    #[test]
    fn a_repeated_key_starts_a_new_run_and_other_keys_share_one() {
        assert_eq!(distinct_runs([1, 2, 3, 2, 4, 1, 4]), vec![0..3, 3..6, 6..7]);
        assert_eq!(distinct_runs(1..=5), vec![0..5]);
        assert!(distinct_runs(Vec::<i64>::new()).is_empty());
    }

    #[test]
    fn values_of_the_wrong_kind_or_not_whole_rows_are_refused() {
        let types = ["bigint", "text"];
        let row = |i: i64| [Value::Int(Some(i)), Value::text(Some("x"))];
        let ok: Vec<Value> = row(1).into_iter().chain(row(2)).collect();
        assert!(column_arrays("t", &ok, &types).is_ok());
        let short = &ok[..3];
        let e = column_arrays("t", short, &types).expect_err("3 values, rows of 2");
        assert!(
            e.to_string()
                .contains("t rows: 3 values do not make rows of 2"),
            "{e}"
        );
        let swapped = [Value::text(Some("x")), Value::Int(Some(1))];
        let e = column_arrays("t", &swapped, &types).expect_err("kinds swapped");
        assert!(e.to_string().contains("t rows: column 0 holds"), "{e}");
        let e = column_arrays("t", &ok, &["bigint", "numeric"]).expect_err("numeric");
        assert!(e.to_string().contains("column 1 is of type numeric"), "{e}");
    }
}
