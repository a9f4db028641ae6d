-- singapay-sync ledger, version 8. Never edit once landed.

-- A delivery carries its event's ordering key (account, link, payment, sequence), so that the
-- due query finds what holds a delivery back (an earlier event of its link or payment, pending
-- for the same subscriber) among the pending deliveries of that subscriber and key alone, through
-- delivery_held. Before, it read every earlier event of the link in link_event and looked up
-- each one's delivery: a multi-use link paid 10,000 times made a claim of 2,000 of its new
-- events take 13 s (docs/PERFORMANCE.md). Filled for every delivery that is not delivered (only
-- those can be pending again); a delivered one keeps NULLs.
ALTER TABLE delivery ADD COLUMN account_id TEXT;
ALTER TABLE delivery ADD COLUMN link_id INTEGER;
ALTER TABLE delivery ADD COLUMN payment_id INTEGER;
ALTER TABLE delivery ADD COLUMN sequence INTEGER;
UPDATE delivery SET account_id = e.account_id, link_id = e.link_id, payment_id = e.payment_id,
    sequence = e.sequence
    FROM link_event e WHERE e.id = delivery.event_id AND delivery.state <> 'delivered';
CREATE INDEX delivery_held
    ON delivery (subscriber, account_id, link_id, IFNULL(payment_id, -1), sequence)
    WHERE state = 'pending';
