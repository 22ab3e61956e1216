DROP FUNCTION ingest_view(text, text, text[], uuid[], text[], text[]);
