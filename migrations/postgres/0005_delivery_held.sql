-- singapay-sync ledger on PostgreSQL, version 5. Never edit once landed.

-- The pending deliveries by subscriber and ordering key, as on SQLite (its migration 8): the next
-- due time (Ledger::next_due_at, asked after every turn of the dispatcher's loop) walks the
-- pending deliveries in next_attempt_at order and stops at the first one no earlier pending
-- delivery of its key holds back, each check one probe of this index. Without it, PostgreSQL
-- compared every pair of one key's pending deliveries (206 ms for 2,000 held behind a retry) and
-- read the whole backlog however early the answer (254-266 ms with 100,000 retrying); with it,
-- 19-22 ms and 0.1-0.5 ms (docs/PERFORMANCE.md, seventh session).
CREATE INDEX delivery_held
    ON delivery (subscriber, account_id, link_id, COALESCE(payment_id, -1), sequence)
    WHERE state = 'pending';
