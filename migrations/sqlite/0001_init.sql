-- singapay-sync ledger, version 1.
-- Times are TEXT, RFC 3339 UTC with six fractional digits ("2026-11-21T03:04:05.000000Z") so that
-- they sort lexically. Money is TEXT holding a decimal (never REAL). Never edit once landed.

-- Per-account state: whether the baseline (first complete pass) is done.
CREATE TABLE account_state (
    account_id            TEXT PRIMARY KEY,          -- SingaPay account ULID
    baseline_completed_at TEXT,                      -- end of the first complete pass; NULL before
    last_success_at       TEXT                       -- end of the last successful pass
) STRICT;

-- The mirror: one row per (account, link) with every field of SingaPay's link object.
CREATE TABLE payment_link (
    account_id                 TEXT    NOT NULL,
    link_id                    INTEGER NOT NULL,     -- SingaPay payment_links.id
    reff_no                    TEXT    NOT NULL,
    title                      TEXT,
    payment_url                TEXT,
    status                     TEXT    NOT NULL,     -- stored status (open|closed)
    status_computed            TEXT    NOT NULL,     -- open|closed|expired
    is_expired                 INTEGER NOT NULL,     -- 0|1
    required_customer_detail   INTEGER,              -- 0|1|NULL
    max_usage                  INTEGER,
    current_usage              INTEGER NOT NULL,
    expired_at                 TEXT,                 -- UTC
    total_amount               TEXT,                 -- decimal Rupiah, e.g. "20000.00"
    items_json                 TEXT,                 -- canonical JSON array or NULL
    whitelisted_payment_method TEXT,                 -- canonical JSON array (sorted) or NULL
    redirect_url               TEXT,
    payment_date               TEXT,                 -- UTC
    created_at                 TEXT,                 -- UTC (SingaPay's)
    updated_at                 TEXT,                 -- UTC (SingaPay's)
    raw_json                   TEXT    NOT NULL,     -- SingaPay's JSON for this link, verbatim; the
                                                     -- canonical object is decoded from it
    raw_hash                   TEXT    NOT NULL,     -- SHA-256 of raw_json: identical read => no work
    first_seen_at              TEXT    NOT NULL,     -- when this daemon first saw the link
    last_seen_at               TEXT    NOT NULL,     -- when a pass last wrote the row (it changed)
    deleted_at                 TEXT,                 -- set when confirmed deleted (404 on show)
    sequence                   INTEGER NOT NULL DEFAULT 0, -- sequence of the link's last event
    PRIMARY KEY (account_id, link_id)
) STRICT;

-- Pass history.
CREATE TABLE sync_run (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id  TEXT    NOT NULL,
    trigger     TEXT    NOT NULL CHECK (trigger IN ('schedule', 'manual', 'webhook')),
    started_at  TEXT    NOT NULL,
    finished_at TEXT,
    baseline    INTEGER NOT NULL DEFAULT 0,          -- 1 if this pass is the account's baseline
    pages       INTEGER NOT NULL DEFAULT 0,          -- pages committed
    links_seen  INTEGER NOT NULL DEFAULT 0,          -- distinct links read
    links_written INTEGER NOT NULL DEFAULT 0,        -- payment_link rows inserted or updated
    changes     INTEGER NOT NULL DEFAULT 0,          -- events emitted
    outcome     TEXT    NOT NULL DEFAULT 'running' CHECK (outcome IN ('running', 'succeeded', 'failed')),
    error       TEXT
) STRICT;
CREATE INDEX sync_run_account ON sync_run (account_id, id);

-- Append-only change log: the event catalogue of DESIGN section 5. `seq` is commit order and the
-- pull feed's cursor; `id` is the public, stable event id.
CREATE TABLE link_event (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,             -- evt_<ULID>
    account_id  TEXT    NOT NULL,
    link_id     INTEGER NOT NULL,
    type        TEXT    NOT NULL,                    -- payment_link.paid, …
    sequence    INTEGER NOT NULL,                    -- per-link, rises by one per event
    run_id      INTEGER REFERENCES sync_run (id),
    created_at  TEXT    NOT NULL,
    usage_delta INTEGER,                             -- for payment_link.paid
    envelope    TEXT    NOT NULL,                    -- the JSON delivered (before/after inside)
    UNIQUE (account_id, link_id, sequence)
) STRICT;
CREATE INDEX link_event_link ON link_event (account_id, link_id, sequence);

-- The outbox: one row per (event, subscriber), committed with the event.
CREATE TABLE delivery (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL REFERENCES link_event (id),
    subscriber      TEXT    NOT NULL,                -- [[webhooks]].name or [[email.recipients]].name
    channel         TEXT    NOT NULL CHECK (channel IN ('webhook', 'email')),
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'dead', 'disabled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,                            -- NULL unless pending
    last_status     INTEGER,                         -- HTTP status or SMTP reply code
    last_error      TEXT,
    delivered_at    TEXT,
    created_at      TEXT    NOT NULL,
    UNIQUE (event_id, subscriber)
) STRICT;
CREATE INDEX delivery_due ON delivery (state, next_attempt_at);
-- The dispatcher claims pending deliveries in id order (= event commit order).
CREATE INDEX delivery_pending ON delivery (id) WHERE state = 'pending';

-- Every delivery attempt, for diagnosis.
CREATE TABLE delivery_attempt (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id  INTEGER NOT NULL REFERENCES delivery (id),
    attempted_at TEXT    NOT NULL,
    duration_ms  INTEGER NOT NULL,
    status       INTEGER,                            -- HTTP status or SMTP reply code
    error        TEXT                                -- error text, response body truncated
) STRICT;
CREATE INDEX delivery_attempt_delivery ON delivery_attempt (delivery_id);

-- Subscribers switched off by a 410 Gone (re-enabled by hand).
CREATE TABLE subscriber_state (
    name           TEXT PRIMARY KEY,
    disabled_at    TEXT,
    disabled_reason TEXT
) STRICT;
