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
/// per column, for [`insert_text`]: a `bigint` column's [`Value::Int`]s as `bigint[]`, any
/// other's [`Value::Text`]s as `text[]` (encoded into the arguments, not copied first).
///
/// Errors: [`LedgerError::Corrupt`], naming `table`, when the values do not make whole rows or
/// a value's kind is not its column's.
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
        let added = if *ty == "bigint" {
            let ints = column
                .map(|v| match v {
                    Value::Int(i) => Ok(*i),
                    Value::Text(_) => Err(mismatch(c)),
                })
                .collect::<LedgerResult<Vec<Option<i64>>>>()?;
            args.add(ints)
        } else {
            let texts = column
                .map(|v| match v {
                    Value::Text(t) => Ok(t.as_deref()),
                    Value::Int(_) => Err(mismatch(c)),
                })
                .collect::<LedgerResult<Vec<Option<&str>>>>()?;
            args.add(texts)
        };
        added.map_err(|e| LedgerError::Corrupt(format!("{table} rows: column {c}: {e}")))?;
    }
    Ok(args)
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
    }
}
