DROP FUNCTION cache_mac_secret();
DROP TABLE cache_secret;
