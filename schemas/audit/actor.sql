-- cdc audit actor: who made each source transaction.
--
-- PostgreSQL's WAL does not carry the role that made a change. This installs, in the source database,
-- one function and, on every table of a publication, one statement-level trigger that emits once per
-- transaction a transactional logical message with the prefix `cdc.actor`. The message travels through
-- the replication slot inside its transaction, so it is logged with the transaction's rows and covered
-- by the log's Merkle tree like every other record. Its content is one JSON object:
--
--   {"db_user": session_user, "current_user": current_user, "application_name": ...,
--    "client_addr": inet_client_addr() as text or null (unix socket), "backend_pid": ...,
--    "app_user": current_setting('cdc.app_user', true), null when the application did not set it}
--
-- An application names its end user with `SET LOCAL cdc.app_user = 'alice@example.com'` in the
-- transaction (before its first write, or anywhere before the first statement on a published table).
--
-- The trigger fires BEFORE each statement (so the message precedes the transaction's rows) and emits
-- only at the first statement of the transaction that touches a published table: a transaction-local
-- setting (`cdc.actor_emitted`) remembers that it did, and a rolled-back savepoint rolls back the
-- message and the setting together. At every later statement the function reads the setting and
-- returns. That check is in the function, not in a WHEN clause on the trigger: PostgreSQL 15 rebuilds a
-- trigger's WHEN expression from its stored text at every statement, which costs more than calling
-- this function (tools/bench-actor --variants measures each part). For the same reason the function has
-- no SET search_path clause (a configuration change at every call): it names everything it calls with
-- pg_catalog, and it runs with the caller's rights.
--
-- `cdc init` and `cdc run` with `[audit] actor = true` run this file and then
-- `SELECT cdc_audit.install('<publication>')` (tables that join the publication later get their trigger
-- when `cdc run` first sees them). `cdc init --print-audit-sql --config F` prints both for a DBA who
-- installs them by hand (the role running it must own the published tables). Re-running is safe.
--
-- Removing it (the triggers go with the function they call):
--
--   DROP SCHEMA cdc_audit CASCADE;
--
-- What it proves: the message is what the transaction's own session reported. A role that can run SQL
-- can also emit a `cdc.actor` message of its own or set `cdc.actor_emitted` to suppress the trigger's, so
-- for its own transactions it can claim another app_user; it cannot change the records of other
-- transactions. db_user and backend_pid are what the server knows about the session.

CREATE SCHEMA IF NOT EXISTS cdc_audit;

CREATE OR REPLACE FUNCTION cdc_audit.emit_actor() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER AS $$
DECLARE
    flag pg_catalog.text;
    lsn pg_catalog.pg_lsn;
BEGIN
    IF pg_catalog.current_setting('cdc.actor_emitted', true) OPERATOR(pg_catalog.=) 'on' THEN
        RETURN NULL;
    END IF;
    flag := pg_catalog.set_config('cdc.actor_emitted', 'on', true);
    lsn := pg_catalog.pg_logical_emit_message(true, 'cdc.actor', pg_catalog.json_build_object(
        'db_user', session_user::pg_catalog.text,
        'current_user', current_user::pg_catalog.text,
        'application_name', pg_catalog.current_setting('application_name'),
        'client_addr', pg_catalog.host(pg_catalog.inet_client_addr()),
        'backend_pid', pg_catalog.pg_backend_pid(),
        'app_user', nullif(pg_catalog.current_setting('cdc.app_user', true), '')
    )::pg_catalog.text);
    RETURN NULL;
END
$$;

-- Puts the trigger on every table of the publication (replacing an older version of it); returns the
-- tables that did not have it.
CREATE OR REPLACE FUNCTION cdc_audit.install(publication text) RETURNS SETOF text
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT format('%I.%I', n.nspname, c.relname) AS name,
               NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND g.tgname = 'cdc_actor') AS missing
          FROM pg_publication_tables pt
          JOIN pg_namespace n ON n.nspname = pt.schemaname
          JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
         WHERE pt.pubname = publication
         ORDER BY 1
    LOOP
        EXECUTE format('CREATE OR REPLACE TRIGGER cdc_actor BEFORE INSERT OR UPDATE OR DELETE ON %s '
                       'FOR EACH STATEMENT '
                       'EXECUTE FUNCTION cdc_audit.emit_actor()', t.name);
        EXECUTE format('CREATE OR REPLACE TRIGGER cdc_actor_truncate BEFORE TRUNCATE ON %s '
                       'FOR EACH STATEMENT '
                       'EXECUTE FUNCTION cdc_audit.emit_actor()', t.name);
        IF t.missing THEN
            RETURN NEXT t.name;
        END IF;
    END LOOP;
END
$$;
