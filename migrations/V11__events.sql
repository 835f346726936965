-- Events: a transactional outbox. Every change that matters writes an event row in the
-- transaction that makes the change (triggers, so whoever writes — the data plane, the
-- operator, the management API, the collector, SQL by hand — is covered), and subscriptions
-- deliver them as CloudEvents.
--
-- Order. Each event belongs to a stream: a repository's name, or '' for the organization's own
-- events (API keys). `seq` numbers a stream's events 1, 2, 3… in commit order: it is taken from
-- the stream's row, which stays locked until the writing transaction ends, so a later number is
-- never visible before an earlier one and an aborted transaction gives its number back. A
-- deliverer that keeps, per stream, the last number it delivered therefore never skips an
-- event and never reorders a stream.

CREATE TABLE event_streams (
    org_id      BIGINT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name        TEXT NOT NULL COLLATE "C",      -- repository name; '' for organization events
    last_seq    BIGINT NOT NULL,
    last_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (org_id, name)
);

CREATE TABLE events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id      BIGINT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    stream      TEXT NOT NULL COLLATE "C",
    seq         BIGINT NOT NULL,
    type        TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    data        JSONB NOT NULL,
    UNIQUE (org_id, stream, seq)
);
CREATE INDEX events_org_idx ON events (org_id, id DESC);

-- Where events go. Declared by an EventSubscription object (k8s_uid) or created through the
-- management API. The delivery columns are written by the data-plane node holding the lease.
CREATE TABLE event_subscriptions (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id              BIGINT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    k8s_uid             UUID UNIQUE,
    k8s_namespace       TEXT,
    managed_by          TEXT NOT NULL DEFAULT 'api' CHECK (managed_by IN ('api', 'kubernetes')),
    endpoint            TEXT NOT NULL,
    types               TEXT[] NOT NULL,        -- CloudEvents types delivered
    repositories        TEXT[] NOT NULL DEFAULT '{}',  -- globs relative to the organization; empty: all
    batch_size          INTEGER NOT NULL DEFAULT 1 CHECK (batch_size BETWEEN 1 AND 1000),
    signing_secret      BYTEA,                  -- HMAC-SHA256 key; NULL: unsigned
    start_at            TIMESTAMPTZ NOT NULL DEFAULT now(),  -- events before it are not delivered
    replayed_from       TIMESTAMPTZ,            -- the last replay asked for
    epoch               INTEGER NOT NULL DEFAULT 0,  -- bumped by a replay (fences a deliverer mid-batch)
    lease_owner         TEXT,
    lease_until         TIMESTAMPTZ,
    delivered           BIGINT NOT NULL DEFAULT 0,
    last_delivered_at   TIMESTAMPTZ,
    last_delivered_id   BIGINT,
    failures            INTEGER NOT NULL DEFAULT 0,  -- consecutive failed attempts
    failing_since       TIMESTAMPTZ,
    last_error          TEXT,
    next_attempt_at     TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (org_id, name)
);

-- Per subscription and stream, the last sequence number delivered (or skipped as filtered out).
CREATE TABLE event_cursors (
    subscription_id BIGINT NOT NULL REFERENCES event_subscriptions (id) ON DELETE CASCADE,
    stream          TEXT NOT NULL COLLATE "C",
    delivered_seq   BIGINT NOT NULL,
    PRIMARY KEY (subscription_id, stream)
);

