-- Finance (ERP side): legal entity setup, actuals staging, integration journals, project invoice
-- proposals, customer invoices, vouchers and ledger entries. Names follow the Finance app.

-- --- legal entity setup ------------------------------------------------------------------------

CREATE TABLE legal_entity (
    legal_entity_id text PRIMARY KEY,
    accounting_currency char(3) NOT NULL,
    -- "Move the accounting date to the next open period" instead of refusing a closed period.
    move_to_next_open_period boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Billing type -> Finance line property (domain rule 6); a missing row refuses the actual.
CREATE TABLE line_property_mapping (
    legal_entity_id text NOT NULL REFERENCES legal_entity ON DELETE CASCADE,
    billing_type text NOT NULL,
    line_property text NOT NULL,
    PRIMARY KEY (legal_entity_id, billing_type)
);

CREATE TABLE exchange_rate (
    legal_entity_id text NOT NULL REFERENCES legal_entity ON DELETE CASCADE,
    from_currency char(3) NOT NULL,
    to_currency char(3) NOT NULL,
    valid_from date NOT NULL,
    rate numeric NOT NULL CHECK (rate > 0),
    PRIMARY KEY (legal_entity_id, from_currency, to_currency, valid_from)
);

CREATE TABLE fiscal_period (
    legal_entity_id text NOT NULL REFERENCES legal_entity ON DELETE CASCADE,
    year integer NOT NULL,
    month integer NOT NULL CHECK (month BETWEEN 1 AND 12),
    closed boolean NOT NULL DEFAULT false,
    PRIMARY KEY (legal_entity_id, year, month)
);

-- Gapless counters: a number is taken with UPDATE ... RETURNING inside the posting transaction,
-- so a rolled-back posting gives its number back and two postings never share one.
CREATE TABLE number_sequence (
    name text PRIMARY KEY,
    prefix text NOT NULL,
    next_value bigint NOT NULL DEFAULT 1 CHECK (next_value >= 1)
);
INSERT INTO number_sequence (name, prefix) VALUES
    ('journal', 'PJ'),
    ('invoice', 'CIV'),
    ('voucher', 'VOU');

-- --- actuals staging -----------------------------------------------------------------------------

-- One row per actual the bridge delivered (msdyn_actuals map). A refused actual is kept with
-- status 'invalid' and its reason; import_reason says why the last import left a valid row out.
CREATE TABLE actuals_staging (
    actual_id uuid PRIMARY KEY,
    legal_entity text NOT NULL,
    transaction_type text NOT NULL,
    transaction_class text NOT NULL,
    billing_type text,
    billing_method text,
    quantity numeric NOT NULL,
    price numeric NOT NULL,
    amount numeric NOT NULL,
    currency char(3) NOT NULL,
    document_date date NOT NULL,
    accounting_date date NOT NULL,
    project_id uuid NOT NULL,
    contract_id uuid,
    contract_line_id uuid,
    customer_id uuid,
    resource text,
    resource_category text,
    invoice_id uuid,
    unbilled_actual_id uuid,
    reverses_actual_id uuid,
    status text NOT NULL CHECK (status IN ('valid', 'invalid')),
    reason text,
    imported boolean NOT NULL DEFAULT false,
    imported_at timestamptz,
    import_reason text,
    journal_id text,
    proposal_id uuid,
    -- Accounting detail stamped at posting; it flows back to the Dataverse actual.
    voucher text,
    voucher_date date,
    exchange_rate numeric,
    accounting_currency_amount numeric,
    tax_amount numeric,
    received_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (status = 'valid' OR reason IS NOT NULL)
);
CREATE INDEX actuals_staging_pending ON actuals_staging (legal_entity, transaction_type)
    WHERE NOT imported AND status = 'valid';
CREATE INDEX actuals_staging_invoice ON actuals_staging (invoice_id);
CREATE INDEX actuals_staging_project ON actuals_staging (project_id, transaction_type);

-- Records the bridge delivered that Finance refused and could not keep in their own table
-- (a proposal header for an unknown legal entity): kept with the reason, never dropped.
CREATE TABLE refused_record (
    topic text NOT NULL,
    record_key text NOT NULL,
    reason text NOT NULL,
    payload jsonb NOT NULL,
    refused_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 1,
    PRIMARY KEY (topic, record_key)
);

-- --- integration journals ------------------------------------------------------------------------

CREATE TABLE integration_journal (
    journal_id text PRIMARY KEY,
    legal_entity text NOT NULL REFERENCES legal_entity,
    period_start date NOT NULL,
    status text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'posted', 'error')),
    error_reason text,
    created_at timestamptz NOT NULL DEFAULT now(),
    posted_at timestamptz
);
CREATE INDEX integration_journal_status ON integration_journal (status, legal_entity);

