-- Rows declared by Kubernetes objects (the operator), version 3.
-- An ApiKey object owns several key rows while a rotation overlaps (the old key keeps working
-- until its overlap ends), so k8s_uid is no longer unique on api_keys.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_k8s_uid_key;
CREATE INDEX api_keys_k8s_uid_idx ON api_keys (k8s_uid) WHERE k8s_uid IS NOT NULL;

-- A Repository deleted with reclaimPolicy Retain leaves its row orphaned; a new object of the
-- same name in the same namespace adopts it.
ALTER TABLE repositories ADD COLUMN k8s_namespace TEXT;
ALTER TABLE repositories ADD COLUMN orphaned_at TIMESTAMPTZ;
