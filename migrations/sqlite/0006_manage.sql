-- singapay-sync ledger, version 6: links managed through the daemon (DESIGN section 15).
-- Never edit once landed.

-- The intent to create a link, recorded before SingaPay is asked (SingaPay has no idempotency):
-- a create whose answer was lost is resolved by looking for the reff_no upstream before any
-- re-send. One row per (account, reff_no): a second create of the same reff_no waits or is a
-- duplicate.
CREATE TABLE link_intent (
    account_id   TEXT    NOT NULL,
    reff_no      TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,            -- SHA-256 of the body sent to SingaPay
    state        TEXT    NOT NULL CHECK (state IN ('pending', 'created')),
    link_id      INTEGER,                     -- once created
    created_at   TEXT    NOT NULL,
    updated_at   TEXT    NOT NULL,
    PRIMARY KEY (account_id, reff_no)
) STRICT;

-- Idempotency-Key: the first answer to a create, replayed for the same key and body (24 hours).
CREATE TABLE idempotency_key (
    account_id   TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,            -- SHA-256 of the caller's body
    status       INTEGER NOT NULL,            -- HTTP status answered
    response     TEXT    NOT NULL,            -- JSON answered
    created_at   TEXT    NOT NULL,
    PRIMARY KEY (account_id, key)
) STRICT;
CREATE INDEX idempotency_key_age ON idempotency_key (created_at);

-- The doorbell finds a webhook's history row by its attempt reff_no, and link management asks
-- whether a link has payments: indexed per account instead of a scan of every payment.
CREATE INDEX payment_attempt ON payment (account_id, reff_no);
CREATE INDEX payment_link_id ON payment (account_id, link_id);
