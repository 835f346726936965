-- Aerugo metadata schema, version 1: the whole system (DESIGN.md §3).
-- Forward-only; applied by `aerugo-dataplane migrate` (or `aerugo-operator migrate`).

CREATE TABLE users (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    email           TEXT,
    password_hash   TEXT,                       -- argon2id PHC string; NULL = no password login
    is_site_admin   BOOLEAN NOT NULL DEFAULT false,
    disabled        BOOLEAN NOT NULL DEFAULT false,
    managed_by      TEXT NOT NULL DEFAULT 'api' CHECK (managed_by IN ('api', 'kubernetes', 'system')),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE organizations (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,   -- registry-wide; first segment of repository names
    display_name        TEXT,
    k8s_uid             UUID UNIQUE,            -- the Organization object that owns this row
    k8s_namespace       TEXT,
    managed_by          TEXT NOT NULL DEFAULT 'api' CHECK (managed_by IN ('api', 'kubernetes', 'system')),
    quota_bytes         BIGINT CHECK (quota_bytes IS NULL OR quota_bytes >= 0),
    bucket              TEXT,                   -- dedicated bucket, NULL = the registry's bucket
    storage_prefix      TEXT,
    auto_create_repos   BOOLEAN NOT NULL DEFAULT true,
    default_visibility  TEXT NOT NULL DEFAULT 'private' CHECK (default_visibility IN ('private', 'public')),
    orphaned_at         TIMESTAMPTZ,            -- owner deleted with reclaimPolicy Retain
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at          TIMESTAMPTZ
);

CREATE TABLE org_members (
    org_id      BIGINT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX org_members_user_idx ON org_members (user_id);

-- `name` is the full repository path (`org/team/app`): the key every /v2/ request resolves.
CREATE TABLE repositories (
    id                      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id                  BIGINT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name                    TEXT NOT NULL UNIQUE COLLATE "C",
    visibility              TEXT NOT NULL DEFAULT 'private' CHECK (visibility IN ('private', 'public')),
    k8s_uid                 UUID UNIQUE,
    managed_by              TEXT NOT NULL DEFAULT 'api' CHECK (managed_by IN ('api', 'kubernetes', 'system')),
    immutable_tag_patterns  TEXT[] NOT NULL DEFAULT '{}',
    retention               JSONB,
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_push_at            TIMESTAMPTZ,
    deleted_at              TIMESTAMPTZ
);
CREATE INDEX repositories_org_idx ON repositories (org_id);

CREATE TABLE api_keys (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_id          TEXT NOT NULL UNIQUE,       -- public part of ak_<key id>_<secret>
    key_hash        BYTEA NOT NULL,             -- SHA-256 of the secret part
    name            TEXT,
    owner_user_id   BIGINT REFERENCES users (id) ON DELETE CASCADE,
    org_id          BIGINT REFERENCES organizations (id) ON DELETE CASCADE,
    scopes          JSONB NOT NULL DEFAULT '[]',  -- [{"repositories": glob, "actions": [...]}]
    expires_at      TIMESTAMPTZ,
    last_used_at    TIMESTAMPTZ,
    revoked_at      TIMESTAMPTZ,
    k8s_uid         UUID UNIQUE,
    managed_by      TEXT NOT NULL DEFAULT 'api' CHECK (managed_by IN ('api', 'kubernetes', 'system')),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (owner_user_id IS NOT NULL OR org_id IS NOT NULL)
);

CREATE TABLE repository_grants (
    repository_id   BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    subject_kind    TEXT NOT NULL CHECK (subject_kind IN ('user', 'api_key')),
    subject_id      BIGINT NOT NULL,
    access          TEXT NOT NULL CHECK (access IN ('pull', 'push', 'delete', 'admin')),
    PRIMARY KEY (repository_id, subject_kind, subject_id)
);

-- Content-addressed blobs, stored once whatever the number of repositories linking them.
CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    size        BIGINT NOT NULL CHECK (size >= 0),
    storage_key TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Which repository may read which blob: pushed or mounted there.
CREATE TABLE repository_blobs (
    repository_id   BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest          TEXT NOT NULL REFERENCES blobs (digest),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX repository_blobs_digest_idx ON repository_blobs (digest);

CREATE TABLE manifests (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repository_id   BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest          TEXT NOT NULL,
    media_type      TEXT NOT NULL,
    artifact_type   TEXT,
    subject_digest  TEXT,
    config_digest   TEXT,
    annotations     JSONB,
    payload         BYTEA NOT NULL,             -- byte-exact as pushed
    total_size      BIGINT NOT NULL,            -- payload + referenced blobs
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (repository_id, digest)
);
CREATE INDEX manifests_subject_idx ON manifests (repository_id, subject_digest) WHERE subject_digest IS NOT NULL;

CREATE TABLE manifest_blobs (
    manifest_id BIGINT NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
    digest      TEXT NOT NULL REFERENCES blobs (digest),
    PRIMARY KEY (manifest_id, digest)
);
CREATE INDEX manifest_blobs_digest_idx ON manifest_blobs (digest);

-- An index and the manifests it lists; a listed child cannot be deleted under its parent.
CREATE TABLE manifest_references (
    parent_id   BIGINT NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
    child_id    BIGINT NOT NULL REFERENCES manifests (id) ON DELETE RESTRICT,
    PRIMARY KEY (parent_id, child_id)
);
CREATE INDEX manifest_references_child_idx ON manifest_references (child_id);

CREATE TABLE tags (
    repository_id   BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    name            TEXT NOT NULL COLLATE "C",
    manifest_id     BIGINT NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, name)
);
CREATE INDEX tags_manifest_idx ON tags (manifest_id);

-- Resumable upload sessions: everything a different node needs to continue one.
CREATE TABLE uploads (
    id              UUID PRIMARY KEY,
    repository_id   BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    received_bytes  BIGINT NOT NULL DEFAULT 0,
    hash_state      BYTEA NOT NULL,             -- serialized SHA-256 state after received_bytes
    store_state     JSONB NOT NULL,             -- backend state: multipart upload id, part list
    pending         BYTEA NOT NULL DEFAULT '',  -- bytes not yet written (below the S3 part minimum)
    version         BIGINT NOT NULL DEFAULT 0,  -- optimistic lock between concurrent chunks
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX uploads_expires_idx ON uploads (expires_at);

CREATE TABLE audit_events (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  JSONB
);
CREATE INDEX audit_events_at_idx ON audit_events (at);

-- Online GC review queues (after GitLab's container registry): triggers enqueue what may have
-- become unreferenced; a collector drains them with FOR UPDATE SKIP LOCKED.
CREATE TABLE gc_blob_review_queue (
    digest          TEXT PRIMARY KEY,
    review_after    TIMESTAMPTZ NOT NULL DEFAULT now() + interval '1 day',
    event           TEXT NOT NULL
);
CREATE INDEX gc_blob_review_after_idx ON gc_blob_review_queue (review_after);

CREATE TABLE gc_manifest_review_queue (
    repository_id   BIGINT NOT NULL,
    manifest_id     BIGINT NOT NULL,
    review_after    TIMESTAMPTZ NOT NULL DEFAULT now() + interval '1 day',
    event           TEXT NOT NULL,
    PRIMARY KEY (repository_id, manifest_id)
);
CREATE INDEX gc_manifest_review_after_idx ON gc_manifest_review_queue (review_after);

CREATE FUNCTION gc_enqueue_blob() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO gc_blob_review_queue (digest, event) VALUES (OLD.digest, TG_TABLE_NAME || '_delete')
    ON CONFLICT (digest) DO UPDATE SET review_after = EXCLUDED.review_after, event = EXCLUDED.event;
    RETURN OLD;
END $$;

CREATE TRIGGER gc_repository_blobs_delete AFTER DELETE ON repository_blobs
    FOR EACH ROW EXECUTE FUNCTION gc_enqueue_blob();
CREATE TRIGGER gc_manifest_blobs_delete AFTER DELETE ON manifest_blobs
    FOR EACH ROW EXECUTE FUNCTION gc_enqueue_blob();

CREATE FUNCTION gc_enqueue_untagged_manifest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.manifest_id <> OLD.manifest_id THEN
        INSERT INTO gc_manifest_review_queue (repository_id, manifest_id, event)
        VALUES (OLD.repository_id, OLD.manifest_id, 'tag_' || lower(TG_OP))
        ON CONFLICT (repository_id, manifest_id) DO UPDATE SET review_after = EXCLUDED.review_after;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER gc_tags_change AFTER UPDATE OR DELETE ON tags
    FOR EACH ROW EXECUTE FUNCTION gc_enqueue_untagged_manifest();
