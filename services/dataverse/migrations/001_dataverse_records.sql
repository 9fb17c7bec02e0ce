-- Dataverse (project side) records, named as Dataverse names them (domain.md).
-- Money and quantities are numeric (exact Decimal), dates are dates, ids are uuids.
-- Option-set values (transaction type, billing status, ...) are the schemas.vocabulary values.

-- Customers.
CREATE TABLE account (
    account_id uuid PRIMARY KEY,
    name text NOT NULL,
    legal_entity text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE project (
    project_id uuid PRIMARY KEY,
    name text NOT NULL,
    legal_entity text NOT NULL,
    customer_id uuid NOT NULL REFERENCES account (account_id),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE project_contract (
    contract_id uuid PRIMARY KEY,
    name text NOT NULL,
    legal_entity text NOT NULL,
    customer_id uuid NOT NULL REFERENCES account (account_id),
    currency char(3) NOT NULL,
    payment_terms text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One project, one billing method, one price list (default rate + per role rates as
-- {"role": "rate"} with the rate as a decimal string).
CREATE TABLE contract_line (
    contract_line_id uuid PRIMARY KEY,
    contract_id uuid NOT NULL REFERENCES project_contract (contract_id),
    line_number integer NOT NULL,
    project_id uuid NOT NULL REFERENCES project (project_id),
    name text NOT NULL,
    billing_method text NOT NULL,
    default_bill_rate numeric NOT NULL,
    default_cost_rate numeric NOT NULL,
    bill_rates jsonb NOT NULL DEFAULT '{}',
    cost_rates jsonb NOT NULL DEFAULT '{}',
    UNIQUE (contract_id, line_number)
);

CREATE TABLE milestone (
    milestone_id uuid PRIMARY KEY,
    contract_id uuid NOT NULL REFERENCES project_contract (contract_id),
    contract_line_id uuid NOT NULL REFERENCES contract_line (contract_line_id),
    project_id uuid NOT NULL REFERENCES project (project_id),
    name text NOT NULL,
    amount numeric NOT NULL,
    milestone_date date NOT NULL,
    invoice_status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Approved time, expense and material entries: the transaction origin of their actuals.
CREATE TABLE project_entry (
    entry_id uuid PRIMARY KEY,
    transaction_class text NOT NULL,
    project_id uuid NOT NULL REFERENCES project (project_id),
    contract_line_id uuid NOT NULL REFERENCES contract_line (contract_line_id),
    quantity numeric NOT NULL,
    billable_quantity numeric NOT NULL,
    cost_rate numeric NOT NULL,
    bill_rate numeric NOT NULL,
    document_date date NOT NULL,
    resource text,
    role text,
    approved_at timestamptz NOT NULL DEFAULT now()
);

-- msdyn_actual: append-only except billing status, adjustment status, the backlog flag and
-- the accounting detail Finance writes back (voucher = msdyn_externalreference, ...).
-- `seq` keeps creation order for reads.
CREATE TABLE msdyn_actual (
    actual_id uuid PRIMARY KEY,
    seq bigserial NOT NULL UNIQUE,
    transaction_type text NOT NULL,
    transaction_class text NOT NULL,
    billing_type text NOT NULL,
    billing_status text,
    adjustment_status text NOT NULL,
    quantity numeric NOT NULL,
    unit_price numeric NOT NULL,
    amount numeric NOT NULL,
    currency char(3) NOT NULL,
    document_date date NOT NULL,
    accounting_date date NOT NULL,
    legal_entity text NOT NULL,
    project_id uuid NOT NULL REFERENCES project (project_id),
    contract_id uuid REFERENCES project_contract (contract_id),
    contract_line_id uuid REFERENCES contract_line (contract_line_id),
    customer_id uuid REFERENCES account (account_id),
    resource text,
    role text,
    invoice_id uuid,
    skip_sync boolean NOT NULL DEFAULT false,
    reverses_actual_id uuid REFERENCES msdyn_actual (actual_id),
    ready_to_invoice boolean NOT NULL DEFAULT false,
    milestone_id uuid REFERENCES milestone (milestone_id),
    entry_id uuid REFERENCES project_entry (entry_id),
    billing_method text,
    unbilled_actual_id uuid REFERENCES msdyn_actual (actual_id),
    voucher text,
    voucher_date date,
    exchange_rate numeric,
    accounting_currency_amount numeric,
    tax_amount numeric,
    created_at timestamptz NOT NULL DEFAULT now(),
    accounting_updated_at timestamptz
);
CREATE INDEX msdyn_actual_project ON msdyn_actual (project_id);
CREATE INDEX msdyn_actual_contract ON msdyn_actual (contract_id);
CREATE INDEX msdyn_actual_invoice ON msdyn_actual (invoice_id);
CREATE INDEX msdyn_actual_entry ON msdyn_actual (entry_id);

CREATE SEQUENCE proforma_invoice_number;

CREATE TABLE proforma_invoice (
    invoice_id uuid PRIMARY KEY,
    invoice_number text NOT NULL UNIQUE,
    contract_id uuid NOT NULL REFERENCES project_contract (contract_id),
    customer_id uuid NOT NULL REFERENCES account (account_id),
    currency char(3) NOT NULL,
    legal_entity text NOT NULL,
    invoice_date date NOT NULL,
    status text NOT NULL,
    tax_amount numeric NOT NULL DEFAULT 0,
    is_corrective boolean NOT NULL DEFAULT false,
    corrects_invoice_id uuid REFERENCES proforma_invoice (invoice_id),
    -- Billed-sales actuals Finance must expect; set on confirmation.
    expected_billed_lines integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    confirmed_at timestamptz
);
CREATE INDEX proforma_invoice_contract ON proforma_invoice (contract_id);

-- One invoice line per contract line. Lines and details of a draft are rewritten as a whole
-- when the draft changes, so they cascade with the invoice.
CREATE TABLE invoice_line (
    line_id uuid PRIMARY KEY,
    invoice_id uuid NOT NULL REFERENCES proforma_invoice (invoice_id) ON DELETE CASCADE,
    line_number integer NOT NULL,
    contract_line_id uuid NOT NULL REFERENCES contract_line (contract_line_id),
    UNIQUE (invoice_id, line_number)
);

CREATE TABLE invoice_line_detail (
    detail_id uuid PRIMARY KEY,
    line_id uuid NOT NULL REFERENCES invoice_line (line_id) ON DELETE CASCADE,
    detail_number integer NOT NULL,
    transaction_class text NOT NULL,
    quantity numeric NOT NULL,
    unit_price numeric NOT NULL,
    billing_type text NOT NULL,
    actual_id uuid REFERENCES msdyn_actual (actual_id),
    milestone_id uuid REFERENCES milestone (milestone_id),
    original_quantity numeric,
    billed_actual_id uuid REFERENCES msdyn_actual (actual_id),
    resource text,
    role text,
    UNIQUE (line_id, detail_number)
);

-- Accounting detail from Finance that could not be applied (unknown actual, ...): kept with
-- its reason where a person can see it (domain.md, rule 8).
CREATE TABLE accounting_update_refused (
    id bigserial PRIMARY KEY,
    event_id uuid NOT NULL,
    source_event_id uuid,
    actual_id uuid NOT NULL,
    reason text NOT NULL,
    record jsonb NOT NULL,
    refused_at timestamptz NOT NULL DEFAULT now()
);