-- Appends an event to a stream of an organization (nothing when the organization is going,
-- e.g. rows removed by its deletion's cascade). No NOTIFY: a notifying transaction takes a
-- database-wide lock through its commit, which would serialize every push; deliverers watch
-- the id sequence instead.
CREATE FUNCTION aerugo_emit_event(p_org BIGINT, p_stream TEXT, p_type TEXT, p_data JSONB)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    next_seq BIGINT;
BEGIN
    IF p_org IS NULL OR NOT EXISTS (SELECT 1 FROM organizations WHERE id = p_org) THEN
        RETURN;
    END IF;
    INSERT INTO event_streams AS s (org_id, name, last_seq, last_at) VALUES (p_org, p_stream, 1, now())
    ON CONFLICT (org_id, name) DO UPDATE SET last_seq = s.last_seq + 1, last_at = now()
    RETURNING last_seq INTO next_seq;
    INSERT INTO events (org_id, stream, seq, type, data) VALUES (p_org, p_stream, next_seq, p_type, p_data);
END $$;

-- The repository row of an event, or nothing when it is being deleted (its own deletion
-- event covers what its cascade removes).
CREATE FUNCTION aerugo_event_repository(p_id BIGINT, OUT org_id BIGINT, OUT name TEXT)
LANGUAGE sql STABLE AS $$
    SELECT org_id, name FROM repositories WHERE id = p_id
$$;

-- The triggers are deferred to commit: a transaction takes its streams' locks last, after every
-- row lock it needs, so a push (which locks blobs and manifests) and the collector (which
-- locks them too, and deletes across repositories) never wait on each other in a cycle.

CREATE FUNCTION aerugo_manifest_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    repo RECORD;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT * INTO repo FROM aerugo_event_repository(NEW.repository_id);
        -- Gone again before commit (or its repository is being deleted): nothing to say.
        IF repo.org_id IS NOT NULL AND EXISTS (SELECT 1 FROM manifests WHERE id = NEW.id) THEN
            PERFORM aerugo_emit_event(repo.org_id, repo.name, 'io.aerugo.manifest.pushed', jsonb_strip_nulls(jsonb_build_object(
                'repository', repo.name, 'digest', NEW.digest, 'mediaType', NEW.media_type,
                'artifactType', NEW.artifact_type, 'subject', NEW.subject_digest, 'size', NEW.total_size)));
        END IF;
        RETURN NULL;
    END IF;
    -- The tags that went with it (their triggers fire after this one) find its digest here.
    PERFORM set_config('aerugo.deleted_manifest_' || OLD.id, OLD.digest, true);
    SELECT * INTO repo FROM aerugo_event_repository(OLD.repository_id);
    IF repo.org_id IS NOT NULL THEN
        PERFORM aerugo_emit_event(repo.org_id, repo.name, 'io.aerugo.manifest.deleted', jsonb_build_object(
            'repository', repo.name, 'digest', OLD.digest, 'mediaType', OLD.media_type));
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER events_manifests_insert AFTER INSERT ON manifests
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION aerugo_manifest_event();
CREATE CONSTRAINT TRIGGER events_manifests_delete AFTER DELETE ON manifests
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION aerugo_manifest_event();

CREATE FUNCTION aerugo_tag_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    repo RECORD;
    digest TEXT;
    previous TEXT;
BEGIN
    IF TG_OP = 'DELETE' THEN
        SELECT * INTO repo FROM aerugo_event_repository(OLD.repository_id);
        SELECT m.digest INTO digest FROM manifests m WHERE m.id = OLD.manifest_id;
        digest := COALESCE(digest, NULLIF(current_setting('aerugo.deleted_manifest_' || OLD.manifest_id, true), ''));
        IF repo.org_id IS NOT NULL THEN
            PERFORM aerugo_emit_event(repo.org_id, repo.name, 'io.aerugo.tag.deleted', jsonb_strip_nulls(jsonb_build_object(
                'repository', repo.name, 'tag', OLD.name, 'digest', digest)));
        END IF;
        RETURN NULL;
    END IF;
    SELECT * INTO repo FROM aerugo_event_repository(NEW.repository_id);
    IF repo.org_id IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT m.digest INTO digest FROM manifests m WHERE m.id = NEW.manifest_id;
    IF TG_OP = 'INSERT' THEN
        PERFORM aerugo_emit_event(repo.org_id, repo.name, 'io.aerugo.tag.created', jsonb_strip_nulls(jsonb_build_object(
            'repository', repo.name, 'tag', NEW.name, 'digest', digest)));
    ELSE
        SELECT m.digest INTO previous FROM manifests m WHERE m.id = OLD.manifest_id;
        previous := COALESCE(previous, NULLIF(current_setting('aerugo.deleted_manifest_' || OLD.manifest_id, true), ''));
        PERFORM aerugo_emit_event(repo.org_id, repo.name, 'io.aerugo.tag.moved', jsonb_strip_nulls(jsonb_build_object(
            'repository', repo.name, 'tag', NEW.name, 'digest', digest, 'previousDigest', previous)));
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER events_tags_insert_delete AFTER INSERT OR DELETE ON tags
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION aerugo_tag_event();
CREATE CONSTRAINT TRIGGER events_tags_move AFTER UPDATE ON tags
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (OLD.manifest_id IS DISTINCT FROM NEW.manifest_id)
    EXECUTE FUNCTION aerugo_tag_event();

CREATE FUNCTION aerugo_blob_link_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    repo RECORD;
BEGIN
    SELECT * INTO repo FROM aerugo_event_repository(OLD.repository_id);
    IF repo.org_id IS NOT NULL THEN
        PERFORM aerugo_emit_event(repo.org_id, repo.name, 'io.aerugo.blob.deleted', jsonb_build_object(
            'repository', repo.name, 'digest', OLD.digest));
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER events_repository_blobs_delete AFTER DELETE ON repository_blobs
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION aerugo_blob_link_event();

CREATE FUNCTION aerugo_repository_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM aerugo_emit_event(NEW.org_id, NEW.name, 'io.aerugo.repository.created', jsonb_build_object(
            'repository', NEW.name, 'visibility', NEW.visibility));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM aerugo_emit_event(OLD.org_id, OLD.name, 'io.aerugo.repository.deleted', jsonb_build_object(
            'repository', OLD.name));
    ELSE
        PERFORM aerugo_emit_event(NEW.org_id, NEW.name, 'io.aerugo.retention.completed',
            jsonb_build_object('repository', NEW.name) || NEW.retention_report);
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER events_repositories_insert_delete AFTER INSERT OR DELETE ON repositories
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION aerugo_repository_event();
-- A retention run records its report only when its outcome changed.
CREATE CONSTRAINT TRIGGER events_repositories_retention AFTER UPDATE OF retention_report ON repositories
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.retention_report IS NOT NULL AND NEW.retention_report IS DISTINCT FROM OLD.retention_report)
    EXECUTE FUNCTION aerugo_repository_event();

CREATE FUNCTION aerugo_api_key_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM aerugo_emit_event(NEW.org_id, '', 'io.aerugo.key.created', jsonb_strip_nulls(jsonb_build_object(
            'keyId', NEW.key_id, 'name', NEW.name, 'scopes', NEW.scopes, 'expiresAt', NEW.expires_at,
            'managedBy', NEW.managed_by)));
    ELSE
        PERFORM aerugo_emit_event(NEW.org_id, '', 'io.aerugo.key.revoked', jsonb_strip_nulls(jsonb_build_object(
            'keyId', NEW.key_id, 'name', NEW.name, 'revokedAt', NEW.revoked_at)));
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER events_api_keys_insert AFTER INSERT ON api_keys
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.org_id IS NOT NULL) EXECUTE FUNCTION aerugo_api_key_event();
CREATE CONSTRAINT TRIGGER events_api_keys_revoke AFTER UPDATE OF revoked_at ON api_keys
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.org_id IS NOT NULL AND OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION aerugo_api_key_event();
