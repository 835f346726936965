-- What the object owning a row asked for when it goes ('retain' or 'delete'). The operator's
-- file mode reads it to prune an object removed from its directory, whose spec left with the
-- file.
ALTER TABLE organizations
    ADD COLUMN reclaim_policy TEXT NOT NULL DEFAULT 'retain' CHECK (reclaim_policy IN ('retain', 'delete'));
ALTER TABLE repositories
    ADD COLUMN reclaim_policy TEXT NOT NULL DEFAULT 'retain' CHECK (reclaim_policy IN ('retain', 'delete'));
