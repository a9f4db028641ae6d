//! Ledger unit tests: batched page commits, packed link states, delivery parking.

use chrono::{TimeZone, Utc};

use super::*;
use crate::event::{Event, EventData};
use crate::singapay::PaymentLink;
use crate::types::{AccountId, Channel, DeliveryState, EventId, EventType, LinkId, Trigger};

mod deliveries;
mod file;

const ACCOUNT: &str = "01K7P073Q8RE2A9PQT8Q7MXPN4";
/// The claim lease of the inbound queue (PostgreSQL only; these unit tests are SQLite).
const LEASE: std::time::Duration = std::time::Duration::from_secs(300);

/// A fresh ledger in a temporary directory with one started run of [`ACCOUNT`].
struct Fixture {
    l: Ledger,
    dir: std::path::PathBuf,
    account: AccountId,
    run: i64,
}

impl Fixture {
    async fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("singapay-ledger-test-{}", ulid::Ulid::new()));
        let l = Ledger::open(&dir.join("ledger.db")).await.expect("open");
        let account = AccountId::parse(ACCOUNT).expect("account");
        let run = l
            .start_run(&account, Trigger::Manual, true, Utc::now())
            .await
            .expect("run");
        Self {
            l,
            dir,
            account,
            run,
        }
    }

    async fn close(self) {
        self.l.close().await;
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

/// A link row of [`ACCOUNT`] (also the links module's tests).
pub(super) fn write(id: i64) -> LinkWrite {
    let raw = format!(
        r#"{{"id":{id},"reff_no":"R{id}","title":"Link {id}","status":"open","current_usage":0,"total_amount":"20000.00"}}"#
    );
    LinkWrite {
        account_id: AccountId::parse(ACCOUNT).expect("account"),
        link: PaymentLink::decode(&raw).expect("link"),
        raw_hash: crate::sync::pass::content_hash(&raw),
        raw_json: raw,
        sequence: id % 3,
        deleted_at: None,
        now: Utc
            .with_ymd_and_hms(2026, 11, 21, 3, 4, 5)
            .single()
            .expect("time"),
    }
}

fn page(ids: impl IntoIterator<Item = i64>) -> PageCommit {
    let mut c = PageCommit::default();
    for id in ids {
        c.writes.push(write(id));
    }
    c
}

/// A webhook delivery of event `event_id` to `subscriber`, due at `at`.
fn webhook_delivery(event_id: &str, subscriber: &str, at: chrono::DateTime<Utc>) -> NewDelivery {
    NewDelivery {
        event_id: event_id.into(),
        subscriber: subscriber.into(),
        channel: Channel::Webhook,
        next_attempt_at: at,
    }
}

fn event(id: &str, link: i64, run_id: i64) -> NewEvent {
    event_at(id, link, run_id, Utc::now())
}

fn event_at(id: &str, link: i64, run_id: i64, at: chrono::DateTime<Utc>) -> NewEvent {
    let event = Event {
        account_id: AccountId::parse(ACCOUNT).expect("account"),
        created_at: at,
        data: EventData {
            object: serde_json::json!({"id": link}),
            payments: None,
            previous_attributes: None,
            usage_delta: Some(1),
        },
        id: EventId(id.to_string()),
        sequence: 1,
        event_type: EventType::Paid,
    };
    NewEvent::new(event, LinkId(link), run_id).expect("event")
}

#[tokio::test]
async fn a_link_on_two_pages_committed_together_keeps_the_later_pages_row() {
    let f = Fixture::new().await;
    let (l, account, run) = (&f.l, &f.account, f.run);
    // One statement cannot upsert a row twice (PostgreSQL refuses it): the repeated link then
    // starts another statement, in order (SQLite would accept either; `links::pg_statements`'
    // unit test checks the split).
    let mut later = PageCommit::default();
    let mut again = write(3);
    again.sequence = 7;
    later.writes.push(again);
    later.writes.push(write(9));
    l.commit_pages(run, vec![page(1..=5), later])
        .await
        .expect("commit");
    let ids: Vec<LinkId> = (1..=9).map(LinkId).collect();
    let states = l.load_link_states(account, &ids).await.expect("states");
    assert_eq!(states.len(), 6);
    assert_eq!(states[&LinkId(3)].sequence, 7);
    assert_eq!(states[&LinkId(2)].sequence, 2);
    assert_eq!(states[&LinkId(9)].sequence, 0);
}

#[tokio::test]
async fn pages_committed_together_read_back_as_states() {
    let f = Fixture::new().await;
    let (l, account, run) = (&f.l, &f.account, f.run);
    // 460 rows of two pages in five statements (400, then 32, 16, 8, 4).
    l.commit_pages(run, vec![page(1..=450), page(451..=460)])
        .await
        .expect("commit");

    let all: Vec<LinkId> = (1..=460).map(LinkId).collect();
    let states = l.load_link_states(account, &all).await.expect("states");
    assert_eq!(states.len(), 460);
    let s = &states[&LinkId(457)];
    assert_eq!(s.sequence, 457 % 3);
    assert_eq!(s.raw_hash, write(457).raw_hash);
    assert_eq!(s.deleted_at, None);

    // The window below an id: exactly the `limit` highest ids at or below it.
    let below = l
        .load_link_states_below(account, LinkId(300), 100)
        .await
        .expect("below");
    let mut ids: Vec<i64> = below.iter().map(|(id, _)| id.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, (201..=300).collect::<Vec<_>>());
    let other = AccountId::parse("01K7P073Q8RE2A9PQT8Q7MXPN5").expect("account");
    assert!(
        l.load_link_states_below(&other, LinkId(300), 100)
            .await
            .expect("empty")
            .is_empty()
    );

    let stored = l.get_link(account, LinkId(451)).await.expect("get");
    let stored = stored.expect("row 451");
    assert_eq!(stored.link.reff_no, "R451");
    assert_eq!(
        stored.link.total_amount.map(|d| d.to_string()).as_deref(),
        Some("20000.00")
    );
    let r = l.get_run(run).await.expect("run").expect("run row");
    assert_eq!(r.links_written, 460);
    f.close().await;
}

#[tokio::test]
async fn a_failing_page_rolls_back_its_whole_group() {
    let f = Fixture::new().await;
    let (l, account, run) = (&f.l, &f.account, f.run);
    let mut second = page(11..=20);
    // The same event id twice violates link_event.id UNIQUE: the whole group must go.
    second.events.push(event("evt_dup", 11, run));
    second.events.push(event("evt_dup", 12, run));
    let err = l.commit_pages(run, vec![page(1..=10), second]).await;
    assert!(err.is_err());
    let ids: Vec<LinkId> = (1..=20).map(LinkId).collect();
    assert!(
        l.load_link_states(account, &ids)
            .await
            .expect("states")
            .is_empty()
    );
    assert_eq!(l.count_events().await.expect("count"), 0);
    f.close().await;
}

#[tokio::test]
async fn event_retention_keeps_events_a_delivery_still_owes() {
    let f = Fixture::new().await;
    let (l, run) = (&f.l, f.run);
    let old = Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .expect("time");
    let mut c = PageCommit::default();
    for i in 1..=3 {
        c.events.push(event_at(&format!("evt_r{i}"), i, run, old));
        c.deliveries
            .push(webhook_delivery(&format!("evt_r{i}"), "erp", old));
    }
    l.commit_page(run, c).await.expect("commit");
    // Events 1 and 2 were delivered a year ago; event 3's delivery is still pending.
    let due = l.due_deliveries(Utc::now(), 10).await.expect("due");
    let outcomes: Vec<AttemptOutcome> = due
        .iter()
        .filter(|d| d.event_id != "evt_r3")
        .map(|d| AttemptOutcome {
            delivery_id: d.id,
            attempted_at: old,
            duration_ms: 3,
            status: Some(200),
            error: None,
            result: AttemptResult::Delivered,
        })
        .collect();
    l.record_attempts(&outcomes.iter().collect::<Vec<_>>())
        .await
        .expect("record");
    let cutoff = Utc::now() - chrono::Duration::days(180);
    let p = l
        .prune_batch(cutoff, Some(cutoff), 1000)
        .await
        .expect("prune");
    assert_eq!((p.deliveries, p.attempts, p.events), (2, 2, 2), "{p:?}");
    let left = l
        .events(&EventFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("events")
        .expect("feed");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].event.id.0, "evt_r3");
    assert!(
        l.prune_batch(cutoff, Some(cutoff), 1000)
            .await
            .expect("again")
            .is_empty()
    );
    f.close().await;
}

