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
    let event = Event {
        account_id: AccountId::parse(ACCOUNT).expect("account"),
        created_at: Utc::now(),
        data: EventData {
            object: serde_json::json!({"id": link}),
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
