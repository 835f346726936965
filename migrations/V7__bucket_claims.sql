-- Who holds each S3 bucket the registry writes to. A bucket is a Registry's (org_id NULL: its
-- blobs live there, for every organization without a dedicated bucket; several Registry
-- objects may share one) or exactly one organization's dedicated bucket. An organization can
-- therefore never name the registry's bucket or another organization's: its bucket policy
-- would land on a bucket it does not own, and the collector would delete objects another
-- tenant still references. The operator claims the row before it makes any S3 call.
CREATE TABLE bucket_claims (
    bucket     TEXT PRIMARY KEY,
    org_id     BIGINT UNIQUE REFERENCES organizations (id) ON DELETE CASCADE,
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Buckets organizations already name: the oldest organization keeps each; any other that
-- names the same bucket is refused at its next reconcile.
INSERT INTO bucket_claims (bucket, org_id)
SELECT DISTINCT ON (bucket) bucket, id FROM organizations WHERE bucket IS NOT NULL ORDER BY bucket, id;
