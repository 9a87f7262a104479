-- test/lib/schema_catalog.sql: the gmail_ingest schema as the catalogs see
-- it, one sorted line per fact, so that two databases can be compared with
-- diff (test/scripts/upgrade.sh: a 1.0 database after ALTER EXTENSION UPDATE
-- against a fresh install).  Covers columns (type, default, NOT NULL,
-- compression), constraints, indexes, routines (arguments, result,
-- volatility, strictness, parallel safety, SECURITY DEFINER, settings, body),
-- policies, triggers, row-level security flags, views, privileges, comments,
-- sequences, and what pg_dump keeps (the extension's config tables).
\pset tuples_only on
\pset format unaligned
WITH ns AS (SELECT 'gmail_ingest'::regnamespace AS oid),
rel AS (SELECT c.* FROM pg_class c, ns WHERE c.relnamespace = ns.oid),
facts AS (
	SELECT format('relation %s kind=%s rls=%s force_rls=%s options=%s acl=%s comment=%s',
	              r.relname, r.relkind, r.relrowsecurity, r.relforcerowsecurity, r.reloptions,
	              r.relacl, obj_description(r.oid, 'pg_class'))
	  FROM rel r
	UNION ALL
	SELECT format('column %s.%s type=%s notnull=%s default=%s identity=%s generated=%s compression=%s comment=%s',
	              r.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
	              pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated, a.attcompression,
	              col_description(r.oid, a.attnum))
	  FROM rel r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
	  LEFT JOIN pg_attrdef d ON d.adrelid = r.oid AND d.adnum = a.attnum
	UNION ALL
	SELECT format('constraint %s.%s %s', r.relname, co.conname, pg_get_constraintdef(co.oid))
	  FROM rel r JOIN pg_constraint co ON co.conrelid = r.oid
	UNION ALL
	SELECT format('index %s', pg_get_indexdef(i.indexrelid))
	  FROM rel r JOIN pg_index i ON i.indrelid = r.oid
	UNION ALL
	SELECT format('sequence %s type=%s start=%s increment=%s cycle=%s',
	              r.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqcycle)
	  FROM rel r JOIN pg_sequence s ON s.seqrelid = r.oid
	UNION ALL
	SELECT format('routine %s(%s) returns=%s kind=%s volatile=%s strict=%s parallel=%s secdef=%s config=%s acl=%s body=%s comment=%s',
	              p.proname, pg_get_function_identity_arguments(p.oid), pg_get_function_result(p.oid),
	              p.prokind, p.provolatile, p.proisstrict, p.proparallel, p.prosecdef, p.proconfig,
	              p.proacl, md5(p.prosrc), obj_description(p.oid, 'pg_proc'))
	  FROM pg_proc p, ns WHERE p.pronamespace = ns.oid
	UNION ALL
	SELECT format('function arguments %s: %s', p.proname, pg_get_function_arguments(p.oid))
	  FROM pg_proc p, ns WHERE p.pronamespace = ns.oid
	UNION ALL
	SELECT format('policy %s.%s cmd=%s permissive=%s roles=%s using=%s check=%s',
	              r.relname, po.polname, po.polcmd, po.polpermissive, po.polroles,
	              pg_get_expr(po.polqual, po.polrelid), pg_get_expr(po.polwithcheck, po.polrelid))
	  FROM rel r JOIN pg_policy po ON po.polrelid = r.oid
	UNION ALL
	SELECT format('trigger %s comment=%s', pg_get_triggerdef(t.oid), obj_description(t.oid, 'pg_trigger'))
	  FROM rel r JOIN pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
	UNION ALL
	SELECT format('view %s: %s', r.relname, pg_get_viewdef(r.oid))
	  FROM rel r WHERE r.relkind IN ('v', 'm')
	UNION ALL
	SELECT format('type %s kind=%s', t.typname, t.typtype)
	  FROM pg_type t, ns WHERE t.typnamespace = ns.oid
	UNION ALL
	SELECT format('schema acl=%s comment=%s', n.nspacl, obj_description(n.oid, 'pg_namespace'))
	  FROM pg_namespace n, ns WHERE n.oid = ns.oid
	UNION ALL
	SELECT format('extension member %s', pg_describe_object(d.classid, d.objid, d.objsubid))
	  FROM pg_depend d JOIN pg_extension e ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
	 WHERE e.extname = 'gmail_ingest' AND d.deptype = 'e'
	UNION ALL
	SELECT format('dumped by pg_dump %s condition=%s', c.oid::regclass, x.cond)
	  FROM pg_extension e,
	       unnest(e.extconfig, e.extcondition) AS x(reloid, cond)
	  JOIN pg_class c ON c.oid = x.reloid
	 WHERE e.extname = 'gmail_ingest'
)
SELECT f FROM facts AS t(f) ORDER BY 1;
