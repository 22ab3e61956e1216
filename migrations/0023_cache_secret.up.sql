-- The secret cache entries are sealed with (HMAC-SHA256 over key and value), so a reader
-- never serves an entry the store did not write, even under a mistaken NATS permission.
-- The log's owner keeps it; the HTTP API's logins read it through `cache_mac_secret()`; SQL
-- readers cannot.
CREATE TABLE cache_secret (
    only_one boolean PRIMARY KEY DEFAULT true CHECK (only_one),
    secret   bytea   NOT NULL CHECK (length(secret) = 32)
);
-- 32 bytes from two strong random UUIDs (gen_random_uuid draws on the server's CSPRNG).
INSERT INTO cache_secret (secret)
VALUES (sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')));
REVOKE ALL ON cache_secret FROM PUBLIC;

CREATE FUNCTION cache_mac_secret() RETURNS bytea
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
RETURN (SELECT secret FROM cache_secret);
REVOKE ALL ON FUNCTION cache_mac_secret() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cache_mac_secret() TO activity_http_reader;
