//! The ledger file: its permissions and owner, its page size, the options its SQLite is built with,
//! and migrations of files an earlier version made.

use super::*;

/// A one-connection pool on a new file at `path` with the settings of an earlier version:
/// SQLite's default 4 KB pages, and its rollback journal unless `journal` says otherwise.
async fn earlier_version_pool(
    path: &Path,
    journal: Option<sqlx::sqlite::SqliteJournalMode>,
) -> sqlx::SqlitePool {
    let mut opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .page_size(4096)
        .foreign_keys(true);
    if let Some(j) = journal {
        opts = opts.journal_mode(j);
    }
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .expect("pool")
}

/// A ledger file in a new directory with the schema of an earlier version: the migrations
/// numbered below `before` (e.g. "0004" for version 3), on [`earlier_version_pool`] with
/// `journal`. Returns the directory (to remove), the file and the pool.
async fn earlier_version_ledger(
    before: &str,
    journal: Option<sqlx::sqlite::SqliteJournalMode>,
) -> (std::path::PathBuf, std::path::PathBuf, sqlx::SqlitePool) {
    let dir = std::env::temp_dir().join(format!("singapay-ledger-{before}-{}", ulid::Ulid::new()));
    let old = dir.join("migrations");
    std::fs::create_dir_all(&old).expect("dir");
    for f in std::fs::read_dir("migrations/sqlite").expect("migrations") {
        let f = f.expect("entry").path();
        let name = f.file_name().expect("name").to_string_lossy().to_string();
        if name.as_str() < before {
            std::fs::copy(&f, old.join(&name)).expect("copy");
        }
    }
    let path = dir.join("ledger.db");
    let pool = earlier_version_pool(&path, journal).await;
    sqlx::migrate::Migrator::new(old.as_path())
        .await
        .expect("earlier migrator")
        .run(&pool)
        .await
        .expect("earlier schema");
    (dir, path, pool)
}

/// The page size of `l`'s file, bytes.
async fn page_size(l: &Ledger) -> i64 {
    sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(l.sqlite_pool())
        .await
        .expect("page_size")
}

#[tokio::test]
async fn a_new_ledger_gets_16_kb_pages_and_a_4_kb_ledger_keeps_its_own_and_its_rows() {
    use sqlx::sqlite::SqliteJournalMode;
    let f = Fixture::new().await;
    assert_eq!(page_size(&f.l).await, 16_384);
    f.close().await;

    // A ledger as an earlier version made it: SQLite's default 4 KB pages, WAL, rows in it.
    let dir = std::env::temp_dir().join(format!("singapay-ledger-4k-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("ledger.db");
    let pool = earlier_version_pool(&path, Some(SqliteJournalMode::Wal)).await;
    MIGRATOR.run(&pool).await.expect("schema");
    pool.close().await;
    let account = AccountId::parse(ACCOUNT).expect("account");
    let l = Ledger::open(&path).await.expect("open");
    assert_eq!(page_size(&l).await, 4096);
    let run = l
        .start_run(&account, Trigger::Manual, true, Utc::now())
        .await
        .expect("run");
    l.commit_pages(run, vec![page(1..=300)])
        .await
        .expect("commit");
    l.close().await;

    let l = Ledger::open(&path).await.expect("reopen");
    assert_eq!(page_size(&l).await, 4096);
    let all: Vec<LinkId> = (1..=300).map(LinkId).collect();
    let states = l.load_link_states(&account, &all).await.expect("states");
    assert_eq!(states.len(), 300);
    assert_eq!(states[&LinkId(299)].raw_hash, write(299).raw_hash);
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(l.sqlite_pool())
        .await
        .expect("integrity");
    assert_eq!(integrity, "ok");
    l.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_ledger_file_is_private_and_another_users_file_is_refused() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let f = Fixture::new().await;
    let path = f.dir.join("ledger.db");
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let mode = std::fs::metadata(&p).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "ledger.db{suffix} is mode {mode:o}");
    }
    let other = f.dir.join("other.db");
    std::fs::write(&other, b"").expect("file");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&other, Some(12345), None).expect("chown");
        let err = Ledger::open(&other)
            .await
            .expect_err("another user's ledger");
        assert!(err.to_string().contains("belongs to uid 12345"), "{err}");
        assert_eq!(std::fs::metadata(&other).expect("file").uid(), 12345);
    }
    f.close().await;
}

