DROP FUNCTION analytics.may_read(text);
