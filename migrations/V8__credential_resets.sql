-- When a user's credentials were last reset. Tokens are verified offline, so a password change
-- or reset must name the moment before which that user's password-derived tokens (sessions,
-- refresh and access tokens) stop working; deleting or disabling a user does so for every token,
-- its API keys' included (`all_tokens`). Kept by username, so a deleted user's tokens stay dead
-- after the row is gone. Rows older than the longest token lifetime are ignored.
CREATE TABLE credential_resets (
    username   TEXT PRIMARY KEY,
    reset_at   TIMESTAMPTZ NOT NULL,
    all_tokens BOOLEAN NOT NULL DEFAULT false
);
