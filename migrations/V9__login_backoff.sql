-- Failed logins are limited per (user, source address) with a backoff, and per source address
-- with a fixed window. The old per-user rows let anyone lock a named user out by failing with
-- their name from anywhere: they go. `last_failure_at` times the backoff.
DELETE FROM login_failures WHERE key LIKE 'user:%';
ALTER TABLE login_failures ADD COLUMN last_failure_at TIMESTAMPTZ NOT NULL DEFAULT now();
COMMENT ON COLUMN login_failures.key IS '''user:<name>@<address>'' (backoff) or ''addr:<address>'' (window)';