fn notification(key: &str, at: chrono::DateTime<Utc>) -> NewNotification {
    NewNotification {
        dedupe_key: key.into(),
        event: Some("payment-link-transaction".into()),
        partner_id: Some("partner".into()),
        x_timestamp: Some(at.timestamp().to_string()),
        body: "{}".into(),
        received_at: at,
        state: InboundState::Pending,
        link_id: Some(LinkId(103)),
    }
}

#[tokio::test]
async fn a_notification_is_stored_once_retried_with_its_attempts_and_processed() {
    let f = Fixture::new().await;
    let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    let n = notification("k1", t0);
    let id = match f.l.store_notification(&n).await.unwrap() {
        Stored::New(id) => id,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        f.l.store_notification(&n).await.unwrap(),
        Stored::Duplicate(id)
    );
    assert_eq!(f.l.due_notifications(t0, 10, LEASE).await.unwrap().len(), 1);
    let later = t0 + chrono::Duration::seconds(1);
    let retry = InboundOutcome::Retry {
        error: "show failed".into(),
        next: Some(later),
    };
    f.l.finish_notifications(&[id], &retry, t0).await.unwrap();
    assert!(
        f.l.due_notifications(t0, 10, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(f.l.next_notification_due().await.unwrap(), Some(later));
    let due = f.l.due_notifications(later, 10, LEASE).await.unwrap();
    assert_eq!((due[0].attempts, due[0].duplicates), (1, 1));
    assert_eq!(due[0].last_error.as_deref(), Some("show failed"));
    let done = InboundOutcome::Processed {
        run_id: f.run,
        account: f.account.clone(),
    };
    f.l.finish_notifications(&[id], &done, later).await.unwrap();
    let rows =
        f.l.list_notifications(Some(InboundState::Processed), None, 10)
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].attempts, 2);
    assert_eq!(rows[0].run_id, Some(f.run));
    assert_eq!(rows[0].last_error, None);
    assert_eq!(f.l.next_notification_due().await.unwrap(), None);
    // A notification out of retries is failed.
    let id2 = match f
        .l
        .store_notification(&notification("k2", t0))
        .await
        .unwrap()
    {
        Stored::New(id) => id,
        other => panic!("{other:?}"),
    };
    let give_up = InboundOutcome::Retry {
        error: "still failing".into(),
        next: None,
    };
    f.l.finish_notifications(&[id2], &give_up, t0)
        .await
        .unwrap();
    let failed =
        f.l.list_notifications(Some(InboundState::Failed), None, 10)
            .await
            .unwrap();
    assert_eq!(failed.iter().map(|r| r.id).collect::<Vec<_>>(), vec![id2]);
    // Retention removes those no longer pending (a pending one stays), and keeps their run.
    let id3 = match f
        .l
        .store_notification(&notification("k3", t0))
        .await
        .unwrap()
    {
        Stored::New(id) => id,
        other => panic!("{other:?}"),
    };
    let pruned = f.l.prune_batch(later, None, 100).await.unwrap();
    assert_eq!(pruned.notifications, 2);
    let left = f.l.list_notifications(None, None, 10).await.unwrap();
    assert_eq!(left.iter().map(|r| r.id).collect::<Vec<_>>(), vec![id3]);
    f.close().await;
}