CREATE TABLE integration_journal_line (
    journal_id text NOT NULL REFERENCES integration_journal ON DELETE CASCADE,
    line_number integer NOT NULL,
    -- Unique: the same staged row is never imported twice.
    actual_id uuid NOT NULL UNIQUE REFERENCES actuals_staging,
    transaction_type text NOT NULL,
    transaction_class text NOT NULL,
    billing_type text NOT NULL,
    line_property text NOT NULL,
    quantity numeric NOT NULL,
    amount numeric NOT NULL,
    currency char(3) NOT NULL,
    accounting_date date NOT NULL,
    exchange_rate numeric NOT NULL,
    project_id uuid NOT NULL,
    contract_id uuid,
    voucher text,
    PRIMARY KEY (journal_id, line_number)
);

-- --- project invoice proposals --------------------------------------------------------------------

-- The header comes only from the bridge (Project invoice proposal V2); proposal_id is the
-- proforma's invoice id. sales_tax_group is a Finance-side edit that never travels back.
CREATE TABLE project_invoice_proposal (
    proposal_id uuid PRIMARY KEY,
    legal_entity text NOT NULL REFERENCES legal_entity,
    customer_id uuid NOT NULL,
    contract_id uuid NOT NULL,
    currency char(3) NOT NULL,
    invoice_date date NOT NULL,
    proposal_total numeric NOT NULL,
    sales_tax_amount numeric NOT NULL,
    payment_terms text,
    invoice_address jsonb,
    expected_billed_lines integer NOT NULL CHECK (expected_billed_lines >= 0),
    is_corrective boolean NOT NULL DEFAULT false,
    corrected_proposal_id uuid,
    sales_tax_group text,
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'lines_imported', 'posted')),
    waiting_reason text,
    invoice_number text,
    received_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX project_invoice_proposal_status ON project_invoice_proposal (status);

CREATE TABLE proposal_line (
    proposal_id uuid NOT NULL REFERENCES project_invoice_proposal ON DELETE CASCADE,
    line_number integer NOT NULL,
    -- Unique: the same staged row is never imported twice.
    actual_id uuid NOT NULL UNIQUE REFERENCES actuals_staging,
    transaction_class text NOT NULL,
    billing_type text NOT NULL,
    line_property text NOT NULL,
    quantity numeric NOT NULL,
    amount numeric NOT NULL,
    currency char(3) NOT NULL,
    project_id uuid NOT NULL,
    contract_line_id uuid,
    unbilled_actual_id uuid,
    accrued_wip_rate numeric,
    PRIMARY KEY (proposal_id, line_number)
);

-- --- posted documents -----------------------------------------------------------------------------

CREATE TABLE voucher (
    voucher text PRIMARY KEY,
    legal_entity text NOT NULL REFERENCES legal_entity,
    accounting_date date NOT NULL,
    currency char(3) NOT NULL,
    source_type text NOT NULL CHECK (source_type IN ('integration_journal', 'customer_invoice')),
    source_id text NOT NULL,
    posted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX voucher_source ON voucher (source_type, source_id);

CREATE TABLE ledger_entry (
    voucher text NOT NULL REFERENCES voucher ON DELETE CASCADE,
    entry_number integer NOT NULL,
    account text NOT NULL,
    -- Accounting currency, debit positive, credit negative; a voucher's entries sum to zero.
    amount numeric NOT NULL,
    actual_id uuid,
    PRIMARY KEY (voucher, entry_number)
);
CREATE INDEX ledger_entry_account ON ledger_entry (account);

CREATE TABLE customer_invoice (
    invoice_number text PRIMARY KEY,
    proposal_id uuid NOT NULL UNIQUE REFERENCES project_invoice_proposal,
    legal_entity text NOT NULL REFERENCES legal_entity,
    customer_id uuid NOT NULL,
    invoice_date date NOT NULL,
    currency char(3) NOT NULL,
    net_amount numeric NOT NULL,
    tax_amount numeric NOT NULL,
    total_amount numeric NOT NULL,
    exchange_rate numeric NOT NULL,
    accounting_currency char(3) NOT NULL,
    total_accounting_amount numeric NOT NULL,
    voucher text NOT NULL REFERENCES voucher,
    posted_at timestamptz NOT NULL DEFAULT now()
);
