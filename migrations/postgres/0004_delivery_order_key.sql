-- singapay-sync ledger on PostgreSQL, version 4. Never edit once landed.

-- A delivery carries its event's ordering key (account, link, payment, sequence), as on SQLite
-- (its migration 8), so both schemas keep the same columns. PostgreSQL's claim finds the held
-- keys once per claim (deliveries::held_keys) and needs no index on them. Filled for every
-- delivery that is not delivered (only those can be pending again); a delivered one keeps NULLs.
ALTER TABLE delivery ADD COLUMN account_id TEXT;
ALTER TABLE delivery ADD COLUMN link_id BIGINT;
ALTER TABLE delivery ADD COLUMN payment_id BIGINT;
ALTER TABLE delivery ADD COLUMN sequence BIGINT;
UPDATE delivery SET account_id = e.account_id, link_id = e.link_id, payment_id = e.payment_id,
    sequence = e.sequence
    FROM link_event e WHERE e.id = delivery.event_id AND delivery.state <> 'delivered';
