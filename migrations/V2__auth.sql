-- Aerugo metadata schema, version 2: what authentication and the management API need.

-- Audit events name the organization they concern (so its admins can read them), the source
-- address and whether the request was carried out or denied.
ALTER TABLE audit_events
    ADD COLUMN org_id  BIGINT REFERENCES organizations (id) ON DELETE SET NULL,
    ADD COLUMN source  TEXT,
    ADD COLUMN outcome TEXT NOT NULL DEFAULT 'ok' CHECK (outcome IN ('ok', 'denied'));
CREATE INDEX audit_events_org_idx ON audit_events (org_id, id DESC) WHERE org_id IS NOT NULL;

-- Failed password attempts per user and per source address, shared by every node, so the
-- login limit holds whichever node a guess reaches. A row is one fixed window.
CREATE TABLE login_failures (
    key             TEXT PRIMARY KEY,           -- 'user:<name>' or 'addr:<address>'
    window_start    TIMESTAMPTZ NOT NULL,
    failures        INTEGER NOT NULL
);

CREATE INDEX api_keys_owner_idx ON api_keys (owner_user_id);
CREATE INDEX api_keys_org_idx ON api_keys (org_id);
CREATE INDEX api_keys_revoked_idx ON api_keys (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX repository_grants_subject_idx ON repository_grants (subject_kind, subject_id);

-- Names of organizations follow the first segment of a repository name.
ALTER TABLE organizations ADD CONSTRAINT organizations_name_format
    CHECK (name ~ '^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$') NOT VALID;
-- Users log in by name; keep names simple and distinct from API-key syntax.
ALTER TABLE users ADD CONSTRAINT users_username_format
    CHECK (username ~ '^[a-z0-9][a-z0-9._-]{0,63}$') NOT VALID;
