/*
 * gmail_ingest--1.0--1.1.sql: what ALTER EXTENSION gmail_ingest UPDATE
 * changes in a 1.0 database; every row is kept.  Each part has its twin in
 * sql/gmail_ingest.sql (the fresh install), and test/scripts/upgrade.sh
 * proves that both give the same catalogs.
 */

\echo Use "ALTER EXTENSION gmail_ingest UPDATE TO '1.1'" to load this file. \quit

------------------------------------------------------------------------
-- Dumps keep the identity sequences' positions (1.0 restored databases
-- could not write); databases restored from 1.0 dumps are repaired.
------------------------------------------------------------------------
-- pg_dump keeps a sequence's position only when it is marked too: without
-- it a restored database hands out ids that are already taken.
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.mailboxes', 'id'), '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.mail_threads', 'id'), '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.mail_messages', 'id'), '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.mail_attachments', 'id'), '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.sync_runs', 'id'), '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.ledger', 'id'), '');
COMMENT ON SEQUENCE @extschema@.mailboxes_id_seq IS
  'Identity of mailboxes.id; registered with pg_extension_config_dump so a restore goes on after the largest id';
COMMENT ON SEQUENCE @extschema@.mail_threads_id_seq IS
  'Identity of mail_threads.id; registered with pg_extension_config_dump so a restore goes on after the largest id';
COMMENT ON SEQUENCE @extschema@.mail_messages_id_seq IS
  'Identity of mail_messages.id; registered with pg_extension_config_dump so a restore goes on after the largest id';
COMMENT ON SEQUENCE @extschema@.mail_attachments_id_seq IS
  'Identity of mail_attachments.id; registered with pg_extension_config_dump so a restore goes on after the largest id';
COMMENT ON SEQUENCE @extschema@.sync_runs_id_seq IS
  'Identity of sync_runs.id; registered with pg_extension_config_dump so a restore goes on after the largest id';
COMMENT ON SEQUENCE @extschema@.ledger_id_seq IS
  'Identity of ledger.id; registered with pg_extension_config_dump so a restore goes on after the largest id';

-- A dump taken before 1.1 carries no sequence positions: restored, every
-- identity sequence starts again at 1 while the rows keep their ids.  A
-- sequence never called in this database but whose table holds rows is
-- such a restore; it is moved past the largest id.  The check reads six
-- sequences (microseconds); the repair scans each table once.
CREATE FUNCTION @extschema@._repair_sequences() RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	t text;
	seq regclass;
	top bigint;
BEGIN
	FOREACH t IN ARRAY ARRAY['mailboxes', 'mail_threads', 'mail_messages', 'mail_attachments',
	                         'sync_runs', 'ledger'] LOOP
		seq := pg_get_serial_sequence('@extschema@.' || t, 'id')::regclass;
		CONTINUE WHEN pg_sequence_last_value(seq) IS NOT NULL;
		-- Two sessions repairing at once: the second sees the first's setval.
		PERFORM pg_advisory_xact_lock(18253, 1);
		CONTINUE WHEN pg_sequence_last_value(seq) IS NOT NULL;
		EXECUTE format('SELECT max(id) FROM @extschema@.%I', t) INTO top;
		IF top IS NOT NULL THEN
			PERFORM setval(seq, top);
		END IF;
	END LOOP;
END
$$;
COMMENT ON FUNCTION @extschema@._repair_sequences() IS
  'Moves identity sequences restored without their position past the largest stored id; called before every write path';
REVOKE ALL ON FUNCTION @extschema@._repair_sequences() FROM PUBLIC;

