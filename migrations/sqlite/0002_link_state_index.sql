-- singapay-sync ledger, version 2. Never edit once landed.

-- What a pass reads of every stored link to decide whether it changed (id, raw hash, sequence,
-- deletion), as a covering index: the per-page state query scans ~100-byte index entries in id
-- order instead of visiting every ~1 KB table row (raw_json) through the primary key's index.
CREATE INDEX payment_link_state ON payment_link (account_id, link_id, raw_hash, sequence, deleted_at);

-- Same columns as the UNIQUE (account_id, link_id, sequence) constraint's own index: every event
-- insert paid for two copies.
DROP INDEX link_event_link;
