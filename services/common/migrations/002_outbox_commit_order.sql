-- The transaction that wrote each outbox row. The relay publishes a row only once every
-- transaction that could still add a row with a smaller id has ended (see outbox.py).
ALTER TABLE dwsim_outbox ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
