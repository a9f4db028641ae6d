-- singapay-sync ledger on PostgreSQL, version 3. Never edit once landed.

-- SingaPay lists links and history newest first, so a baseline import inserts each of these
-- indexes' keys in descending order: into an ascending B-tree at the left edge, where each split
-- leaves two half-full pages. Kept descending, the same inserts go to the right edge, where
-- PostgreSQL splits a full page leaving it at the index's fillfactor. Every query reads them as
-- before (a B-tree is walked either way).
DROP INDEX payment_link_state;
CREATE INDEX payment_link_state ON payment_link (account_id, link_id DESC)
    INCLUDE (raw_hash, sequence, deleted_at);
DROP INDEX payment_link_reff;
CREATE INDEX payment_link_reff ON payment_link (account_id, reff_no DESC);
DROP INDEX payment_state;
CREATE INDEX payment_state ON payment (account_id, payment_id DESC) INCLUDE (raw_hash, sequence);
DROP INDEX payment_by_date;
CREATE INDEX payment_by_date ON payment (account_id, payment_date DESC);