#[tokio::test]
async fn a_create_intent_is_recorded_once_and_answers_what_became_of_it() {
    let f = Fixture::new().await;
    let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    let a = &f.account;
    assert_eq!(
        f.l.begin_intent(a, "INV-1", "h1", t0).await.unwrap(),
        Intent::New
    );
    // A second create of the same reff_no meanwhile: still pending since t0.
    let later = t0 + chrono::Duration::seconds(3);
    assert_eq!(
        f.l.begin_intent(a, "INV-1", "h2", later).await.unwrap(),
        Intent::Pending(t0)
    );
    f.l.intent_created(a, "INV-1", LinkId(104), later)
        .await
        .unwrap();
    assert_eq!(
        f.l.begin_intent(a, "INV-1", "h1", later).await.unwrap(),
        Intent::Created(LinkId(104))
    );
    // Another reff_no, refused upstream and forgotten: a new create may go ahead.
    assert_eq!(
        f.l.begin_intent(a, "INV-2", "h", t0).await.unwrap(),
        Intent::New
    );
    f.l.drop_intent(a, "INV-2").await.unwrap();
    assert_eq!(
        f.l.begin_intent(a, "INV-2", "h", t0).await.unwrap(),
        Intent::New
    );
    // Idempotency answers expire.
    let answer = StoredAnswer {
        request_hash: "body".into(),
        status: 201,
        response: "{}".into(),
    };
    f.l.store_answer(a, "key", &answer, t0).await.unwrap();
    assert_eq!(
        f.l.idempotent_answer(a, "key", t0 - chrono::Duration::hours(24))
            .await
            .unwrap(),
        Some(answer)
    );
    assert_eq!(
        f.l.idempotent_answer(a, "key", t0 + chrono::Duration::seconds(1))
            .await
            .unwrap(),
        None
    );
    f.close().await;
}

