-- The write side's registry: which tenants exist and which users are registered in them.
-- Commands are decided against it in the same transaction that appends their events.
CREATE TABLE tenants (
    tenant     text        PRIMARY KEY,
    name       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenants_slug CHECK (tenant ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    CONSTRAINT tenants_name_length CHECK (char_length(name) BETWEEN 1 AND 200)
);

CREATE TABLE users (
    tenant        text        NOT NULL REFERENCES tenants (tenant),
    user_id       text        NOT NULL,
    email         text        NOT NULL,
    name          text,
    registered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, user_id),
    CONSTRAINT users_user_id_length CHECK (char_length(user_id) BETWEEN 1 AND 128),
    CONSTRAINT users_name_length CHECK (char_length(name) BETWEEN 1 AND 200),
        -- The model's rule (src/model/fields.rs) in locale-independent terms: one @, 1-64
    -- characters before it, a dotted domain of non-empty labels after it, no ASCII space or
    -- control character, <= 254. The model is stricter (Unicode white space and controls),
    -- so this backstop never refuses what the model accepts.
    CONSTRAINT users_email_format CHECK (char_length(email) <= 254 AND email ~
        '^[^@\x01-\x20\x7f]{1,64}@[^@\x01-\x20\x7f.]+(\.[^@\x01-\x20\x7f.]+)+$')
);
