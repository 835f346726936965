-- Change notifications for data-plane caches. Every change to state that decides who may
-- pull what, or which repositories exist, notifies channel aerugo_invalidate with the table's
-- name, whoever makes it (operator, management API, SQL by hand). Only rows that really
-- change notify (reconciles rewrite unchanged rows), and columns written on every push
-- (repositories.last_push_at, api_keys.last_used_at) are left out, so pulls stay cached across
-- pushes; pushes invalidate their own repository directly. Postgres folds identical
-- notifications of one transaction into one.

CREATE FUNCTION aerugo_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('aerugo_invalidate', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER organizations_added_or_removed AFTER INSERT OR DELETE ON organizations
    FOR EACH ROW EXECUTE FUNCTION aerugo_notify_change();
CREATE TRIGGER organizations_changed AFTER UPDATE ON organizations
    FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name
       OR OLD.bucket IS DISTINCT FROM NEW.bucket
       OR OLD.auto_create_repos IS DISTINCT FROM NEW.auto_create_repos
       OR OLD.deleted_at IS DISTINCT FROM NEW.deleted_at)
    EXECUTE FUNCTION aerugo_notify_change();

CREATE TRIGGER org_members_added_or_removed AFTER INSERT OR DELETE ON org_members
    FOR EACH ROW EXECUTE FUNCTION aerugo_notify_change();
CREATE TRIGGER org_members_changed AFTER UPDATE ON org_members
    FOR EACH ROW WHEN (OLD.role IS DISTINCT FROM NEW.role
       OR OLD.user_id IS DISTINCT FROM NEW.user_id
       OR OLD.org_id IS DISTINCT FROM NEW.org_id)
    EXECUTE FUNCTION aerugo_notify_change();

CREATE TRIGGER repositories_added_or_removed AFTER INSERT OR DELETE ON repositories
    FOR EACH ROW EXECUTE FUNCTION aerugo_notify_change();
CREATE TRIGGER repositories_changed AFTER UPDATE ON repositories
    FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name
       OR OLD.org_id IS DISTINCT FROM NEW.org_id
       OR OLD.visibility IS DISTINCT FROM NEW.visibility
       OR OLD.deleted_at IS DISTINCT FROM NEW.deleted_at)
    EXECUTE FUNCTION aerugo_notify_change();

CREATE TRIGGER repository_grants_added_or_removed AFTER INSERT OR DELETE ON repository_grants
    FOR EACH ROW EXECUTE FUNCTION aerugo_notify_change();
CREATE TRIGGER repository_grants_changed AFTER UPDATE ON repository_grants
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION aerugo_notify_change();

CREATE TRIGGER api_keys_added_or_removed AFTER INSERT OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION aerugo_notify_change();
CREATE TRIGGER api_keys_changed AFTER UPDATE ON api_keys
    FOR EACH ROW WHEN (OLD.scopes IS DISTINCT FROM NEW.scopes
       OR OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
       OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
       OR OLD.owner_user_id IS DISTINCT FROM NEW.owner_user_id
       OR OLD.org_id IS DISTINCT FROM NEW.org_id)
    EXECUTE FUNCTION aerugo_notify_change();

CREATE TRIGGER users_added_or_removed AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION aerugo_notify_change();
CREATE TRIGGER users_changed AFTER UPDATE ON users
    FOR EACH ROW WHEN (OLD.disabled IS DISTINCT FROM NEW.disabled
       OR OLD.is_site_admin IS DISTINCT FROM NEW.is_site_admin
       OR OLD.password_hash IS DISTINCT FROM NEW.password_hash)
    EXECUTE FUNCTION aerugo_notify_change();
