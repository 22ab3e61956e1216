-- A dead letter can be resolved by a redrive: its command decided again against today's
-- registry and accepted ('redriven'), or found already applied ('duplicate'). `redrives`
-- counts the attempts; one still refused keeps its row, with the new reason.
ALTER TABLE dead_letters
    ADD COLUMN resolution  text,
    ADD COLUMN resolved_at timestamptz,
    ADD COLUMN redrives    integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT dead_letters_resolution_known
        CHECK (resolution IN ('redriven', 'duplicate')),
    ADD CONSTRAINT dead_letters_resolved_together
        CHECK ((resolution IS NULL) = (resolved_at IS NULL));
-- What a redrive looks for: the unresolved ones, by reason, in arrival order.
CREATE INDEX dead_letters_unresolved ON dead_letters (reason, received_at, id)
    WHERE resolved_at IS NULL;
