-- singapay-sync ledger, version 7. Never edit once landed.

-- SingaPay lists links and history newest first, so a baseline import inserts each of these
-- indexes' keys in descending order. Into an ascending B-tree every such key lands at the left
-- edge and each split leaves two half-full pages (100,000 links: payment_link_state 14.0 MB of
-- pages for 6.7 MB of entries, payment_link_reff 12.4 MB for 5.9 MB). Kept descending, the same
-- inserts append at the right edge, where SQLite fills each page before it starts the next
-- (8.0 and 7.1 MB). Every query reads them as before: SQLite walks an index either way.
DROP INDEX payment_link_state;
CREATE INDEX payment_link_state
    ON payment_link (account_id, link_id DESC, raw_hash, sequence, deleted_at);
DROP INDEX payment_link_reff;
CREATE INDEX payment_link_reff ON payment_link (account_id, reff_no DESC);
DROP INDEX payment_state;
CREATE INDEX payment_state ON payment (account_id, payment_id DESC, raw_hash, sequence);
DROP INDEX payment_by_date;
CREATE INDEX payment_by_date ON payment (account_id, payment_date DESC);
