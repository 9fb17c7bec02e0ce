-- Fixed exchange rates on project contracts (domain rule 5), and which rate a posting applied
-- and why.

-- --- fixed exchange rate of a project contract ---------------------------------------------------

-- A project contract may carry a fixed rate from its currency to the accounting currency of its
-- legal entity; every posting for the contract then uses it instead of the exchange-rate table.
-- Keyed by contract id alone, without a reference: Finance knows contracts only by the ids its
-- proposals and staged rows carry, and a rate set before the contract's first row arrives is
-- kept and applies when the row comes.
CREATE TABLE contract_fixed_exchange_rate (
    contract_id uuid PRIMARY KEY,
    legal_entity_id text NOT NULL REFERENCES legal_entity ON DELETE CASCADE,
    contract_currency char(3) NOT NULL,
    accounting_currency char(3) NOT NULL,
    rate numeric NOT NULL CHECK (rate > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (contract_currency <> accounting_currency)
);

-- Which rate a posting used: 'contract fixed rate', 'exchange rate table' or 'same currency'.
-- Null on rows posted before this migration.
ALTER TABLE integration_journal_line ADD COLUMN exchange_rate_source text;
ALTER TABLE actuals_staging ADD COLUMN exchange_rate_source text;
ALTER TABLE customer_invoice ADD COLUMN exchange_rate_source text;
