-- singapay-sync ledger on PostgreSQL, version 2. Never edit once landed.

-- Every dispatch turn (at least once a second) looks for claims whose lease lapsed: a partial
-- index over the few claimed deliveries instead of a scan of the whole table.
CREATE INDEX delivery_claimed ON delivery (claimed_at) WHERE claimed_at IS NOT NULL;
