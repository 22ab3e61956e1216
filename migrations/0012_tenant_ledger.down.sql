-- Fails if two tenants used the same id: that history cannot be folded back into one key.
ALTER TABLE command_ledger DROP CONSTRAINT command_ledger_pkey;
ALTER TABLE command_ledger ADD PRIMARY KEY (command_id);
ALTER TABLE command_ledger DROP COLUMN tenant;
