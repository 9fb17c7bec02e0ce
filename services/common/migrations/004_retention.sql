-- Retention (services/common/retention.py) prunes by these timestamps, a batch at a time.
-- Without an index each batch would scan the whole table (a day of outbox rows, a week of
-- inbox ids) to find the oldest; with one it reads just the rows it deletes. Each costs one
-- index entry per published row / applied event.
CREATE INDEX dwsim_outbox_published_at ON dwsim_outbox (published_at)
    WHERE published_at IS NOT NULL;
CREATE INDEX dwsim_inbox_applied_at ON dwsim_inbox (applied_at);