/// A ledger made by version 3 (migrations 0001-0003) with events, deliveries and attempts opens
/// under version 4: every event keeps its id, commit order and deliveries (`payment_id` NULL),
/// the link sequence stays unique, and payments can be recorded.
#[tokio::test]
async fn a_version_3_ledger_with_events_migrates_to_payments() {
    use sqlx::Row;
    let (dir, path, pool) = earlier_version_ledger("0004", None).await;
    sqlx::query(
        "INSERT INTO sync_run (account_id, trigger, started_at, baseline) \
         VALUES (?1, 'manual', '2026-11-21T03:04:05.000000Z', 0)",
    )
    .bind(ACCOUNT)
    .execute(&pool)
    .await
    .expect("run");
    for (i, (link, seq)) in [(103, 1), (103, 2), (78, 1)].into_iter().enumerate() {
        let id = format!("evt_0{i}");
        sqlx::query(
            "INSERT INTO link_event (id, account_id, link_id, type, sequence, run_id, created_at, \
             envelope) VALUES (?1, ?2, ?3, 'payment_link.paid', ?4, 1, '2026-11-21T03:04:05Z', ?5)",
        )
        .bind(&id)
        .bind(ACCOUNT)
        .bind(link)
        .bind(seq)
        .bind(format!(r#"{{"id":"{id}"}}"#))
        .execute(&pool)
        .await
        .expect("event");
        sqlx::query(
            "INSERT INTO delivery (event_id, subscriber, channel, state, attempts, created_at) \
             VALUES (?1, 'erp', 'webhook', 'delivered', 1, '2026-11-21T03:04:05Z')",
        )
        .bind(&id)
        .execute(&pool)
        .await
        .expect("delivery");
    }
    sqlx::query(
        "INSERT INTO delivery_attempt (delivery_id, attempted_at, duration_ms, status) \
         VALUES (1, '2026-11-21T03:04:06Z', 12, 200)",
    )
    .execute(&pool)
    .await
    .expect("attempt");
    // Retention pruned an event with a higher seq: its number is never reused.
    sqlx::query("UPDATE sqlite_sequence SET seq = 9 WHERE name = 'link_event'")
        .execute(&pool)
        .await
        .expect("counter");
    pool.close().await;

    let l = Ledger::open(&path).await.expect("migrates to version 4");
    // A rollback-journal file switched to WAL at open keeps its 4 KB pages too.
    assert_eq!(page_size(&l).await, 4096);
    let rows = sqlx::query(
        "SELECT e.seq, e.id, e.link_id, e.payment_id, e.sequence, d.id AS delivery \
         FROM link_event e JOIN delivery d ON d.event_id = e.id ORDER BY e.seq",
    )
    .fetch_all(l.sqlite_pool())
    .await
    .expect("events");
    let got: Vec<(i64, String, i64, Option<i64>, i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    assert_eq!(
        got,
        [
            (1, "evt_00".into(), 103, None, 1, 1),
            (2, "evt_01".into(), 103, None, 2, 2),
            (3, "evt_02".into(), 78, None, 1, 3),
        ]
    );
    let fk: Vec<sqlx::sqlite::SqliteRow> = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(l.sqlite_pool())
        .await
        .expect("fk check");
    assert!(fk.is_empty(), "no dangling reference after the rebuild");
    // A link's sequence stays unique; a payment's sequence is its own.
    let dup = sqlx::query(
        "INSERT INTO link_event (id, account_id, link_id, type, sequence, created_at, envelope) \
         VALUES ('evt_dup', ?1, 103, 'payment_link.paid', 2, 'x', '{}')",
    )
    .bind(ACCOUNT)
    .execute(l.sqlite_pool())
    .await;
    assert!(dup.is_err(), "(account, link, sequence) is still unique");
    sqlx::query(
        "INSERT INTO link_event (id, account_id, link_id, payment_id, type, sequence, created_at, \
         envelope) VALUES ('evt_pay', ?1, 103, 129, 'payment.paid', 2, 'x', '{}')",
    )
    .bind(ACCOUNT)
    .execute(l.sqlite_pool())
    .await
    .expect("a payment's sequence 2 beside the link's");
    let seq: i64 = sqlx::query("SELECT seq FROM link_event WHERE id = 'evt_pay'")
        .fetch_one(l.sqlite_pool())
        .await
        .expect("seq")
        .get(0);
    assert_eq!(seq, 10, "the AUTOINCREMENT counter survived the rebuild");
    let b = l
        .baselines(&AccountId::parse(ACCOUNT).expect("account"))
        .await
        .expect("baselines");
    assert!(
        !b.history,
        "an upgraded ledger has not read the history yet"
    );
    l.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_wal_is_cut_back_to_its_limit_after_one_large_transaction() {
    // One transaction of 80 MiB (a migration rewriting a table writes that way): the WAL grows
    // past the limit; once checkpointed, the next write starts it over and cuts the file back.
    let f = Fixture::new().await;
    let wal = f.dir.join("ledger.db-wal");
    let pool = f.l.sqlite_pool();
    let limit: i64 = sqlx::query_scalar("PRAGMA journal_size_limit")
        .fetch_one(pool)
        .await
        .expect("limit");
    assert_eq!(limit, 64 * 1024 * 1024);
    sqlx::query("CREATE TABLE scratch (b BLOB)")
        .execute(pool)
        .await
        .expect("table");
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 80) \
         INSERT INTO scratch SELECT zeroblob(1048576) FROM n",
    )
    .execute(pool)
    .await
    .expect("80 MiB");
    let grown = std::fs::metadata(&wal).expect("wal").len();
    assert!(grown > 80 * 1024 * 1024, "{grown}");
    let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await
        .expect("checkpoint");
    assert_eq!(busy, 0);
    sqlx::query("DELETE FROM scratch")
        .execute(pool)
        .await
        .expect("next write");
    let cut = std::fs::metadata(&wal).expect("wal").len();
    assert_eq!(cut, 64 * 1024 * 1024);
    f.close().await;
}

/// A ledger made by version 7 with deliveries in every state opens under version 8: each
/// delivery that is not delivered gets its event's ordering key (a delivered one keeps NULLs),
/// and the due query holds a link's later event behind an earlier one retrying, through those
/// keys, while a payment's event (another key) goes.
#[tokio::test]
async fn a_version_7_ledger_gets_each_deliverys_ordering_key_and_keeps_its_order() {
    use sqlx::Row;
    let (dir, path, pool) =
        earlier_version_ledger("0008", Some(sqlx::sqlite::SqliteJournalMode::Wal)).await;
    // Link 103: event 1 delivered, 2 retrying in an hour, 3 due; its payment 129: event 4 due;
    // link 78: event 1 dead.
    let later = "2099-01-01T00:00:00.000000Z";
    let due = "2026-11-21T03:04:05.000000Z";
    for (id, link, payment, seq, state, next) in [
        ("evt_1", 103, None, 1, "delivered", None),
        ("evt_2", 103, None, 2, "pending", Some(later)),
        ("evt_3", 103, None, 3, "pending", Some(due)),
        ("evt_4", 103, Some(129), 4, "pending", Some(due)),
        ("evt_5", 78, None, 1, "dead", None),
    ] {
        sqlx::query(
            "INSERT INTO link_event (id, account_id, link_id, payment_id, type, sequence, \
             created_at, envelope) VALUES (?1, ?2, ?3, ?4, 'payment_link.paid', ?5, ?6, ?7)",
        )
        .bind(id)
        .bind(ACCOUNT)
        .bind(link)
        .bind(payment)
        .bind(seq)
        .bind(due)
        .bind(format!(r#"{{"id":"{id}"}}"#))
        .execute(&pool)
        .await
        .expect("event");
        sqlx::query(
            "INSERT INTO delivery (event_id, subscriber, channel, state, next_attempt_at, \
             created_at) VALUES (?1, 'erp', 'webhook', ?2, ?3, ?4)",
        )
        .bind(id)
        .bind(state)
        .bind(next)
        .bind(due)
        .execute(&pool)
        .await
        .expect("delivery");
    }
    pool.close().await;

    let l = Ledger::open(&path).await.expect("migrates to version 8");
    let rows = sqlx::query(
        "SELECT event_id, account_id, link_id, payment_id, sequence FROM delivery ORDER BY id",
    )
    .fetch_all(l.sqlite_pool())
    .await
    .expect("deliveries");
    type Key = (
        String,
        Option<String>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    );
    let got: Vec<Key> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let acc = || Some(ACCOUNT.to_string());
    assert_eq!(
        got,
        [
            ("evt_1".into(), None, None, None, None),
            ("evt_2".into(), acc(), Some(103), None, Some(2)),
            ("evt_3".into(), acc(), Some(103), None, Some(3)),
            ("evt_4".into(), acc(), Some(103), Some(129), Some(4)),
            ("evt_5".into(), acc(), Some(78), None, Some(1)),
        ]
    );
    let now = Utc::now();
    let due_events = |l: &Ledger| {
        let l = l.clone();
        async move {
            l.due_deliveries(now, 10)
                .await
                .expect("due")
                .into_iter()
                .map(|d| d.event_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(due_events(&l).await, ["evt_4"], "evt_3 waits behind evt_2");
    sqlx::query("UPDATE delivery SET state = 'delivered', next_attempt_at = NULL WHERE id = 2")
        .execute(l.sqlite_pool())
        .await
        .expect("evt_2 delivered");
    assert_eq!(due_events(&l).await, ["evt_3", "evt_4"]);
    l.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_bundled_sqlite_is_built_with_the_options_of_cargo_config() {
    // `.cargo/config.toml` passes them to libsqlite3-sys (LIBSQLITE3_FLAGS); a build that lost
    // them (another SQLite, the variable overridden) counts memory under a global mutex again
    // and writes a temporary file for every statement journal past 64 KiB.
    let f = Fixture::new().await;
    let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
        .fetch_all(f.l.sqlite_pool())
        .await
        .expect("compile_options");
    for wanted in ["DEFAULT_MEMSTATUS=0", "STMTJRNL_SPILL=1048576"] {
        assert!(
            options.iter().any(|o| o == wanted),
            "{wanted} missing from {options:?}"
        );
    }
    f.close().await;
}
