CREATE TABLE tenants (tenant text, name text); CREATE TABLE users (tenant text, user_id text, email text);
