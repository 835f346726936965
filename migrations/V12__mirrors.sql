-- Pull-through mirrors. A Mirror object fills one organization with what an upstream registry
-- serves: a miss is fetched from the upstream, verified and stored as ordinary manifests and
-- blobs of that organization, so every node serves it afterwards.
CREATE TABLE mirrors (
    id                      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id                  BIGINT NOT NULL UNIQUE REFERENCES organizations (id) ON DELETE CASCADE,
    name                    TEXT NOT NULL,
    k8s_uid                 UUID NOT NULL UNIQUE,
    k8s_namespace           TEXT NOT NULL,
    upstream                TEXT NOT NULL,              -- base URL, no trailing slash
    registry_hosts          TEXT[] NOT NULL DEFAULT '{}',  -- `?ns=` values routed here
    username                TEXT,                       -- upstream credentials (from a Secret)
    password                TEXT,
    repositories            TEXT[] NOT NULL DEFAULT '{}',  -- upstream repository globs; empty: all
    stale_after_seconds     BIGINT NOT NULL CHECK (stale_after_seconds >= 0),
    serve_stale_on_error    BOOLEAN NOT NULL DEFAULT true,
    max_bytes               BIGINT CHECK (max_bytes IS NULL OR max_bytes > 0),
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- When a mirrored tag was last confirmed against the upstream (or fetched from it).
CREATE TABLE mirror_tags (
    repository_id   BIGINT NOT NULL,
    name            TEXT NOT NULL COLLATE "C",
    checked_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (repository_id, name),
    FOREIGN KEY (repository_id, name) REFERENCES tags (repository_id, name) ON DELETE CASCADE
);

-- Who may pull a repository a mirror has not fetched yet depends on the mirror and on its
-- organization's default visibility: data-plane caches drop their decisions when either changes.
CREATE TRIGGER mirrors_changed AFTER INSERT OR DELETE OR UPDATE OF org_id ON mirrors
    FOR EACH ROW EXECUTE FUNCTION aerugo_notify_change();
CREATE TRIGGER organizations_default_visibility_changed AFTER UPDATE ON organizations
    FOR EACH ROW WHEN (OLD.default_visibility IS DISTINCT FROM NEW.default_visibility)
    EXECUTE FUNCTION aerugo_notify_change();
