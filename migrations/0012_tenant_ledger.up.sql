-- Command ids are scoped to their tenant: the same id from two tenants is two commands.
-- Before, the second tenant's command was taken for a duplicate and dropped.
ALTER TABLE command_ledger ADD COLUMN tenant text;
UPDATE command_ledger l SET tenant = e.tenant FROM events e WHERE e.command_id = l.command_id;
-- An id the log no longer holds (its month detached) keeps its place under no tenant.
UPDATE command_ledger SET tenant = '' WHERE tenant IS NULL;
ALTER TABLE command_ledger
    ALTER COLUMN tenant SET NOT NULL,
    DROP CONSTRAINT command_ledger_pkey,
    ADD PRIMARY KEY (tenant, command_id);
