-- Every token write bumps tollgate_meta.changes; tell every listening replica at once.
CREATE OR REPLACE FUNCTION tollgate_notify_change() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('tollgate_changes', NEW.v::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER tollgate_meta_changed
    AFTER UPDATE ON tollgate_meta
    FOR EACH ROW EXECUTE FUNCTION tollgate_notify_change();