#[test]
fn statement_chunks_fill_whole_statements_then_split_the_rest_in_powers_of_two() {
    let items: Vec<u32> = (0..300).collect();
    let sizes: Vec<usize> = statement_chunks(&items[..237], 100)
        .map(<[u32]>::len)
        .collect();
    assert_eq!(sizes, [100, 100, 32, 4, 1]);
    // Every row once, in order.
    let flat: Vec<u32> = statement_chunks(&items[..237], 100)
        .flatten()
        .copied()
        .collect();
    assert_eq!(flat, &items[..237]);
    // Every count from 0 to 300 together needs log2(100) + 1 distinct texts.
    let mut texts = std::collections::BTreeSet::new();
    for n in 0..=300 {
        texts.extend(statement_chunks(&items[..n], 100).map(<[u32]>::len));
    }
    assert_eq!(
        texts.into_iter().collect::<Vec<_>>(),
        [1, 2, 4, 8, 16, 32, 64, 100]
    );
    assert_eq!(statement_chunks(&items[..0], 100).count(), 0);
    assert_eq!(statement_chunks(&items[..3], 0).count(), 3);
}

#[tokio::test]
async fn a_page_commit_behind_another_connection_s_write_waits_without_holding_up_the_runtime() {
    // A single-threaded runtime, as in these tests: the link rows are stepped on its thread
    // (`sqlite_rows`), so the commit must have waited for the write lock in sqlx's worker
    // (`BEGIN IMMEDIATE`) or the connection holding the lock could never commit, and the page
    // would fail with SQLITE_BUSY after the 10 s busy timeout.
    let f = Fixture::new().await;
    let (l, account, run) = (&f.l, &f.account, f.run);
    let backend::Pool::Sqlite(pool) = &l.pool else {
        panic!("an SQLite fixture")
    };
    let mut held = pool.begin_with("BEGIN IMMEDIATE").await.expect("begin");
    sqlx::query("UPDATE sync_run SET changes = changes WHERE id = $1")
        .bind(run)
        .execute(&mut *held)
        .await
        .expect("take the write lock");
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        held.commit().await.expect("commit the holder");
    };
    let (committed, ()) = tokio::join!(l.commit_pages(run, vec![page(1..=30)]), release);
    committed.expect("the page commits once the holder has");
    let ids: Vec<LinkId> = (1..=30).map(LinkId).collect();
    assert_eq!(
        l.load_link_states(account, &ids)
            .await
            .expect("states")
            .len(),
        30
    );
    f.close().await;
}
