//! Ledger unit tests: batched page commits, packed link states, delivery parking.

use chrono::{TimeZone, Utc};

use super::*;
use crate::event::{Event, EventData};
use crate::singapay::PaymentLink;
use crate::types::{AccountId, Channel, DeliveryState, EventId, EventType, LinkId, Trigger};

const ACCOUNT: &str = "01K7P073Q8RE2A9PQT8Q7MXPN4";

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

fn write(id: i64) -> LinkWrite {
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
        c.writes.push(write(id)).expect("encode");
    }
    c
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
async fn pages_committed_together_read_back_as_states() {
    let f = Fixture::new().await;
    let (l, account, run) = (&f.l, &f.account, f.run);
    // 450 rows: three statements (200, 200, 50) in the first page, then a small second page.
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
async fn deliveries_of_a_disabled_subscriber_are_parked_and_order_is_kept() {
    let f = Fixture::new().await;
    let (l, run) = (&f.l, f.run);
    l.disable_subscriber("gone", "410 Gone", Utc::now())
        .await
        .expect("disable");
    let mut c = PageCommit::default();
    for i in 1..=3 {
        let id = format!("evt_{i}");
        c.events.push(event(&id, i, run));
        for sub in ["erp", "gone"] {
            c.deliveries.push(NewDelivery {
                event_id: id.clone(),
                subscriber: sub.into(),
                channel: Channel::Webhook,
                next_attempt_at: Utc::now(),
            });
        }
    }
    l.commit_page(run, c).await.expect("commit");

    let of = |sub: &str| DeliveryFilter {
        subscriber: Some(sub.into()),
        limit: 10,
        ..Default::default()
    };
    let erp = l.list_deliveries(&of("erp")).await.expect("erp");
    let order: Vec<&str> = erp.iter().rev().map(|d| d.event_id.as_str()).collect();
    assert_eq!(order, ["evt_1", "evt_2", "evt_3"]);
    assert!(
        erp.iter()
            .all(|d| d.state == DeliveryState::Pending && d.next_attempt_at.is_some())
    );
    let gone = l.list_deliveries(&of("gone")).await.expect("gone");
    assert_eq!(gone.len(), 3);
    assert!(
        gone.iter()
            .all(|d| d.state == DeliveryState::Disabled && d.next_attempt_at.is_none())
    );
    let feed = l
        .events(&EventFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("events")
        .expect("feed");
    let ids: Vec<&str> = feed.iter().map(|e| e.event.id.0.as_str()).collect();
    assert_eq!(ids, ["evt_1", "evt_2", "evt_3"]);
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
        c.deliveries.push(NewDelivery {
            event_id: format!("evt_r{i}"),
            subscriber: "erp".into(),
            channel: Channel::Webhook,
            next_attempt_at: old,
        });
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
