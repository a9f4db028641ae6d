-- singapay-sync ledger, version 4. Never edit once landed.

-- Payments: one row per SingaPay Payment Link History record. A link is the parent; every payment
-- attempt is its own record with its own method, amount, status and settlement (seed 002).
CREATE TABLE payment (
    account_id                TEXT    NOT NULL,
    payment_id                INTEGER NOT NULL,  -- the history row's id
    link_id                   INTEGER,           -- the parent link, found through payment_link_reff_no
    reff_no                   TEXT    NOT NULL,  -- the attempt's own reference
    payment_link_reff_no      TEXT    NOT NULL,  -- the parent link's reff_no (the merchant's invoice)
    payment_method_name       TEXT,              -- e.g. "VA BRI"
    payment_method_value      TEXT,              -- the VA number or pay code
    payment_method_additional TEXT,              -- as received (often a JSON-encoded string)
    amount                    TEXT    NOT NULL,  -- decimal Rupiah, e.g. "150000.00"
    status                    TEXT    NOT NULL,  -- as received: pending, paid, failed, expired…
    status_computed           TEXT,
    is_expired                INTEGER NOT NULL,  -- 0|1
    payment_date              TEXT,              -- UTC
    processed_timestamp       TEXT,              -- UTC
    has_settle                INTEGER NOT NULL,  -- 0|1
    settle_at                 TEXT,              -- UTC
    customer_name             TEXT    NOT NULL,  -- "" kept as received
    customer_email            TEXT    NOT NULL,
    customer_phone            TEXT    NOT NULL,
    created_at                TEXT,              -- UTC (SingaPay's): the history window is by it
    raw_json                  TEXT    NOT NULL,  -- SingaPay's JSON for this row, verbatim
    raw_hash                  TEXT    NOT NULL,  -- SHA-256 of raw_json: identical read => no work
    first_seen_at             TEXT    NOT NULL,
    last_seen_at              TEXT    NOT NULL,  -- when a pass last wrote the row (it changed)
    sequence                  INTEGER NOT NULL DEFAULT 0, -- sequence of the payment's last event
    PRIMARY KEY (account_id, payment_id)
) STRICT;
-- What a pass reads of every stored row to decide whether it changed (covering).
CREATE INDEX payment_state ON payment (account_id, payment_id, raw_hash, sequence);
-- The export walks payments by date.
CREATE INDEX payment_by_date ON payment (account_id, payment_date);
-- A link's payments, and a payment's link.
CREATE INDEX payment_by_link_reff ON payment (account_id, payment_link_reff_no);
CREATE INDEX payment_link_reff ON payment_link (account_id, reff_no);

-- An account's history baseline: its first complete read of the history (recorded silently, like
-- the links' baseline, so that adding history to a running ledger does not replay a year).
ALTER TABLE account_state ADD COLUMN history_baseline_at TEXT;

-- link_event carries payment events too: `payment_id` names the payment of a payment.* event (its
-- `link_id` is then the parent link, 0 while unknown) and `sequence` rises per payment. SQLite
-- cannot change a table's UNIQUE constraint, so the table is rebuilt inside this migration's
-- transaction, keeping every event's seq and id, so the deliveries that refer to it stay valid.
-- (PRAGMA foreign_keys cannot be switched off inside a transaction: the foreign-key check is
-- deferred instead. Dropping the old table orphans the deliveries for a moment; inserting the
-- events back into the new table resolves each of them before the commit checks.)
PRAGMA defer_foreign_keys = ON;
CREATE TEMP TABLE link_event_v3 AS SELECT * FROM link_event;
-- The AUTOINCREMENT counter too: seq never reuses a number, even of an event retention pruned.
CREATE TEMP TABLE link_event_seq_v3 AS SELECT seq FROM sqlite_sequence WHERE name = 'link_event';
DROP TABLE link_event;
CREATE TABLE link_event (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,             -- evt_<ULID>
    account_id  TEXT    NOT NULL,
    link_id     INTEGER NOT NULL,                    -- the link (of a payment event: its parent)
    payment_id  INTEGER,                             -- the payment of a payment.* event, else NULL
    type        TEXT    NOT NULL,                    -- payment_link.paid, payment.settled, …
    sequence    INTEGER NOT NULL,                    -- per link, or per payment for payment.*
    run_id      INTEGER REFERENCES sync_run (id),
    created_at  TEXT    NOT NULL,
    usage_delta INTEGER,                             -- for payment_link.paid
    envelope    TEXT    NOT NULL                     -- the JSON delivered
) STRICT;
INSERT INTO link_event (seq, id, account_id, link_id, payment_id, type, sequence, run_id,
                        created_at, usage_delta, envelope)
    SELECT seq, id, account_id, link_id, NULL, type, sequence, run_id, created_at, usage_delta,
           envelope FROM temp.link_event_v3 ORDER BY seq;
DROP TABLE temp.link_event_v3;
UPDATE sqlite_sequence SET seq = MAX(seq, (SELECT seq FROM temp.link_event_seq_v3))
    WHERE name = 'link_event' AND EXISTS (SELECT 1 FROM temp.link_event_seq_v3);
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'link_event', seq FROM temp.link_event_seq_v3
    WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'link_event');
DROP TABLE temp.link_event_seq_v3;
CREATE UNIQUE INDEX link_event_sequence
    ON link_event (account_id, link_id, IFNULL(payment_id, -1), sequence);
CREATE INDEX link_event_run ON link_event (run_id);

-- What a pass read of the history and wrote of it.
ALTER TABLE sync_run ADD COLUMN history_pages INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_run ADD COLUMN payments_seen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_run ADD COLUMN payments_written INTEGER NOT NULL DEFAULT 0;
