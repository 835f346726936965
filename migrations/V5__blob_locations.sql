-- Where a blob's bytes are. A blob (digest, size) is known once registry-wide; its object is
-- stored once per location that needs it: '' is the registry's own store, any other value the
-- dedicated bucket of an organization (organizations.bucket). A repository reads its blobs
-- from its organization's location, so two organizations on different locations sharing a
-- layer hold one object each, and a mount across locations copies the object.
CREATE TABLE blob_objects (
    digest      TEXT NOT NULL REFERENCES blobs (digest) ON DELETE CASCADE,
    location    TEXT NOT NULL,
    storage_key TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (digest, location)
);
INSERT INTO blob_objects (digest, location, storage_key) SELECT digest, '', storage_key FROM blobs;
ALTER TABLE blobs DROP COLUMN storage_key;

-- The location an upload session writes to, fixed when it opens.
ALTER TABLE uploads ADD COLUMN location TEXT NOT NULL DEFAULT '';

