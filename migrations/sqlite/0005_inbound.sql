-- singapay-sync ledger, version 5: SingaPay's webhooks as a doorbell, expiry on the clock
-- (DESIGN section 14). Never edit once landed.

-- Every verified webhook SingaPay posted, committed before it is answered 200. `dedupe_key` is the
-- SHA-256 of the normalised body: a retry or a duplicate of the same body is one row. Processing
-- (a targeted pass) moves it from `pending` to `processed`; one that names nothing to read is
-- `ignored`; one whose reads kept failing is `failed` after its last attempt (the sweep remains
-- the safety net).
CREATE TABLE inbound_notification (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key      TEXT    NOT NULL UNIQUE,
    event           TEXT,                 -- the body's `event`, or the kind recognised from it
    partner_id      TEXT,                 -- X-PARTNER-ID as received
    x_timestamp     TEXT,                 -- X-Timestamp as received (Unix seconds)
    body            TEXT    NOT NULL,     -- the raw body, verbatim
    received_at     TEXT    NOT NULL,
    duplicates      INTEGER NOT NULL DEFAULT 0, -- further deliveries of the same body
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'processed', 'ignored', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,                 -- when a pending one is due
    last_error      TEXT,
    account_id      TEXT,                 -- the configured account it resolved to
    link_id         INTEGER,              -- the link it names, if any
    run_id          INTEGER REFERENCES sync_run (id), -- the targeted pass that processed it
    processed_at    TEXT
) STRICT;
CREATE INDEX inbound_notification_due ON inbound_notification (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX inbound_notification_state ON inbound_notification (state, id);
-- Retention keeps a sync run that a notification refers to; this finds those without a scan.
CREATE INDEX inbound_notification_run ON inbound_notification (run_id);

-- History rows' expiry, for the expiry timer (UTC like every time here; backfilled from the JSON
-- SingaPay sent, whose times carry their +07:00 offset).
ALTER TABLE payment ADD COLUMN expired_at TEXT;
UPDATE payment SET expired_at =
    strftime('%Y-%m-%dT%H:%M:%S', json_extract(raw_json, '$.expired_at')) || '.000000Z'
    WHERE json_type(raw_json, '$.expired_at') = 'text';
CREATE INDEX payment_pending_expiry ON payment (expired_at) WHERE status = 'pending';
CREATE INDEX payment_link_open_expiry ON payment_link (expired_at)
    WHERE deleted_at IS NULL AND status_computed = 'open';
