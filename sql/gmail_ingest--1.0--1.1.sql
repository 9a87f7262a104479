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
		    updated_at = now()
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
	-- mailbox never synced): a shorter interval brings it forward.
	UPDATE @extschema@.mailboxes m
	   SET sync_interval = set_schedule.sync_interval,
	       window_days = set_schedule.window_days,
	       next_sync_at = coalesce(m.last_synced_at + set_schedule.sync_interval, now())
	 WHERE m.id = set_schedule.mailbox_id
	RETURNING m.next_sync_at INTO v_next;
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
	   AND NOT EXISTS (SELECT 1 FROM @extschema@.blobs b WHERE b.sha256 = a.sha256);
	check_name := 'attachment blobs present'; ok := n = 0;
	detail := format('%s attachments without their blob', n); RETURN NEXT;

	SELECT count(*) INTO n FROM @extschema@.mail_messages m
	 WHERE m.mailbox_id = mb AND m.raw_sha256 IS NOT NULL
	   AND NOT EXISTS (SELECT 1 FROM @extschema@.blobs b WHERE b.sha256 = m.raw_sha256);
	check_name := 'raw message blobs present'; ok := n = 0;
	detail := format('%s messages without their raw blob', n); RETURN NEXT;

	SELECT count(*) INTO n FROM @extschema@.blobs b
	 WHERE (b.sha256 IN (SELECT a.sha256 FROM @extschema@.mail_attachments a WHERE a.mailbox_id = mb)
	        OR b.sha256 IN (SELECT m.raw_sha256 FROM @extschema@.mail_messages m WHERE m.mailbox_id = mb))
	   AND (encode(sha256(b.data), 'hex') <> b.sha256 OR length(b.data) <> b.size_bytes);
	check_name := 'blob hashes match'; ok := n = 0;
	detail := format('%s blobs whose bytes do not match their sha256 or size', n); RETURN NEXT;

	SELECT count(*) INTO n FROM @extschema@.mail_attachments a
	  JOIN @extschema@.blobs b ON b.sha256 = a.sha256
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
	  JOIN @extschema@.blobs b ON b.sha256 = a.sha256
	 WHERE a.mailbox_id = mb AND b.data IS NULL
	   AND NOT EXISTS (SELECT 1 FROM @extschema@.objects o
	                    WHERE o.mailbox_id = mb AND o.object_key = a.storage_path AND o.sha256 = a.sha256);
	SELECT n + count(*) INTO n FROM @extschema@.mail_messages m
	  JOIN @extschema@.blobs b ON b.sha256 = m.raw_sha256
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
