-- Number sequences per legal entity (journals, customer invoices, vouchers), as Finance keeps
-- them; they replace the global number_sequence of 001.
--
-- Finance keeps its number sequences per legal entity: the journals, customer invoices and
-- vouchers of one entity are numbered 1, 2, 3... whatever another entity posts. A number
-- carries its entity (USMF-CIV-000001), so numbers stay unique across entities. A row is made
-- on the entity's first use (INSERT ... ON CONFLICT DO UPDATE); taking numbers updates that
-- row inside the posting transaction and holds its lock until commit, so two postings of one entity take them one after the other, a rollback gives
-- them back, and two entities never wait on each other.
CREATE TABLE legal_entity_number_sequence (
    legal_entity_id text NOT NULL REFERENCES legal_entity ON DELETE CASCADE,
    name text NOT NULL CHECK (name IN ('journal', 'invoice', 'voucher')),
    prefix text NOT NULL,
    next_value bigint NOT NULL DEFAULT 1 CHECK (next_value >= 1),
    PRIMARY KEY (legal_entity_id, name)
);

-- Numbers already taken keep their old form (CIV-000001): they cannot collide with the new
-- ones, which carry the entity.
DROP TABLE number_sequence;
