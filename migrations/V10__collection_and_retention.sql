-- Storage is given back: untagged manifests are collected, retention policies act, digests
-- that running Pods use are protected.

-- The collectors' settings and state, one row. `review_delay` is how long a queued digest or
-- manifest waits before it is reviewed (the operator writes its --gc-review-delay here at start,
-- so the triggers of every writer use it); `in_use_synced_at` is when the operator last wrote
-- the complete set of digests running Pods use (NULL: never, so nothing is known to be in use).
CREATE TABLE gc_settings (
    id                  BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    review_delay        INTERVAL NOT NULL DEFAULT interval '1 day' CHECK (review_delay >= interval '0'),
    in_use_synced_at    TIMESTAMPTZ
);
INSERT INTO gc_settings DEFAULT VALUES;

CREATE FUNCTION gc_review_after() RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT now() + COALESCE((SELECT review_delay FROM gc_settings), interval '1 day')
$$;
ALTER TABLE gc_blob_review_queue ALTER COLUMN review_after SET DEFAULT gc_review_after();
ALTER TABLE gc_manifest_review_queue ALTER COLUMN review_after SET DEFAULT gc_review_after();

-- Digests that Pods of the cluster reference (`image: …@sha256:…`, or the `imageID` a running
-- container reports): never collected, whatever a policy says. Written by the operator.
CREATE TABLE digests_in_use (
    digest      TEXT PRIMARY KEY,
    pods        INTEGER NOT NULL CHECK (pods > 0),
    example     TEXT NOT NULL,                  -- <namespace>/<pod> of one of them
    seen_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- When a manifest was last pulled (GET or HEAD), written in batches by the data plane.
ALTER TABLE manifests ADD COLUMN last_pulled_at TIMESTAMPTZ;

-- An organization's default retention policy (a repository's own replaces it whole), and the
-- last retention run of a repository (what it deleted, or would have).
ALTER TABLE organizations ADD COLUMN retention JSONB;
ALTER TABLE repositories ADD COLUMN retention_report JSONB;

-- A manifest that is committed without a tag (a platform manifest pushed before its index, a
-- referrer, a push by digest) is queued for review at commit: by then an index or a tag may
-- hold it, which the review checks.
CREATE FUNCTION gc_enqueue_new_manifest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM manifests WHERE id = NEW.id)
       AND NOT EXISTS (SELECT 1 FROM tags WHERE manifest_id = NEW.id) THEN
        INSERT INTO gc_manifest_review_queue (repository_id, manifest_id, event)
        VALUES (NEW.repository_id, NEW.id, 'manifest_upload')
        ON CONFLICT (repository_id, manifest_id) DO UPDATE SET review_after = EXCLUDED.review_after;
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER gc_manifests_insert AFTER INSERT ON manifests
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION gc_enqueue_new_manifest();

-- An index that goes releases the manifests it listed.
CREATE FUNCTION gc_enqueue_released_child() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO gc_manifest_review_queue (repository_id, manifest_id, event)
    SELECT repository_id, id, 'index_delete' FROM manifests WHERE id = OLD.child_id
    ON CONFLICT (repository_id, manifest_id) DO UPDATE SET review_after = EXCLUDED.review_after;
    RETURN NULL;
END $$;
CREATE TRIGGER gc_manifest_references_delete AFTER DELETE ON manifest_references
    FOR EACH ROW EXECUTE FUNCTION gc_enqueue_released_child();

-- A subject that goes releases its referrers (signatures, SBOMs, attestations).
CREATE FUNCTION gc_enqueue_orphaned_referrers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO gc_manifest_review_queue (repository_id, manifest_id, event)
    SELECT repository_id, id, 'subject_delete' FROM manifests
     WHERE repository_id = OLD.repository_id AND subject_digest = OLD.digest
    ON CONFLICT (repository_id, manifest_id) DO UPDATE SET review_after = EXCLUDED.review_after;
    RETURN NULL;
END $$;
CREATE TRIGGER gc_manifests_delete AFTER DELETE ON manifests
    FOR EACH ROW EXECUTE FUNCTION gc_enqueue_orphaned_referrers();

-- Manifests that were untagged before collection existed are reviewed once.
INSERT INTO gc_manifest_review_queue (repository_id, manifest_id, event)
SELECT m.repository_id, m.id, 'sweep' FROM manifests m
 WHERE NOT EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)
ON CONFLICT (repository_id, manifest_id) DO NOTHING;

CREATE INDEX gc_manifest_review_manifest_idx ON gc_manifest_review_queue (manifest_id);
