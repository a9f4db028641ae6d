-- singapay-sync ledger, version 3. Never edit once landed.

-- Deletions a pass held back because more links were missing than sync.max_deletions allows (or
-- the list came back empty): the run records how many, the account keeps the count of its last
-- successful pass (so /readyz can say so) until a pass deletes or finds them.
ALTER TABLE sync_run ADD COLUMN deletions_held INTEGER NOT NULL DEFAULT 0;
ALTER TABLE account_state ADD COLUMN deletions_held INTEGER NOT NULL DEFAULT 0;

-- Set while the dispatcher has a delivery's attempt in flight, cleared when its outcome is
-- recorded. One still set at start was cut short by a crash or a kill: it is logged as such and
-- sent again.
ALTER TABLE delivery ADD COLUMN claimed_at TEXT;

-- Retention prunes delivered deliveries by age.
CREATE INDEX delivery_delivered ON delivery (delivered_at) WHERE state = 'delivered';

-- Retention keeps a sync run that events refer to; this finds those events without a scan.
CREATE INDEX link_event_run ON link_event (run_id);