------------------------------------------------------------------------
-- add_mailbox: new credentials forget the history id and any backfill in
-- progress (they may belong to another account).
------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION @extschema@.add_mailbox(org_id uuid, provider_email text, refresh_token text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	v_email text := lower(btrim(provider_email));
	v_id bigint;
	v_old_token text;
BEGIN
	IF org_id IS NULL OR provider_email IS NULL OR refresh_token IS NULL THEN
		RAISE EXCEPTION 'add_mailbox arguments must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF v_email !~ '^[^@\s]+@[^@\s]+$' THEN
		RAISE EXCEPTION 'invalid email address "%"', provider_email
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF btrim(refresh_token) = '' THEN
		RAISE EXCEPTION 'refresh token must not be empty'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM @extschema@._repair_sequences();

	INSERT INTO @extschema@.mailboxes AS m (org_id, provider_email)
	VALUES (add_mailbox.org_id, v_email)
	ON CONFLICT (org_id, provider_email) DO UPDATE
		SET auth_state = 'ok'
		WHERE m.auth_state IS DISTINCT FROM 'ok'
	RETURNING m.id INTO v_id;
	IF v_id IS NULL THEN
		SELECT m.id INTO v_id FROM @extschema@.mailboxes m
		 WHERE m.org_id = add_mailbox.org_id AND m.provider_email = v_email;
	END IF;

	SELECT c.refresh_token INTO v_old_token FROM @extschema@.mailbox_credentials c
	 WHERE c.mailbox_id = v_id FOR UPDATE;
	IF v_old_token IS NOT NULL AND v_old_token <> add_mailbox.refresh_token THEN
		-- New credentials may belong to another account (a user re-consenting
		-- picks whichever account the browser offers).  The stored history id
		-- and a backfill's staged listing are that of the old account: reading
		-- the new account's history from them would file its mail here.  The
		-- next sync is full, and every sync checks the profile's address.
		UPDATE @extschema@.mailboxes m
		   SET history_id = NULL, backfill_history_id = NULL,
		       backfill_window_start = NULL, backfill_days = NULL
		 WHERE m.id = v_id;
		DELETE FROM @extschema@.backfill_queue q WHERE q.mailbox_id = v_id;
		DELETE FROM @extschema@.backfill_threads q WHERE q.mailbox_id = v_id;
	END IF;

	-- A new refresh token invalidates the cached access token.
	INSERT INTO @extschema@.mailbox_credentials AS c (mailbox_id, refresh_token)
	VALUES (v_id, add_mailbox.refresh_token)
	ON CONFLICT (mailbox_id) DO UPDATE
		SET refresh_token = EXCLUDED.refresh_token,
		    access_token = NULL,
		    access_token_expires_at = NULL,
		    updated_at = EXCLUDED.updated_at
		WHERE c.refresh_token IS DISTINCT FROM EXCLUDED.refresh_token;
	RETURN v_id;
END
$$;
COMMENT ON FUNCTION @extschema@.add_mailbox(uuid, text, text) IS
  'Register a Gmail mailbox (upsert on org_id, provider_email); re-adding updates its refresh token and, when the token changes, forgets the history id and any backfill in progress. Returns its id';

------------------------------------------------------------------------
-- Every object has a comment.
------------------------------------------------------------------------
COMMENT ON TABLE @extschema@.backfill_threads IS
  'Threads a gmail_backfill in progress listed, with the historyId and snippet Gmail gave them';
COMMENT ON FUNCTION @extschema@._ledger_refuse_change() IS
  'Trigger function: refuses UPDATE, DELETE and TRUNCATE on the append-only ledger';
COMMENT ON TRIGGER ledger_no_update_delete ON @extschema@.ledger IS
  'The ledger is append-only: no row is ever changed or deleted';
COMMENT ON TRIGGER ledger_no_truncate ON @extschema@.ledger IS
  'The ledger is append-only: it is never truncated';
COMMENT ON FUNCTION @extschema@._cron_job_name(bigint) IS
  'Name of the pg_cron job that schedule_sync creates for a mailbox';
COMMENT ON FUNCTION @extschema@._require_pg_cron() IS
  'Raises a clear error when pg_cron is not installed in this database';

-- A database restored from a 1.0 dump and updated writes again at once.
SELECT @extschema@._repair_sequences();

------------------------------------------------------------------------
-- The fleet's schedule of each mailbox (issue 11, part 1): how often, over
-- how many days, paused or not, when due, and the failure backoff.
-- Existing mailboxes get the defaults and are due at once.
------------------------------------------------------------------------
ALTER TABLE @extschema@.mailboxes
	ADD COLUMN sync_interval   interval NOT NULL DEFAULT '15 minutes'
	                CHECK (sync_interval >= '1 minute' AND sync_interval <= '7 days'),
	ADD COLUMN window_days     integer NOT NULL DEFAULT 7 CHECK (window_days BETWEEN 1 AND 3650),
	ADD COLUMN paused          boolean NOT NULL DEFAULT false,
	ADD COLUMN next_sync_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
	ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
	ADD COLUMN backoff_until   timestamptz;
COMMENT ON COLUMN @extschema@.mailboxes.sync_interval IS
  'How often the fleet syncs the mailbox (1 minute to 7 days); set_schedule sets it';
COMMENT ON COLUMN @extschema@.mailboxes.window_days IS
  'The window, in days, of the fleet''s syncs of this mailbox';
COMMENT ON COLUMN @extschema@.mailboxes.paused IS
  'A paused mailbox is left out of the fleet''s syncs (pause_mailbox, resume_mailbox)';
COMMENT ON COLUMN @extschema@.mailboxes.next_sync_at IS
  'When the mailbox is due again';
COMMENT ON COLUMN @extschema@.mailboxes.consecutive_failures IS
  'Failed runs since the last successful one';
COMMENT ON COLUMN @extschema@.mailboxes.backoff_until IS
  'After a transient failure, not synced again before this time';

CREATE FUNCTION @extschema@._require_mailbox(mailbox_id bigint) RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF mailbox_id IS NULL THEN
		RAISE EXCEPTION 'mailbox_id must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM @extschema@.mailboxes m WHERE m.id = _require_mailbox.mailbox_id) THEN
		RAISE EXCEPTION 'mailbox % does not exist', mailbox_id USING ERRCODE = 'no_data_found';
	END IF;
END
$$;
COMMENT ON FUNCTION @extschema@._require_mailbox(bigint) IS
  'Raises 22004 for a NULL mailbox id and P0002 for an unknown one';

CREATE FUNCTION @extschema@.set_schedule(mailbox_id bigint, sync_interval interval, window_days integer DEFAULT 7)
RETURNS timestamptz
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	v_last timestamptz;
	v_next timestamptz;
BEGIN
	PERFORM @extschema@._require_mailbox(mailbox_id);
	IF sync_interval IS NULL OR window_days IS NULL THEN
		RAISE EXCEPTION 'set_schedule arguments must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF sync_interval < interval '1 minute' OR sync_interval > interval '7 days' THEN
		RAISE EXCEPTION 'sync_interval must be between 1 minute and 7 days, got %', sync_interval
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF window_days < 1 OR window_days > 3650 THEN
		RAISE EXCEPTION 'window_days must be between 1 and 3650, got %', window_days
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- The next sync comes one new interval after the last one (now, if the
	-- mailbox never synced): a shorter interval brings it forward.  It is
	-- computed here and written as a value: on Citus an UPDATE of a
	-- reference table may not compute it from a column with now() or a
	-- time zone's arithmetic.
	SELECT m.last_synced_at INTO v_last
	  FROM @extschema@.mailboxes m WHERE m.id = set_schedule.mailbox_id FOR UPDATE;
	v_next := coalesce(v_last + set_schedule.sync_interval, now());
	UPDATE @extschema@.mailboxes m
	   SET sync_interval = set_schedule.sync_interval,
	       window_days = set_schedule.window_days,
	       next_sync_at = v_next
	 WHERE m.id = set_schedule.mailbox_id;
	RETURN v_next;
END
$$;
COMMENT ON FUNCTION @extschema@.set_schedule(bigint, interval, integer) IS
  'Set how often (1 minute to 7 days) and over how many days the fleet syncs a mailbox; returns when it is due next';

CREATE FUNCTION @extschema@.pause_mailbox(mailbox_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM @extschema@._require_mailbox(mailbox_id);
	UPDATE @extschema@.mailboxes m SET paused = true
	 WHERE m.id = pause_mailbox.mailbox_id AND NOT m.paused;
END
$$;
COMMENT ON FUNCTION @extschema@.pause_mailbox(bigint) IS
  'Leave the mailbox out of the fleet''s syncs until resume_mailbox';

CREATE FUNCTION @extschema@.resume_mailbox(mailbox_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM @extschema@._require_mailbox(mailbox_id);
	UPDATE @extschema@.mailboxes m SET paused = false
	 WHERE m.id = resume_mailbox.mailbox_id AND m.paused;
END
$$;
COMMENT ON FUNCTION @extschema@.resume_mailbox(bigint) IS
  'Take a paused mailbox back into the fleet''s syncs; overdue, it is due at once';

REVOKE ALL ON FUNCTION @extschema@._require_mailbox(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.set_schedule(bigint, interval, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.pause_mailbox(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.resume_mailbox(bigint) FROM PUBLIC;

CREATE OR REPLACE VIEW @extschema@.mailbox_status WITH (security_invoker = true) AS
SELECT m.id AS mailbox_id,
       m.org_id,
       m.provider_email,
       m.auth_state,
       m.history_id,
       m.last_synced_at,
       r.id AS last_run_id,
       r.mode AS last_run_mode,
       r.status AS last_run_status,
       r.error AS last_run_error,
       r.started_at AS last_run_started_at,
       r.finished_at - r.started_at AS last_run_duration,
       r.messages_inserted AS last_run_messages_inserted,
       r.quota_units AS last_run_quota_units,
       (SELECT count(*) FROM @extschema@.sync_runs f
         WHERE f.mailbox_id = m.id AND f.fallback IS NOT NULL
           AND f.id > coalesce((SELECT max(g.id) FROM @extschema@.sync_runs g
                                 WHERE g.mailbox_id = m.id AND g.status = 'succeeded'
                                   AND g.fallback IS NULL), 0)) AS consecutive_history_fallbacks,
       m.backfill_history_id IS NOT NULL AS backfill_in_progress,
       (SELECT count(*) FROM @extschema@.backfill_queue q WHERE q.mailbox_id = m.id) AS backfill_queued,
       (SELECT count(*) FROM @extschema@.mail_threads t WHERE t.mailbox_id = m.id) AS threads,
       (SELECT count(*) FROM @extschema@.mail_messages x WHERE x.mailbox_id = m.id) AS messages,
       (SELECT count(*) FROM @extschema@.mail_attachments a WHERE a.mailbox_id = m.id) AS attachments,
       m.paused,
       m.sync_interval,
       m.window_days,
       m.next_sync_at,
       m.backoff_until,
       m.consecutive_failures
  FROM @extschema@.mailboxes m
  LEFT JOIN LATERAL (
	SELECT * FROM @extschema@.sync_runs s
	 WHERE s.mailbox_id = m.id
	 ORDER BY s.id DESC LIMIT 1) r ON true;
COMMENT ON VIEW @extschema@.mailbox_status IS
  'One row per mailbox: auth state, last run''s outcome, stored counts, history id and schedule';

-- The fleet: workers (run_due) claim due mailboxes one at a time.  The
-- claim and the turn are definer functions; the procedure around them
-- commits after every turn, so it cannot be one itself.
CREATE INDEX mailboxes_due_idx ON @extschema@.mailboxes (next_sync_at)
	WHERE NOT paused AND auth_state = 'ok';

CREATE FUNCTION @extschema@._claim_due() RETURNS bigint
AS 'MODULE_PATHNAME', 'gmail_claim_due'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@._claim_due() IS
  'Claims the most overdue due mailbox no other session is syncing (its sync lock, held to the end of the transaction, never waited on); NULL when none';

CREATE FUNCTION @extschema@._run_turn(mailbox_id bigint) RETURNS text
AS 'MODULE_PATHNAME', 'gmail_run_turn'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@._run_turn(bigint) IS
  'One fleet turn on a claimed mailbox: a sync or one batch of its full sync, then its schedule; returns synced, partial, backoff or parked';

CREATE PROCEDURE @extschema@.run_due(max_runtime interval DEFAULT '55 seconds',
                                     max_mailboxes integer DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
	deadline timestamptz;
	v_id bigint;
	turns integer := 0;
BEGIN
	IF max_runtime IS NULL THEN
		RAISE EXCEPTION 'max_runtime must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF max_runtime < interval '0' OR max_runtime > interval '1 day' THEN
		RAISE EXCEPTION 'max_runtime must be between 0 and 1 day, got %', max_runtime
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF max_mailboxes IS NOT NULL AND max_mailboxes < 1 THEN
		RAISE EXCEPTION 'max_mailboxes must be at least 1, got %', max_mailboxes
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	deadline := pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) max_runtime;
	LOOP
		EXIT WHEN max_mailboxes IS NOT NULL AND turns OPERATOR(pg_catalog.>=) max_mailboxes;
		EXIT WHEN pg_catalog.clock_timestamp() OPERATOR(pg_catalog.>=) deadline;
		v_id := @extschema@._claim_due();
		IF v_id IS NULL THEN
			-- Idle: look again within half a second, never past the deadline.
			COMMIT;
			PERFORM pg_catalog.pg_sleep(LEAST(0.5,
				pg_catalog.date_part('epoch', deadline OPERATOR(pg_catalog.-) pg_catalog.clock_timestamp())));
			CONTINUE;
		END IF;
		PERFORM @extschema@._run_turn(v_id);
		COMMIT;
		turns := turns OPERATOR(pg_catalog.+) 1;
	END LOOP;
END
$$;
COMMENT ON PROCEDURE @extschema@.run_due(interval, integer) IS
  'A fleet worker: syncs the most overdue due mailboxes one turn (one transaction) at a time until max_runtime or max_mailboxes turns';

CREATE FUNCTION @extschema@._worker_job_name(n integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 'gmail_ingest_worker_' || n $$;
COMMENT ON FUNCTION @extschema@._worker_job_name(integer) IS
  'Name of the pg_cron job of fleet worker N';

-- Every minute each job starts a worker that runs for 55 seconds; pg_cron
-- never runs two instances of one job, so n jobs keep n workers.
CREATE FUNCTION @extschema@.start_workers(n integer DEFAULT 4)
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	v_name text;
BEGIN
	IF n IS NULL THEN
		RAISE EXCEPTION 'n must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF n < 0 OR n > 64 THEN
		RAISE EXCEPTION 'n must be between 0 and 64, got %', n USING ERRCODE = 'invalid_parameter_value',
			HINT = 'Each worker holds a database connection and one of cron.max_running_jobs.';
	END IF;
	PERFORM @extschema@._require_pg_cron();
	FOR i IN 1 .. n LOOP
		-- cron.schedule replaces the caller's job of the same name: idempotent.
		EXECUTE 'SELECT cron.schedule($1, $2, $3)'
			USING @extschema@._worker_job_name(i), '* * * * *',
			      'CALL @extschema@.run_due(''55 seconds'')';
	END LOOP;
	FOR v_name IN EXECUTE
		'SELECT jobname FROM cron.job WHERE username = current_user AND jobname LIKE ''gmail\_ingest\_worker\_%'''
	LOOP
		IF substr(v_name, length('gmail_ingest_worker_') + 1) !~ '^[0-9]+$'
		   OR substr(v_name, length('gmail_ingest_worker_') + 1)::integer > n THEN
			EXECUTE 'SELECT cron.unschedule($1)' USING v_name;
		END IF;
	END LOOP;
	RETURN n;
END
$$;
COMMENT ON FUNCTION @extschema@.start_workers(integer) IS
  'Keep N fleet workers running as pg_cron jobs (created, kept or removed to match N); returns N';

CREATE FUNCTION @extschema@.stop_workers()
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	v_name text;
	v_count integer := 0;
BEGIN
	PERFORM @extschema@._require_pg_cron();
	FOR v_name IN EXECUTE
		'SELECT jobname FROM cron.job WHERE username = current_user AND jobname LIKE ''gmail\_ingest\_worker\_%'''
	LOOP
		EXECUTE 'SELECT cron.unschedule($1)' USING v_name;
		v_count := v_count + 1;
	END LOOP;
	RETURN v_count;
END
$$;
COMMENT ON FUNCTION @extschema@.stop_workers() IS
  'Remove the fleet workers'' pg_cron jobs (a running worker finishes its turn); returns how many';

REVOKE ALL ON FUNCTION @extschema@._claim_due() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._run_turn(bigint) FROM PUBLIC;
REVOKE ALL ON PROCEDURE @extschema@.run_due(interval, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._worker_job_name(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.start_workers(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.stop_workers() FROM PUBLIC;

------------------------------------------------------------------------
-- Service accounts with domain-wide delegation (issue 12, SPEC 7a):
-- mailboxes gain the service account that impersonates them and the
-- auth_state 'delegation_denied'; a delegated mailbox's credentials row
-- holds no refresh token.
------------------------------------------------------------------------
ALTER TABLE @extschema@.mailboxes
	ADD COLUMN service_account_id bigint,
	DROP CONSTRAINT mailboxes_auth_state_check,
	ADD CONSTRAINT mailboxes_auth_state_check
		CHECK (auth_state IN ('ok', 'reauthorize', 'delegation_denied'));
ALTER TABLE @extschema@.mailbox_credentials ALTER COLUMN refresh_token DROP NOT NULL;
COMMENT ON COLUMN @extschema@.mailbox_credentials.refresh_token IS
  'The mailbox''s refresh token; NULL for a delegated mailbox, whose token a service account signs for';

-- Service accounts with domain-wide delegation (SPEC 7a, issue 12): an
-- organisation's Workspace administrator grants a service account the
-- Gmail scope once; each delegated mailbox's token is then a JWT signed
-- with the account's key.  The key is kept apart, like refresh tokens.
CREATE TABLE @extschema@.service_accounts (
	id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	org_id          uuid NOT NULL,
	client_email    text NOT NULL CHECK (client_email OPERATOR(pg_catalog.~) '^[^@\s]+@[^@\s]+$'),
	client_id       text NOT NULL,
	private_key_id  text NOT NULL,
	created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
	UNIQUE (org_id, client_email)
);
COMMENT ON TABLE @extschema@.service_accounts IS
  'Google service accounts with domain-wide delegation (no secret: the key is in service_account_keys)';
COMMENT ON COLUMN @extschema@.service_accounts.client_id IS
  'The numeric client id the Workspace Admin console''s domain-wide delegation page asks for';
COMMENT ON COLUMN @extschema@.service_accounts.private_key_id IS
  'Id of the current key (the JWT header''s kid); not a secret';

CREATE TABLE @extschema@.service_account_keys (
	service_account_id  bigint PRIMARY KEY REFERENCES @extschema@.service_accounts (id) ON DELETE CASCADE,
	private_key         text NOT NULL,
	updated_at          timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE @extschema@.service_account_keys IS
  'Service accounts'' private keys (PEM): readable by the extension''s owner only, never granted';

ALTER TABLE @extschema@.mailboxes
	ADD CONSTRAINT mailboxes_service_account_id_fkey FOREIGN KEY (service_account_id)
	REFERENCES @extschema@.service_accounts (id);
COMMENT ON COLUMN @extschema@.mailboxes.service_account_id IS
  'The service account that impersonates the mailbox (add_delegated_mailbox); NULL: a refresh-token mailbox';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.service_accounts', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.service_account_keys', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.service_accounts', 'id'), '');
COMMENT ON SEQUENCE @extschema@.service_accounts_id_seq IS
  'Identity of service_accounts.id; registered with pg_extension_config_dump so a restore goes on after the largest id';

CREATE FUNCTION @extschema@._private_key_problem(pem text) RETURNS text
AS 'MODULE_PATHNAME', 'gmail_private_key_problem'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@._private_key_problem(text) IS
  'NULL when the PEM is an unencrypted RSA private key OpenSSL reads, else why not (never quoting the key)';

CREATE FUNCTION @extschema@.add_service_account(org_id uuid, key_json text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	v_key jsonb;
	v_field text;
	v_email text;
	v_problem text;
	v_id bigint;
	v_old_key text;
	v_old_key_id text;
BEGIN
	IF org_id IS NULL OR key_json IS NULL THEN
		RAISE EXCEPTION 'add_service_account arguments must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- jsonb's own syntax error quotes the text around the fault: a piece
	-- of the key.  It is caught (a caught error is never logged) and
	-- replaced by one that quotes nothing.
	BEGIN
		v_key := key_json::jsonb;
	EXCEPTION WHEN data_exception THEN
		v_key := NULL;
	END;
	IF v_key IS NULL OR jsonb_typeof(v_key) <> 'object' THEN
		RAISE EXCEPTION 'key_json is not a JSON object'
			USING ERRCODE = 'invalid_parameter_value',
			      HINT = 'Pass the service account''s JSON key file as Google Cloud downloaded it, '
			             'preferably with add_service_account_file.';
	END IF;
	IF v_key->>'type' IS DISTINCT FROM 'service_account' THEN
		RAISE EXCEPTION 'key_json is not a service account key'
			USING ERRCODE = 'invalid_parameter_value',
			      DETAIL = 'Its "type" is not "service_account".',
			      HINT = 'Create a JSON key of a service account (IAM & Admin > Service accounts > Keys); '
			             'an OAuth client''s or a user''s credentials file is another thing.';
	END IF;
	FOREACH v_field IN ARRAY ARRAY['client_email', 'client_id', 'private_key_id', 'private_key'] LOOP
		IF jsonb_typeof(v_key->v_field) IS DISTINCT FROM 'string' OR btrim(v_key->>v_field) = '' THEN
			RAISE EXCEPTION 'key_json has no "%"', v_field
				USING ERRCODE = 'invalid_parameter_value',
				      DETAIL = format('A service account key holds "%s" as a non-empty string.', v_field);
		END IF;
	END LOOP;
	v_email := lower(btrim(v_key->>'client_email'));
	IF v_email !~ '^[^@\s]+@[^@\s]+$' OR length(v_email) > 320 THEN
		RAISE EXCEPTION 'the client_email of key_json is not an e-mail address'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	v_problem := @extschema@._private_key_problem(v_key->>'private_key');
	IF v_problem IS NOT NULL THEN
		RAISE EXCEPTION 'the private key of service account % cannot be used', v_email
			USING ERRCODE = 'invalid_parameter_value',
			      DETAIL = v_problem || '.',
			      HINT = 'Add a new JSON key to the service account in the Google Cloud console '
			             '(IAM & Admin > Service accounts > Keys > Add key > JSON) and register that file.';
	END IF;

	INSERT INTO @extschema@.service_accounts AS s (org_id, client_email, client_id, private_key_id)
	VALUES (add_service_account.org_id, v_email, v_key->>'client_id', v_key->>'private_key_id')
	ON CONFLICT (org_id, client_email) DO UPDATE
		SET client_id = EXCLUDED.client_id, private_key_id = EXCLUDED.private_key_id, updated_at = EXCLUDED.updated_at
		WHERE (s.client_id, s.private_key_id) IS DISTINCT FROM (EXCLUDED.client_id, EXCLUDED.private_key_id)
	RETURNING s.id INTO v_id;
	IF v_id IS NULL THEN
		SELECT s.id INTO v_id FROM @extschema@.service_accounts s
		 WHERE s.org_id = add_service_account.org_id AND s.client_email = v_email;
	END IF;

	SELECT k.private_key INTO v_old_key FROM @extschema@.service_account_keys k
	 WHERE k.service_account_id = v_id FOR UPDATE;
	INSERT INTO @extschema@.service_account_keys AS k (service_account_id, private_key)
	VALUES (v_id, v_key->>'private_key')
	ON CONFLICT (service_account_id) DO UPDATE
		SET private_key = EXCLUDED.private_key, updated_at = EXCLUDED.updated_at
		WHERE k.private_key IS DISTINCT FROM EXCLUDED.private_key;
	IF v_old_key IS NOT NULL AND v_old_key IS DISTINCT FROM v_key->>'private_key' THEN
		-- Tokens obtained with the old key go with it (it may have been
		-- disabled for a reason).
		UPDATE @extschema@.mailbox_credentials c
		   SET access_token = NULL, access_token_expires_at = NULL, updated_at = now()
		 WHERE c.mailbox_id IN (SELECT m.id FROM @extschema@.mailboxes m
		                         WHERE m.service_account_id = v_id)
		   AND c.access_token IS NOT NULL;
	END IF;
	-- Registering the account again is how an administrator says "fixed":
	-- its mailboxes parked by a refusal are synced again.
	UPDATE @extschema@.mailboxes m SET auth_state = 'ok'
	 WHERE m.service_account_id = v_id AND m.auth_state <> 'ok';
	RETURN v_id;
END
$$;
COMMENT ON FUNCTION @extschema@.add_service_account(uuid, text) IS
  'Register a Google service account''s JSON key (upsert on org_id, client_email); a new key replaces the old one and drops its mailboxes'' cached tokens. The statement holds the key: prefer add_service_account_file. Returns its id';

-- The key never appears in a statement: the server reads the file.  The
-- function runs with the caller's rights, so pg_read_file's rules apply
-- (superusers; or EXECUTE on pg_read_file and, outside the data
-- directory, pg_read_server_files), and the caller needs EXECUTE on
-- add_service_account.
CREATE FUNCTION @extschema@.add_service_account_file(org_id uuid, path text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF org_id IS NULL OR path IS NULL THEN
		RAISE EXCEPTION 'add_service_account_file arguments must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	RETURN @extschema@.add_service_account(org_id, pg_catalog.pg_read_file(path));
END
$$;
COMMENT ON FUNCTION @extschema@.add_service_account_file(uuid, text) IS
  'add_service_account with the JSON key read from a file on the database server (pg_read_file''s privileges): the key stays out of statements and the server log';

CREATE FUNCTION @extschema@.add_delegated_mailbox(org_id uuid, provider_email text, service_account_id bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	v_email text := lower(btrim(provider_email));
	v_sa_org uuid;
	v_id bigint;
	v_old_sa bigint;
	v_old_state text;
BEGIN
	IF org_id IS NULL OR provider_email IS NULL OR service_account_id IS NULL THEN
		RAISE EXCEPTION 'add_delegated_mailbox arguments must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF v_email !~ '^[^@\s]+@[^@\s]+$' THEN
		RAISE EXCEPTION 'invalid email address "%"', provider_email
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT s.org_id INTO v_sa_org FROM @extschema@.service_accounts s
	 WHERE s.id = add_delegated_mailbox.service_account_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'service account % does not exist', service_account_id
			USING ERRCODE = 'no_data_found',
			      HINT = 'Register it with gmail_ingest.add_service_account_file.';
	END IF;
	IF v_sa_org <> org_id THEN
		RAISE EXCEPTION 'service account % belongs to another organisation', service_account_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM @extschema@._repair_sequences();

	SELECT m.id, m.service_account_id, m.auth_state INTO v_id, v_old_sa, v_old_state
	  FROM @extschema@.mailboxes m
	 WHERE m.org_id = add_delegated_mailbox.org_id AND m.provider_email = v_email FOR UPDATE;
	INSERT INTO @extschema@.mailboxes AS m (org_id, provider_email, service_account_id)
	VALUES (add_delegated_mailbox.org_id, v_email, add_delegated_mailbox.service_account_id)
	ON CONFLICT (org_id, provider_email) DO UPDATE
		SET auth_state = 'ok', service_account_id = EXCLUDED.service_account_id
		WHERE m.auth_state IS DISTINCT FROM 'ok'
		   OR m.service_account_id IS DISTINCT FROM EXCLUDED.service_account_id
	RETURNING m.id INTO v_id;
	IF v_id IS NULL THEN
		SELECT m.id INTO v_id FROM @extschema@.mailboxes m
		 WHERE m.org_id = add_delegated_mailbox.org_id AND m.provider_email = v_email;
	END IF;

	-- The credentials row holds no refresh token, only the cached access
	-- token.  New credentials (another kind, another account, or after a
	-- refusal) start without one.  The address is the mailbox's own either
	-- way (the JWT's sub), and every sync checks the profile's address.
	INSERT INTO @extschema@.mailbox_credentials AS c (mailbox_id, refresh_token)
	VALUES (v_id, NULL)
	ON CONFLICT (mailbox_id) DO UPDATE
		SET refresh_token = NULL, access_token = NULL, access_token_expires_at = NULL,
		    updated_at = EXCLUDED.updated_at
		WHERE c.refresh_token IS NOT NULL
		   OR (c.access_token IS NOT NULL
		       AND (v_old_sa IS DISTINCT FROM add_delegated_mailbox.service_account_id
		            OR v_old_state IS DISTINCT FROM 'ok'));
	RETURN v_id;
END
$$;
COMMENT ON FUNCTION @extschema@.add_delegated_mailbox(uuid, text, bigint) IS
  'Register a Workspace mailbox synced by impersonating it with a service account (upsert on org_id, provider_email; switches a refresh-token mailbox over); returns its id';

CREATE FUNCTION @extschema@.check_service_account(service_account_id bigint, provider_email text)
RETURNS TABLE (scope text, ok boolean, detail text)
AS 'MODULE_PATHNAME', 'gmail_check_service_account'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.check_service_account(bigint, text) IS
  'Ask Google for a token of the service account for provider_email per scope a sync needs: whether domain-wide delegation works and, if not, what the Workspace administrator must grant';

REVOKE ALL ON TABLE @extschema@.service_accounts FROM PUBLIC;
REVOKE ALL ON TABLE @extschema@.service_account_keys FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._private_key_problem(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.add_service_account(uuid, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.add_service_account_file(uuid, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.add_delegated_mailbox(uuid, text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.check_service_account(bigint, text) FROM PUBLIC;

ALTER TABLE @extschema@.service_accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.service_account_keys ENABLE ROW LEVEL SECURITY;

-- add_mailbox turns a delegated mailbox back into a refresh-token one.
CREATE OR REPLACE FUNCTION @extschema@.add_mailbox(org_id uuid, provider_email text, refresh_token text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	v_email text := lower(btrim(provider_email));
	v_id bigint;
	v_old_token text;
BEGIN
	IF org_id IS NULL OR provider_email IS NULL OR refresh_token IS NULL THEN
		RAISE EXCEPTION 'add_mailbox arguments must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF v_email !~ '^[^@\s]+@[^@\s]+$' THEN
		RAISE EXCEPTION 'invalid email address "%"', provider_email
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF btrim(refresh_token) = '' THEN
		RAISE EXCEPTION 'refresh token must not be empty'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM @extschema@._repair_sequences();

	INSERT INTO @extschema@.mailboxes AS m (org_id, provider_email)
	VALUES (add_mailbox.org_id, v_email)
	ON CONFLICT (org_id, provider_email) DO UPDATE
		SET auth_state = 'ok', service_account_id = NULL
		WHERE m.auth_state IS DISTINCT FROM 'ok' OR m.service_account_id IS NOT NULL
	RETURNING m.id INTO v_id;
	IF v_id IS NULL THEN
		SELECT m.id INTO v_id FROM @extschema@.mailboxes m
		 WHERE m.org_id = add_mailbox.org_id AND m.provider_email = v_email;
	END IF;

	SELECT c.refresh_token INTO v_old_token FROM @extschema@.mailbox_credentials c
	 WHERE c.mailbox_id = v_id FOR UPDATE;
	IF v_old_token IS NOT NULL AND v_old_token <> add_mailbox.refresh_token THEN
		-- New credentials may belong to another account (a user re-consenting
		-- picks whichever account the browser offers).  The stored history id
		-- and a backfill's staged listing are that of the old account: reading
		-- the new account's history from them would file its mail here.  The
		-- next sync is full, and every sync checks the profile's address.
		UPDATE @extschema@.mailboxes m
		   SET history_id = NULL, backfill_history_id = NULL,
		       backfill_window_start = NULL, backfill_days = NULL
		 WHERE m.id = v_id;
		DELETE FROM @extschema@.backfill_queue q WHERE q.mailbox_id = v_id;
		DELETE FROM @extschema@.backfill_threads q WHERE q.mailbox_id = v_id;
	END IF;

	-- A new refresh token invalidates the cached access token.
	INSERT INTO @extschema@.mailbox_credentials AS c (mailbox_id, refresh_token)
	VALUES (v_id, add_mailbox.refresh_token)
	ON CONFLICT (mailbox_id) DO UPDATE
		SET refresh_token = EXCLUDED.refresh_token,
		    access_token = NULL,
		    access_token_expires_at = NULL,
		    updated_at = EXCLUDED.updated_at
		WHERE c.refresh_token IS DISTINCT FROM EXCLUDED.refresh_token;
	RETURN v_id;
END
$$;
COMMENT ON FUNCTION @extschema@.add_mailbox(uuid, text, text) IS
  'Register a Gmail mailbox (upsert on org_id, provider_email); re-adding updates its refresh token and, when the token changes, forgets the history id and any backfill in progress. Returns its id';

-- Issue 11 item 6: the project quota shared by all backends (nothing for
-- PUBLIC: a new function is executable by PUBLIC until revoked).
CREATE FUNCTION @extschema@.project_quota_usage(OUT units_last_minute bigint, OUT units_per_minute integer)
AS 'MODULE_PATHNAME', 'gmail_project_quota_usage'
LANGUAGE C VOLATILE PARALLEL SAFE;
REVOKE ALL ON FUNCTION @extschema@.project_quota_usage() FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.project_quota_usage() IS
  'Gmail quota units the whole cluster booked in the last 60 s, and gmail_ingest.project_quota_units_per_minute';

-- The fleet at a glance.  running: mailboxes whose sync lock (advisory
-- lock space 0x474D = 18253) is held in this database, by a worker or a
-- gmail_sync.  Lags are over the mailboxes the workers serve.
CREATE VIEW @extschema@.fleet_status WITH (security_invoker = true) AS
SELECT count(*) AS mailboxes,
       count(*) FILTER (WHERE NOT m.paused AND m.auth_state = 'ok') AS active,
       count(*) FILTER (WHERE m.paused) AS paused,
       (SELECT count(*) FROM pg_catalog.pg_locks l
         WHERE l.locktype = 'advisory' AND l.objsubid = 18253 AND l.granted
           AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                              WHERE d.datname = pg_catalog.current_database())) AS running,
       count(*) FILTER (WHERE m.backoff_until > pg_catalog.now()) AS backing_off,
       count(*) FILTER (WHERE m.auth_state = 'reauthorize') AS reauthorize,
       count(*) FILTER (WHERE m.auth_state = 'delegation_denied') AS delegation_denied,
       count(*) FILTER (WHERE NOT m.paused AND m.auth_state = 'ok' AND m.next_sync_at <= pg_catalog.now()
                          AND (m.backoff_until IS NULL OR m.backoff_until <= pg_catalog.now())) AS due_now,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY pg_catalog.now() - coalesce(m.last_synced_at, m.created_at))
         FILTER (WHERE NOT m.paused AND m.auth_state = 'ok') AS lag_p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY pg_catalog.now() - coalesce(m.last_synced_at, m.created_at))
         FILTER (WHERE NOT m.paused AND m.auth_state = 'ok') AS lag_p95,
       max(pg_catalog.now() - coalesce(m.last_synced_at, m.created_at))
         FILTER (WHERE NOT m.paused AND m.auth_state = 'ok') AS lag_max,
       (SELECT q.units_last_minute FROM @extschema@.project_quota_usage() q) AS project_units_last_minute,
       (SELECT q.units_per_minute FROM @extschema@.project_quota_usage() q) AS project_units_per_minute
  FROM @extschema@.mailboxes m;
COMMENT ON VIEW @extschema@.fleet_status IS
  'One row: mailboxes by state, due now, freshness lag p50/p95/max over active mailboxes, the project quota used in the last minute and its limit';
REVOKE ALL ON @extschema@.fleet_status FROM PUBLIC;
-- Push (issue 13, SPEC 7c): Gmail watch + Cloud Pub/Sub pull.
------------------------------------------------------------------------
ALTER TABLE @extschema@.mailboxes
	ADD COLUMN watch_topic text,
	ADD COLUMN watch_expires_at timestamptz,
	ADD COLUMN watch_attempted_at timestamptz,
	ADD COLUMN watch_error text,
	ADD COLUMN push_history_id bigint;
COMMENT ON COLUMN @extschema@.mailboxes.watch_topic IS
  'The Pub/Sub topic Gmail publishes the mailbox''s changes to (watch_mailbox); NULL when not watched';
COMMENT ON COLUMN @extschema@.mailboxes.watch_expires_at IS
  'When the Gmail watch lapses unless renewed (the fleet renews it when less than 6 days remain)';
COMMENT ON COLUMN @extschema@.mailboxes.watch_attempted_at IS
  'Last users.watch call for the mailbox, successful or not';
COMMENT ON COLUMN @extschema@.mailboxes.watch_error IS
  'Why the last renewal of the watch failed; NULL after a successful one';
COMMENT ON COLUMN @extschema@.mailboxes.push_history_id IS
  'The newest historyId a Gmail notification reported for the mailbox';

-- Notifications name a mailbox by its address only.
CREATE INDEX mailboxes_email_idx ON @extschema@.mailboxes (pg_catalog.lower(provider_email));

-- One row per pull that returned notifications: how they were classified
-- and how many were acknowledged (after the commit of their due marks).
CREATE TABLE @extschema@.push_batches (
	id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	pulled_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
	received        integer NOT NULL CHECK (received >= 0),
	due             integer NOT NULL CHECK (due >= 0),
	stale           integer NOT NULL CHECK (stale >= 0),
	unknown_address integer NOT NULL CHECK (unknown_address >= 0),
	malformed       integer NOT NULL CHECK (malformed >= 0),
	acknowledged    integer NOT NULL DEFAULT 0 CHECK (acknowledged >= 0),
	acked_at        timestamptz
);
CREATE INDEX push_batches_pulled_at_idx ON @extschema@.push_batches (pulled_at);
COMMENT ON SEQUENCE @extschema@.push_batches_id_seq IS
  'Ids of push_batches';
ALTER TABLE @extschema@.push_batches ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE @extschema@.push_batches IS
  'One row per Pub/Sub pull that returned Gmail notifications (kept a day): received, due (newer than the mailbox''s history id), stale, unknown_address and malformed ones, and how many were acknowledged';

CREATE FUNCTION @extschema@.watch_mailbox(mailbox_id bigint, topic text) RETURNS timestamptz
AS 'MODULE_PATHNAME', 'gmail_watch_mailbox'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.watch_mailbox(bigint, text) IS
  'Gmail users.watch: every change of the mailbox is published to the Pub/Sub topic (projects/P/topics/T); returns when the watch expires (the fleet renews it daily)';

CREATE FUNCTION @extschema@.unwatch_mailbox(mailbox_id bigint) RETURNS void
AS 'MODULE_PATHNAME', 'gmail_unwatch_mailbox'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.unwatch_mailbox(bigint) IS
  'Gmail users.stop: no more notifications for the mailbox; polling alone keeps it fresh';

CREATE FUNCTION @extschema@._push_pull(OUT batch_id bigint, OUT ack_ids text[])
AS 'MODULE_PATHNAME', 'gmail_push_pull'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@._push_pull() IS
  'One pull of gmail_ingest.pubsub_subscription: makes each notified mailbox due, counts the batch; returns the ack ids to acknowledge after the commit';

CREATE FUNCTION @extschema@._push_ack(batch_id bigint, ack_ids text[]) RETURNS integer
AS 'MODULE_PATHNAME', 'gmail_push_ack'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@._push_ack(bigint, text[]) IS
  'Acknowledges a committed batch''s notifications and counts them; returns how many';

-- Commits between the steps, so it cannot be a definer function itself.
CREATE PROCEDURE @extschema@.run_push(max_runtime interval DEFAULT '55 seconds')
LANGUAGE plpgsql AS $$
DECLARE
	deadline timestamptz;
	pulled_at timestamptz;
	v_batch bigint;
	v_acks text[];
BEGIN
	IF max_runtime IS NULL THEN
		RAISE EXCEPTION 'max_runtime must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF max_runtime < interval '0' OR max_runtime > interval '1 day' THEN
		RAISE EXCEPTION 'max_runtime must be between 0 and 1 day, got %', max_runtime
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	deadline := pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) max_runtime;
	LOOP
		EXIT WHEN pg_catalog.clock_timestamp() OPERATOR(pg_catalog.>=) deadline;
		pulled_at := pg_catalog.clock_timestamp();
		SELECT p.batch_id, p.ack_ids INTO v_batch, v_acks FROM @extschema@._push_pull() p;
		-- The due marks are durable before anything is acknowledged.
		COMMIT;
		IF pg_catalog.cardinality(v_acks) OPERATOR(pg_catalog.>) 0 THEN
			PERFORM @extschema@._push_ack(v_batch, v_acks);
			COMMIT;
		ELSIF pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) pulled_at
		      OPERATOR(pg_catalog.<) interval '200 milliseconds' THEN
			-- Pub/Sub holds an empty pull open; one that did not is not retried in a spin.
			PERFORM pg_catalog.pg_sleep(0.2);
		END IF;
	END LOOP;
END
$$;
COMMENT ON PROCEDURE @extschema@.run_push(interval) IS
  'The push listener: pulls gmail_ingest.pubsub_subscription until max_runtime, makes each notified mailbox due, commits, then acknowledges';

-- The pg_cron job of the listener, kept or dropped by start_workers and
-- dropped by stop_workers.
CREATE FUNCTION @extschema@._keep_push_listener(wanted boolean) RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	v_exists boolean;
BEGIN
	EXECUTE 'SELECT EXISTS (SELECT 1 FROM cron.job WHERE jobname = $1 AND username = current_user)'
		INTO v_exists USING 'gmail_ingest_push';
	IF wanted THEN
		EXECUTE 'SELECT cron.schedule($1, $2, $3)'
			USING 'gmail_ingest_push', '* * * * *', 'CALL @extschema@.run_push(''55 seconds'')';
		RETURN true;
	END IF;
	IF v_exists THEN
		EXECUTE 'SELECT cron.unschedule($1)' USING 'gmail_ingest_push';
	END IF;
	RETURN v_exists;
END
$$;
COMMENT ON FUNCTION @extschema@._keep_push_listener(boolean) IS
  'Creates (wanted) or drops the pg_cron job gmail_ingest_push that keeps one run_push listener running; whether it exists now or did';

-- fleet_status gains the push figures (its columns so far, then push's).
CREATE OR REPLACE VIEW @extschema@.fleet_status WITH (security_invoker = true) AS
SELECT count(*) AS mailboxes,
       count(*) FILTER (WHERE NOT m.paused AND m.auth_state = 'ok') AS active,
       count(*) FILTER (WHERE m.paused) AS paused,
       (SELECT count(*) FROM pg_catalog.pg_locks l
         WHERE l.locktype = 'advisory' AND l.objsubid = 18253 AND l.granted
           AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                              WHERE d.datname = pg_catalog.current_database())) AS running,
       count(*) FILTER (WHERE m.backoff_until > pg_catalog.now()) AS backing_off,
       count(*) FILTER (WHERE m.auth_state = 'reauthorize') AS reauthorize,
       count(*) FILTER (WHERE m.auth_state = 'delegation_denied') AS delegation_denied,
       count(*) FILTER (WHERE NOT m.paused AND m.auth_state = 'ok' AND m.next_sync_at <= pg_catalog.now()
                          AND (m.backoff_until IS NULL OR m.backoff_until <= pg_catalog.now())) AS due_now,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY pg_catalog.now() - coalesce(m.last_synced_at, m.created_at))
         FILTER (WHERE NOT m.paused AND m.auth_state = 'ok') AS lag_p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY pg_catalog.now() - coalesce(m.last_synced_at, m.created_at))
         FILTER (WHERE NOT m.paused AND m.auth_state = 'ok') AS lag_p95,
       max(pg_catalog.now() - coalesce(m.last_synced_at, m.created_at))
         FILTER (WHERE NOT m.paused AND m.auth_state = 'ok') AS lag_max,
       (SELECT q.units_last_minute FROM @extschema@.project_quota_usage() q) AS project_units_last_minute,
       (SELECT q.units_per_minute FROM @extschema@.project_quota_usage() q) AS project_units_per_minute,
       (SELECT coalesce(sum(b.received), 0) FROM @extschema@.push_batches b
         WHERE b.pulled_at > pg_catalog.now() - interval '1 hour') AS notifications_last_hour,
       (SELECT coalesce(sum(b.acknowledged), 0) FROM @extschema@.push_batches b
         WHERE b.pulled_at > pg_catalog.now() - interval '1 hour') AS notifications_acknowledged_last_hour,
       (SELECT coalesce(sum(b.stale + b.unknown_address + b.malformed), 0) FROM @extschema@.push_batches b
         WHERE b.pulled_at > pg_catalog.now() - interval '1 hour') AS notifications_ignored_last_hour,
       count(*) FILTER (WHERE m.watch_topic IS NOT NULL) AS watched,
       min(m.watch_expires_at) AS watch_earliest_expiration,
       count(*) FILTER (WHERE m.watch_error IS NOT NULL) AS watch_renewal_failures
  FROM @extschema@.mailboxes m;
COMMENT ON VIEW @extschema@.fleet_status IS
  'One row: mailboxes by state, due now, freshness lag p50/p95/max over active mailboxes, the project quota used in the last minute and its limit; push: notifications received, acknowledged and ignored (stale, unknown address, malformed) in the last hour, watched mailboxes, the earliest watch expiration and failed renewals';

CREATE OR REPLACE VIEW @extschema@.mailbox_status WITH (security_invoker = true) AS
SELECT m.id AS mailbox_id,
       m.org_id,
       m.provider_email,
       m.auth_state,
       m.history_id,
       m.last_synced_at,
       r.id AS last_run_id,
       r.mode AS last_run_mode,
       r.status AS last_run_status,
       r.error AS last_run_error,
       r.started_at AS last_run_started_at,
       r.finished_at - r.started_at AS last_run_duration,
       r.messages_inserted AS last_run_messages_inserted,
       r.quota_units AS last_run_quota_units,
       coalesce(f.n, 0) AS consecutive_history_fallbacks,
       m.backfill_history_id IS NOT NULL AS backfill_in_progress,
       coalesce(q.n, 0) AS backfill_queued,
       coalesce(t.n, 0) AS threads,
       coalesce(x.n, 0) AS messages,
       coalesce(a.n, 0) AS attachments,
       m.paused,
       m.sync_interval,
       m.window_days,
       m.next_sync_at,
       m.backoff_until,
       m.consecutive_failures,
       m.watch_topic,
       m.watch_expires_at,
       m.watch_error
  FROM @extschema@.mailboxes m
  -- Per-mailbox aggregates joined on mailbox_id rather than correlated
  -- subqueries: Citus runs these on the shards (SPEC 7e); one node plans
  -- them as before for a given mailbox_id.
  LEFT JOIN (SELECT DISTINCT ON (s.mailbox_id) s.* FROM @extschema@.sync_runs s
              ORDER BY s.mailbox_id, s.id DESC) r ON r.mailbox_id = m.id
  LEFT JOIN (SELECT f.mailbox_id, count(*) AS n
               FROM @extschema@.sync_runs f
               LEFT JOIN (SELECT g.mailbox_id, max(g.id) AS ok_id FROM @extschema@.sync_runs g
                           WHERE g.status = 'succeeded' AND g.fallback IS NULL
                           GROUP BY g.mailbox_id) g ON g.mailbox_id = f.mailbox_id
              WHERE f.fallback IS NOT NULL AND f.id > coalesce(g.ok_id, 0)
              GROUP BY f.mailbox_id) f ON f.mailbox_id = m.id
  LEFT JOIN (SELECT mailbox_id, count(*) AS n FROM @extschema@.backfill_queue GROUP BY 1) q ON q.mailbox_id = m.id
  LEFT JOIN (SELECT mailbox_id, count(*) AS n FROM @extschema@.mail_threads GROUP BY 1) t ON t.mailbox_id = m.id
  LEFT JOIN (SELECT mailbox_id, count(*) AS n FROM @extschema@.mail_messages GROUP BY 1) x ON x.mailbox_id = m.id
  LEFT JOIN (SELECT mailbox_id, count(*) AS n FROM @extschema@.mail_attachments GROUP BY 1) a ON a.mailbox_id = m.id;
COMMENT ON VIEW @extschema@.mailbox_status IS
  'One row per mailbox: auth state, last run''s outcome, stored counts, history id and schedule';

CREATE OR REPLACE FUNCTION @extschema@.start_workers(n integer DEFAULT 4)
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	v_name text;
BEGIN
	IF n IS NULL THEN
		RAISE EXCEPTION 'n must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF n < 0 OR n > 64 THEN
		RAISE EXCEPTION 'n must be between 0 and 64, got %', n USING ERRCODE = 'invalid_parameter_value',
			HINT = 'Each worker holds a database connection and one of cron.max_running_jobs.';
	END IF;
	PERFORM @extschema@._require_pg_cron();
	FOR i IN 1 .. n LOOP
		-- cron.schedule replaces the caller's job of the same name: idempotent.
		EXECUTE 'SELECT cron.schedule($1, $2, $3)'
			USING @extschema@._worker_job_name(i), '* * * * *',
			      'CALL @extschema@.run_due(''55 seconds'')';
	END LOOP;
	FOR v_name IN EXECUTE
		'SELECT jobname FROM cron.job WHERE username = current_user AND jobname LIKE ''gmail\_ingest\_worker\_%'''
	LOOP
		IF substr(v_name, length('gmail_ingest_worker_') + 1) !~ '^[0-9]+$'
		   OR substr(v_name, length('gmail_ingest_worker_') + 1)::integer > n THEN
			EXECUTE 'SELECT cron.unschedule($1)' USING v_name;
		END IF;
	END LOOP;
	-- and one push listener while a subscription is set (SPEC 7c)
	PERFORM @extschema@._keep_push_listener(n > 0 AND
		coalesce(current_setting('gmail_ingest.pubsub_subscription', true), '') <> '');
	RETURN n;
END
$$;
COMMENT ON FUNCTION @extschema@.start_workers(integer) IS
  'Keep N fleet workers running as pg_cron jobs (created, kept or removed to match N), and the push listener while gmail_ingest.pubsub_subscription is set; returns N';

CREATE OR REPLACE FUNCTION @extschema@.stop_workers()
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	v_name text;
	v_count integer := 0;
BEGIN
	PERFORM @extschema@._require_pg_cron();
	FOR v_name IN EXECUTE
		'SELECT jobname FROM cron.job WHERE username = current_user AND jobname LIKE ''gmail\_ingest\_worker\_%'''
	LOOP
		EXECUTE 'SELECT cron.unschedule($1)' USING v_name;
		v_count := v_count + 1;
	END LOOP;
	IF @extschema@._keep_push_listener(false) THEN
		v_count := v_count + 1;
	END IF;
	RETURN v_count;
END
$$;
COMMENT ON FUNCTION @extschema@.stop_workers() IS
  'Remove the fleet workers'' and the push listener''s pg_cron jobs (a running worker finishes its turn); returns how many';

REVOKE ALL ON TABLE @extschema@.push_batches FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.watch_mailbox(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.unwatch_mailbox(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._push_pull() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._push_ack(bigint, text[]) FROM PUBLIC;
REVOKE ALL ON PROCEDURE @extschema@.run_push(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._keep_push_listener(boolean) FROM PUBLIC;

-- Object storage (SPEC 7d): attachment and raw-message bytes in an
-- S3-compatible store.  blobs keeps a row per content (the foreign keys
-- point at it) with data NULL; objects says which keys hold the bytes.
------------------------------------------------------------------------
ALTER TABLE @extschema@.blobs ALTER COLUMN data DROP NOT NULL;
COMMENT ON COLUMN @extschema@.blobs.data IS
  'The bytes, or NULL when they are kept in the object store (gmail_ingest.objects says at which keys)';

CREATE TABLE @extschema@.objects (
	mailbox_id  bigint NOT NULL REFERENCES @extschema@.mailboxes (id),
	object_key  text NOT NULL,
	sha256      text NOT NULL REFERENCES @extschema@.blobs (sha256),
	size_bytes  bigint NOT NULL CHECK (size_bytes >= 0),
	created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (mailbox_id, object_key)
);
CREATE INDEX objects_object_key_idx ON @extschema@.objects (object_key);
CREATE INDEX objects_sha256_idx ON @extschema@.objects (sha256);
COMMENT ON TABLE @extschema@.objects IS
  'Objects uploaded to the object store (blob_store = s3): key (without gmail_ingest.s3_prefix) and content; a recorded key is never uploaded again';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.objects', '');
ALTER TABLE @extschema@.objects ENABLE ROW LEVEL SECURITY;

CREATE FUNCTION @extschema@._verify_objects(mailbox_id bigint, deep boolean)
RETURNS TABLE (check_name text, ok boolean, detail text)
AS 'MODULE_PATHNAME', 'gmail_verify_objects'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@._verify_objects(bigint, boolean) IS
  'verify''s object-store checks: HEAD (deep: GET and hash) of every object recorded for the mailbox; one row per missing or damaged key, then a summary';

CREATE FUNCTION @extschema@._migrate_blobs_batch(target text, batch_size integer)
RETURNS integer
AS 'MODULE_PATHNAME', 'gmail_migrate_blobs_batch'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@._migrate_blobs_batch(text, integer) IS
  'One batch of migrate_blobs: moves up to batch_size blobs'' bytes to target (''s3'' or ''database''), verified; returns how many (0: done)';

CREATE PROCEDURE @extschema@.migrate_blobs(target text, batch_size integer DEFAULT 500)
LANGUAGE plpgsql AS $$
DECLARE
	moved integer;
	total bigint := 0;
BEGIN
	IF target IS NULL OR batch_size IS NULL THEN
		RAISE EXCEPTION 'migrate_blobs arguments must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	LOOP
		moved := @extschema@._migrate_blobs_batch(target, batch_size);
		total := total + moved;
		-- each batch is committed: a kill loses at most one batch, redone on the next call
		COMMIT;
		EXIT WHEN moved = 0;
		RAISE NOTICE '% blobs moved to %', total, target;
	END LOOP;
END
$$;
COMMENT ON PROCEDURE @extschema@.migrate_blobs(text, integer) IS
  'Moves existing bytes between the blobs table and the object store (target ''s3'' or ''database''), in committed batches; resumable';

CREATE FUNCTION @extschema@.gc_objects(dry_run boolean DEFAULT true)
RETURNS TABLE (object_key text, action text)
AS 'MODULE_PATHNAME', 'gmail_gc_objects'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.gc_objects(boolean) IS
  'Lists the object store under gmail_ingest.s3_prefix and removes (unless dry_run) objects no row refers to that are older than an hour';

-- verify gains deep (GET and hash every object); mailbox_status does not use it.
DROP FUNCTION @extschema@.verify(bigint);
CREATE FUNCTION @extschema@.verify(mailbox_id bigint, deep boolean DEFAULT false)
RETURNS TABLE (check_name text, ok boolean, detail text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
	mb bigint := verify.mailbox_id;
	n bigint;
BEGIN
	IF mb IS NULL THEN
		RAISE EXCEPTION 'mailbox_id must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM @extschema@.mailboxes m WHERE m.id = mb) THEN
		RAISE EXCEPTION 'mailbox % does not exist', mb USING ERRCODE = 'no_data_found';
	END IF;

	-- Natural keys are counted, not trusted to the indexes: a dropped or
	-- corrupted unique index must not hide a duplicate.
	SELECT count(*) INTO n FROM (
		SELECT provider_thread_id FROM @extschema@.mail_threads t
		 WHERE t.mailbox_id = mb GROUP BY 1 HAVING count(*) > 1) d;
	check_name := 'no duplicate threads'; ok := n = 0;
	detail := format('%s duplicated provider_thread_id', n); RETURN NEXT;

	SELECT count(*) INTO n FROM (
		SELECT provider_message_id FROM @extschema@.mail_messages m
		 WHERE m.mailbox_id = mb GROUP BY 1 HAVING count(*) > 1) d;
	check_name := 'no duplicate messages'; ok := n = 0;
	detail := format('%s duplicated provider_message_id', n); RETURN NEXT;

	SELECT count(*) INTO n FROM (
		SELECT message_id, part_id FROM @extschema@.mail_attachments a
		 WHERE a.mailbox_id = mb GROUP BY 1, 2 HAVING count(*) > 1) d;
	check_name := 'no duplicate attachments'; ok := n = 0;
	detail := format('%s duplicated (message_id, part_id)', n); RETURN NEXT;

	SELECT count(*) INTO n FROM @extschema@.mail_attachments a
	 WHERE a.mailbox_id = mb
	   AND NOT EXISTS (SELECT 1 FROM @extschema@.blobs b WHERE b.mailbox_id = mb AND b.sha256 = a.sha256);
	check_name := 'attachment blobs present'; ok := n = 0;
	detail := format('%s attachments without their blob', n); RETURN NEXT;

	SELECT count(*) INTO n FROM @extschema@.mail_messages m
	 WHERE m.mailbox_id = mb AND m.raw_sha256 IS NOT NULL
	   AND NOT EXISTS (SELECT 1 FROM @extschema@.blobs b WHERE b.mailbox_id = mb AND b.sha256 = m.raw_sha256);
	check_name := 'raw message blobs present'; ok := n = 0;
	detail := format('%s messages without their raw blob', n); RETURN NEXT;

	SELECT count(*) INTO n FROM @extschema@.blobs b
	 WHERE b.mailbox_id = mb
	   AND (b.sha256 IN (SELECT a.sha256 FROM @extschema@.mail_attachments a WHERE a.mailbox_id = mb)
	        OR b.sha256 IN (SELECT m.raw_sha256 FROM @extschema@.mail_messages m WHERE m.mailbox_id = mb))
	   AND (encode(sha256(b.data), 'hex') <> b.sha256 OR length(b.data) <> b.size_bytes);
	check_name := 'blob hashes match'; ok := n = 0;
	detail := format('%s blobs whose bytes do not match their sha256 or size', n); RETURN NEXT;

	SELECT count(*) INTO n FROM @extschema@.mail_attachments a
	  JOIN @extschema@.blobs b ON b.mailbox_id = a.mailbox_id AND b.sha256 = a.sha256
	 WHERE a.mailbox_id = mb AND a.size_bytes <> b.size_bytes;
	check_name := 'attachment sizes match'; ok := n = 0;
	detail := format('%s attachments whose size_bytes differs from their blob', n); RETURN NEXT;

	SELECT count(*) INTO n FROM @extschema@.mail_threads t
	  LEFT JOIN LATERAL (
		SELECT count(*) AS c, min(m.internal_date) AS first_at, max(m.internal_date) AS last_at
		  FROM @extschema@.mail_messages m
		 WHERE m.mailbox_id = t.mailbox_id AND m.thread_id = t.id AND m.deleted_at IS NULL) s ON true
	 WHERE t.mailbox_id = mb
	   AND (t.message_count <> s.c
	        OR t.first_message_at IS DISTINCT FROM s.first_at
	        OR t.last_message_at IS DISTINCT FROM s.last_at);
	check_name := 'thread counts consistent'; ok := n = 0;
	detail := format('%s threads whose count or dates differ from their messages', n); RETURN NEXT;

	SELECT count(*) INTO n FROM @extschema@.mail_messages m
	 WHERE m.mailbox_id = mb AND m.provider_thread_id IS DISTINCT FROM
	       (SELECT t.provider_thread_id FROM @extschema@.mail_threads t
	         WHERE t.mailbox_id = m.mailbox_id AND t.id = m.thread_id);
	check_name := 'messages in their thread'; ok := n = 0;
	detail := format('%s messages whose provider_thread_id differs from their thread', n); RETURN NEXT;

	-- Ledger intact: every stored item has the event that inserted it, and
	-- every finished run is bracketed by exactly one start and one end.
	SELECT count(*) INTO n FROM @extschema@.mail_messages m
	 WHERE m.mailbox_id = mb AND NOT EXISTS (
		SELECT 1 FROM @extschema@.ledger l
		 WHERE l.mailbox_id = mb AND l.event = 'message.ingested' AND l.entity_id = m.id
		   AND l.detail->>'action' = 'inserted');
	SELECT n + count(*) INTO n FROM @extschema@.mail_attachments a
	 WHERE a.mailbox_id = mb AND NOT EXISTS (
		SELECT 1 FROM @extschema@.ledger l
		 WHERE l.mailbox_id = mb AND l.event = 'attachment.saved' AND l.entity_id = a.id
		   AND l.detail->>'action' = 'inserted');
	SELECT n + count(*) INTO n FROM @extschema@.sync_runs r
	 WHERE r.mailbox_id = mb AND r.status <> 'running'
	   AND ((SELECT count(*) FROM @extschema@.ledger l WHERE l.mailbox_id = mb AND l.sync_run_id = r.id
	          AND l.event = 'sync.started') <> 1
	     OR (SELECT count(*) FROM @extschema@.ledger l WHERE l.mailbox_id = mb AND l.sync_run_id = r.id
	          AND l.event IN ('sync.completed', 'sync.failed')) <> 1);
	check_name := 'ledger intact'; ok := n = 0;
	detail := format('%s items or runs without their ledger events', n); RETURN NEXT;

	-- Bytes in the object store: a content whose blob row holds no bytes
	-- has an object recorded at its key, and the store holds every object
	-- recorded (HEAD and size; deep: GET and sha256), missing ones by key.
	SELECT count(*) INTO n FROM @extschema@.mail_attachments a
	  JOIN @extschema@.blobs b ON b.mailbox_id = a.mailbox_id AND b.sha256 = a.sha256
	 WHERE a.mailbox_id = mb AND b.data IS NULL
	   AND NOT EXISTS (SELECT 1 FROM @extschema@.objects o
	                    WHERE o.mailbox_id = mb AND o.object_key = a.storage_path AND o.sha256 = a.sha256);
	SELECT n + count(*) INTO n FROM @extschema@.mail_messages m
	  JOIN @extschema@.blobs b ON b.mailbox_id = m.mailbox_id AND b.sha256 = m.raw_sha256
	  JOIN @extschema@.mailboxes x ON x.id = m.mailbox_id
	 WHERE m.mailbox_id = mb AND b.data IS NULL
	   AND NOT EXISTS (SELECT 1 FROM @extschema@.objects o
	                    WHERE o.mailbox_id = mb AND o.sha256 = m.raw_sha256
	                      AND o.object_key = format('%s/%s/raw/%s.eml', x.org_id, mb, m.raw_sha256));
	check_name := 'bytes kept'; ok := n = 0;
	detail := format('%s attachments or raw messages without their bytes', n); RETURN NEXT;
	IF EXISTS (SELECT 1 FROM @extschema@.objects o WHERE o.mailbox_id = mb) THEN
		RETURN QUERY SELECT * FROM @extschema@._verify_objects(mb, verify.deep);
	END IF;
END
$$;
COMMENT ON FUNCTION @extschema@.verify(bigint, boolean) IS
  'The idempotency proof as a query: every row says whether one invariant of the mailbox holds; deep => true also hashes every object in the object store';

REVOKE ALL ON TABLE @extschema@.objects FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._verify_objects(bigint, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._migrate_blobs_batch(text, integer) FROM PUBLIC;
REVOKE ALL ON PROCEDURE @extschema@.migrate_blobs(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.gc_objects(boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.verify(bigint, boolean) FROM PUBLIC;

------------------------------------------------------------------------
-- blobs keyed by (mailbox_id, sha256) (SPEC 7e): Citus distributes every
-- data table by mailbox_id and a distributed table's keys must include it,
-- so content is addressed within its mailbox.  1.0 kept one row per
-- content for the whole database: each row is copied to every mailbox that
-- refers to it (attachments, raw messages, recorded objects); a row no
-- mailbox refers to (none is left by 1.0's transactional runs) has no
-- mailbox to go to and is dropped.
------------------------------------------------------------------------
ALTER TABLE @extschema@.mail_messages DROP CONSTRAINT mail_messages_raw_sha256_fkey;
ALTER TABLE @extschema@.mail_attachments DROP CONSTRAINT mail_attachments_sha256_fkey;
ALTER TABLE @extschema@.objects DROP CONSTRAINT objects_sha256_fkey;
ALTER TABLE @extschema@.blobs DROP CONSTRAINT blobs_pkey;
ALTER TABLE @extschema@.blobs ADD COLUMN mailbox_id bigint;

INSERT INTO @extschema@.blobs (sha256, size_bytes, data, created_at, mailbox_id)
SELECT b.sha256, b.size_bytes, b.data, b.created_at, r.mailbox_id
  FROM @extschema@.blobs b
  JOIN (SELECT a.mailbox_id, a.sha256 FROM @extschema@.mail_attachments a
        UNION
        SELECT m.mailbox_id, m.raw_sha256 FROM @extschema@.mail_messages m WHERE m.raw_sha256 IS NOT NULL
        UNION
        SELECT o.mailbox_id, o.sha256 FROM @extschema@.objects o) r ON r.sha256 = b.sha256
 WHERE b.mailbox_id IS NULL;
DELETE FROM @extschema@.blobs b WHERE b.mailbox_id IS NULL;

ALTER TABLE @extschema@.blobs ALTER COLUMN mailbox_id SET NOT NULL;
ALTER TABLE @extschema@.blobs ADD CONSTRAINT blobs_pkey PRIMARY KEY (mailbox_id, sha256);
ALTER TABLE @extschema@.blobs ADD CONSTRAINT blobs_mailbox_id_fkey
	FOREIGN KEY (mailbox_id) REFERENCES @extschema@.mailboxes (id);
ALTER TABLE @extschema@.mail_messages ADD CONSTRAINT mail_messages_mailbox_id_raw_sha256_fkey
	FOREIGN KEY (mailbox_id, raw_sha256) REFERENCES @extschema@.blobs (mailbox_id, sha256);
ALTER TABLE @extschema@.mail_attachments ADD CONSTRAINT mail_attachments_mailbox_id_sha256_fkey
	FOREIGN KEY (mailbox_id, sha256) REFERENCES @extschema@.blobs (mailbox_id, sha256);
ALTER TABLE @extschema@.objects ADD CONSTRAINT objects_mailbox_id_sha256_fkey
	FOREIGN KEY (mailbox_id, sha256) REFERENCES @extschema@.blobs (mailbox_id, sha256);
DROP INDEX @extschema@.mail_attachments_sha256_idx;
CREATE INDEX ON @extschema@.mail_attachments (mailbox_id, sha256);
DROP INDEX @extschema@.objects_sha256_idx;
CREATE INDEX objects_sha256_idx ON @extschema@.objects (mailbox_id, sha256);
COMMENT ON TABLE @extschema@.blobs IS
  'Content-addressed bytes (attachments, raw messages): one row per distinct content of a mailbox';

------------------------------------------------------------------------
-- Citus (SPEC 7e): distribute() makes the schema a distributed one, run
-- once on the coordinator after CREATE EXTENSION citus and gmail_ingest
-- and citus_add_node of every worker.  mailboxes is a reference table (its
-- UNIQUE (org_id, provider_email) cannot hold the distribution column), so
-- are the service accounts; every table holding a mailbox's data is
-- distributed by mailbox_id, co-located, so a mailbox's rows and their
-- keys live on one node; push_batches stays on the coordinator.
------------------------------------------------------------------------
CREATE FUNCTION @extschema@.distribute(shard_count integer DEFAULT 32)
RETURNS TABLE (table_name text, citus_table_type text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
-- Citus's notices about copying each table's rows are dropped: they advise
-- a truncation distribute() makes itself
SET search_path = pg_catalog, pg_temp SET client_min_messages = warning AS $$
DECLARE
	v_reference CONSTANT text[] := ARRAY['mailboxes', 'service_accounts', 'service_account_keys'];
	-- the first is the co-location group's anchor
	v_distributed CONSTANT text[] := ARRAY['mail_threads', 'mail_messages', 'blobs', 'mail_attachments',
	                                       'sync_runs', 'ledger', 'backfill_threads', 'backfill_queue',
	                                       'objects', 'mailbox_credentials'];
	v_tables text[] := v_reference || v_distributed;
	v_todo boolean;
	v_fk record;
	v_fk_rels text[] := '{}';
	v_fk_names text[] := '{}';
	v_fk_defs text[] := '{}';
	v_t text;
	v_i integer;
	v_seq regclass;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
		RAISE EXCEPTION 'distribute() needs Citus'
			USING ERRCODE = 'object_not_in_prerequisite_state',
			      HINT = 'Preload citus before gmail_ingest, CREATE EXTENSION citus, add the workers (citus_add_node), then call distribute() on the coordinator.';
	END IF;
	IF shard_count IS NULL OR shard_count NOT BETWEEN 1 AND 4096 THEN
		RAISE EXCEPTION 'shard_count must be between 1 and 4096, got %', shard_count
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT (SELECT citus_is_coordinator()) THEN
		RAISE EXCEPTION 'distribute() runs on the Citus coordinator'
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	-- Foreign keys to reference tables make Citus use one connection per
	-- node in a transaction that writes them; every session of the
	-- database is told so (the setting reaches the workers too).
	PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
	EXECUTE format('ALTER DATABASE %I SET citus.multi_shard_modify_mode TO sequential', current_database());
	-- the ledger's append-only triggers go to its shards
	PERFORM set_config('citus.enable_unsafe_triggers', 'on', true);

	SELECT EXISTS (SELECT 1 FROM unnest(v_tables) t(n)
	                WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition p
	                                   WHERE p.logicalrelid = ('@extschema@.' || t.n)::regclass))
	  INTO v_todo;
	IF v_todo THEN
		-- Identity sequences get their position from the rows while the
		-- tables are still local.
		PERFORM @extschema@._repair_sequences();
		-- Citus converts a table only when every table its foreign keys
		-- reach is converted already, and would recreate the extension's
		-- tables on the workers to do so: the keys are dropped on every
		-- node first and added back once every table is converted (then
		-- they hold on every shard).
		FOR v_fk IN
			SELECT c.conrelid::regclass::text AS rel, c.conname, pg_get_constraintdef(c.oid) AS def
			  FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid
			 WHERE c.contype = 'f' AND r.relnamespace = '@extschema@'::regnamespace
			   AND r.relname = ANY (v_tables)
			 ORDER BY 1, 2
		LOOP
			v_fk_rels := v_fk_rels || v_fk.rel;
			v_fk_names := v_fk_names || v_fk.conname;
			v_fk_defs := v_fk_defs || v_fk.def;
			EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', v_fk.rel, v_fk.conname);
			IF EXISTS (SELECT 1 FROM run_command_on_workers(format(
				'DO $d$ BEGIN PERFORM set_config(''citus.enable_ddl_propagation'', ''off'', true); '
				'ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I; END $d$', v_fk.rel, v_fk.conname)) r
			           WHERE NOT r.success) THEN
				RAISE EXCEPTION 'could not drop % on every worker', v_fk.conname
					USING ERRCODE = 'connection_failure';
			END IF;
		END LOOP;
		FOREACH v_t IN ARRAY v_tables LOOP
			CONTINUE WHEN EXISTS (SELECT 1 FROM pg_dist_partition p
			                       WHERE p.logicalrelid = ('@extschema@.' || v_t)::regclass);
			IF v_t = ANY (v_reference) THEN
				PERFORM create_reference_table(('@extschema@.' || v_t)::regclass);
			ELSIF v_t = v_distributed[1] THEN
				PERFORM create_distributed_table(('@extschema@.' || v_t)::regclass, 'mailbox_id',
				                                 shard_count => distribute.shard_count, colocate_with => 'none');
			ELSE
				PERFORM create_distributed_table(('@extschema@.' || v_t)::regclass, 'mailbox_id',
				                                 colocate_with => '@extschema@.' || v_distributed[1]);
			END IF;
			-- the rows are in the shards now; the coordinator's copy goes
			-- (the ledger's own trigger would refuse the TRUNCATE)
			PERFORM set_config('session_replication_role', 'replica', true);
			PERFORM truncate_local_data_after_distributing_table(('@extschema@.' || v_t)::regclass);
			PERFORM set_config('session_replication_role', 'origin', true);
		END LOOP;
		FOR v_i IN 1 .. cardinality(v_fk_rels) LOOP
			EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', v_fk_rels[v_i], v_fk_names[v_i], v_fk_defs[v_i]);
		END LOOP;
	END IF;
	-- Identity columns: Citus gives the nodes of a table it creates their
	-- own ranges, but leaves the extension's own tables alone; each worker
	-- moves its sequences to the range of its group (group id << 48), so a
	-- row's id says which node inserted it and ids never collide (unique,
	-- not monotonic).  A sequence left unused would make _repair_sequences
	-- look for the largest id across the cluster: the coordinator draws one.
	FOREACH v_t IN ARRAY ARRAY['mailboxes', 'mail_threads', 'mail_messages', 'mail_attachments',
	                           'sync_runs', 'ledger'] LOOP
		v_seq := pg_get_serial_sequence('@extschema@.' || v_t, 'id')::regclass;
		IF EXISTS (SELECT 1 FROM run_command_on_all_nodes(format(
			'SELECT CASE WHEN g.groupid = 0 THEN CASE WHEN pg_sequence_last_value(%1$L::regclass) IS NULL'
			'                                         THEN nextval(%1$L::regclass) END'
			'            WHEN coalesce(pg_sequence_last_value(%1$L::regclass), 0) < g.groupid::bigint << 48'
			'            THEN setval(%1$L::regclass, g.groupid::bigint << 48) END'
			'  FROM pg_dist_local_group g', v_seq::text)) r WHERE NOT r.success) THEN
			RAISE EXCEPTION 'could not set the range of % on every node', v_seq
				USING ERRCODE = 'connection_failure';
		END IF;
	END LOOP;
	-- A call on the coordinator, SELECT gmail_sync(id, ...), runs on the
	-- node holding the mailbox's shards: the HTTP work, the parsing and the
	-- writes happen there, locally.
	PERFORM create_distributed_function('@extschema@.gmail_sync(bigint,integer,boolean)'::regprocedure,
	                                    'mailbox_id', colocate_with => '@extschema@.' || v_distributed[1]);
	PERFORM create_distributed_function('@extschema@._backfill_step(bigint,integer,integer)'::regprocedure,
	                                    'mailbox_id', colocate_with => '@extschema@.' || v_distributed[1]);
	PERFORM create_distributed_function('@extschema@.gmail_backfill(bigint,integer,integer)'::regprocedure,
	                                    'mailbox_id', colocate_with => '@extschema@.' || v_distributed[1]);

	RETURN QUERY
	SELECT t.n, coalesce((SELECT CASE p.partmethod WHEN 'h' THEN 'distributed by mailbox_id'
	                                               WHEN 'n' THEN 'reference' END
	                        FROM pg_dist_partition p
	                       WHERE p.logicalrelid = ('@extschema@.' || t.n)::regclass), 'local')
	  FROM unnest(v_tables || ARRAY['push_batches']) t(n);
END
$$;
COMMENT ON FUNCTION @extschema@.distribute(integer) IS
  'On a Citus coordinator: makes mailboxes and the service accounts reference tables and distributes every data table by mailbox_id, co-located, keeping every key; idempotent; returns each table''s kind';
REVOKE ALL ON FUNCTION @extschema@.distribute(integer) FROM PUBLIC;

-- Bodies and headers are text that pglz compresses slowly for little gain
-- (issue 15: a tenth of a sync's CPU); lz4 compresses them several times
-- faster.  In an updated installation only rows written afterwards use it.
DO $$
BEGIN
	ALTER TABLE @extschema@.mail_messages
		ALTER COLUMN body_text SET COMPRESSION lz4,
		ALTER COLUMN body_html SET COMPRESSION lz4,
		ALTER COLUMN headers SET COMPRESSION lz4,
		ALTER COLUMN addresses SET COMPRESSION lz4,
		ALTER COLUMN "references" SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
	NULL;	-- a server built without lz4 keeps its default
END
$$;
