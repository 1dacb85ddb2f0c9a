-- A database written by sds before Alembic (schema_version 1), dumped with sqlite3's
-- iterdump: tests/test_migrations.py upgrades it.
BEGIN TRANSACTION;
CREATE TABLE evaluations (
	id INTEGER NOT NULL, 
	run_id INTEGER, 
	runtime_id INTEGER, 
	program_id INTEGER, 
	stage VARCHAR(32) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	metrics JSON NOT NULL, 
	error TEXT, 
	artifacts JSON NOT NULL, 
	workload VARCHAR(200), 
	workload_hash VARCHAR(64), 
	device VARCHAR(200), 
	environment JSON, 
	duration_s FLOAT, 
	attempt INTEGER NOT NULL, 
	worker VARCHAR(200), 
	lease_expires_at DATETIME, 
	heartbeat_at DATETIME, 
	created_at DATETIME NOT NULL, 
	started_at DATETIME, 
	finished_at DATETIME, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES runs (id), 
	FOREIGN KEY(runtime_id) REFERENCES runtimes (id), 
	FOREIGN KEY(program_id) REFERENCES programs (id)
);
INSERT INTO "evaluations" VALUES(1,1,1,NULL,'bench','passed','{"tok_s": 100.0}',NULL,'{}',NULL,NULL,NULL,'null',NULL,1,NULL,NULL,NULL,'2026-12-01 19:29:32.644962',NULL,'2026-12-01 19:29:32.644962');
INSERT INTO "evaluations" VALUES(2,1,2,NULL,'bench','passed','{"tok_s": 125.0}',NULL,'{}',NULL,NULL,NULL,'null',NULL,1,NULL,NULL,NULL,'2026-12-01 19:29:32.646222',NULL,'2026-12-01 19:29:32.646222');
CREATE TABLE events (
	id INTEGER NOT NULL, 
	run_id INTEGER, 
	kind VARCHAR(64) NOT NULL, 
	data JSON, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES runs (id)
);
INSERT INTO "events" VALUES(1,1,'resume','{"n": 1}','2026-12-01 19:29:32.647021');
CREATE TABLE llm_calls (
	id INTEGER NOT NULL, 
	run_id INTEGER, 
	model VARCHAR(200) NOT NULL, 
	prompt TEXT NOT NULL, 
	response TEXT, 
	tokens_in INTEGER NOT NULL, 
	tokens_out INTEGER NOT NULL, 
	cost_usd FLOAT NOT NULL, 
	latency_s FLOAT NOT NULL, 
	error TEXT, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES runs (id)
);
CREATE TABLE programs (
	id INTEGER NOT NULL, 
	slot VARCHAR(64) NOT NULL, 
	code TEXT NOT NULL, 
	code_hash VARCHAR(64) NOT NULL, 
	name VARCHAR(200), 
	parent_id INTEGER, 
	operator VARCHAR(64) NOT NULL, 
	diff TEXT, 
	llm_call_id INTEGER, 
	run_id INTEGER, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (code_hash), 
	FOREIGN KEY(parent_id) REFERENCES programs (id), 
	FOREIGN KEY(llm_call_id) REFERENCES llm_calls (id), 
	FOREIGN KEY(run_id) REFERENCES runs (id)
);
INSERT INTO "programs" VALUES(1,'scheduler','def f():
    return 1
','5b76d0962c09ab4ee309fac65fad3568c97abdec983b405146ae3e86a235e352',NULL,NULL,'seed',NULL,NULL,1,'2026-12-01 19:29:32.635352');
INSERT INTO "programs" VALUES(2,'scheduler','def f():
    return 2
','b7fdeefd2ff2fd36afb5919c77890537a8d74c15b1fc316059fc69dfb527a93f',NULL,1,'literal','--- p1
+++ child
@@ -1,2 +1,2 @@
 def f():
-    return 1
+    return 2
',NULL,1,'2026-12-01 19:29:32.637810');
CREATE TABLE runs (
	id INTEGER NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	config JSON NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	seed INTEGER NOT NULL, 
	environment JSON, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (name)
);
INSERT INTO "runs" VALUES(1,'old-run','{"budget": {"max_evaluations": 3}}','created',7,'null','2026-12-01 19:29:32.633030','2026-12-01 19:29:32.633037');
CREATE TABLE runtime_parents (
	child_id INTEGER NOT NULL, 
	parent_id INTEGER NOT NULL, 
	role VARCHAR(16) NOT NULL, 
	PRIMARY KEY (child_id, parent_id, role), 
	FOREIGN KEY(child_id) REFERENCES runtimes (id), 
	FOREIGN KEY(parent_id) REFERENCES runtimes (id)
);
INSERT INTO "runtime_parents" VALUES(2,1,'parent');
CREATE TABLE runtime_slots (
	runtime_id INTEGER NOT NULL, 
	slot VARCHAR(64) NOT NULL, 
	program_ref VARCHAR(300) NOT NULL, 
	program_id INTEGER, 
	params JSON NOT NULL, 
	PRIMARY KEY (runtime_id, slot), 
	FOREIGN KEY(runtime_id) REFERENCES runtimes (id), 
	FOREIGN KEY(program_id) REFERENCES programs (id)
);
INSERT INTO "runtime_slots" VALUES(1,'scheduler','sha256:5b76d0962c09ab4ee309fac65fad3568c97abdec983b405146ae3e86a235e352',1,'{}');
INSERT INTO "runtime_slots" VALUES(2,'scheduler','sha256:b7fdeefd2ff2fd36afb5919c77890537a8d74c15b1fc316059fc69dfb527a93f',2,'{}');
CREATE TABLE runtimes (
	id INTEGER NOT NULL, 
	run_id INTEGER NOT NULL, 
	spec JSON NOT NULL, 
	spec_hash VARCHAR(64) NOT NULL, 
	island INTEGER NOT NULL, 
	generation INTEGER NOT NULL, 
	operator VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES runs (id)
);
INSERT INTO "runtimes" VALUES(1,1,'{"slots": {"scheduler": {"program": "sha256:5b76d0962c09ab4ee309fac65fad3568c97abdec983b405146ae3e86a235e352"}}}','8ddf8a6c862e505a173884a010cb482ff1be080e2ab3a7f55fcaf44055e498c6',0,0,'seed','2026-12-01 19:29:32.639800');
INSERT INTO "runtimes" VALUES(2,1,'{"slots": {"scheduler": {"program": "sha256:b7fdeefd2ff2fd36afb5919c77890537a8d74c15b1fc316059fc69dfb527a93f"}}}','435bed18dccf0dcf049939844f2397951ccc69c2159255f966722eb53b3bf971',0,1,'literal','2026-12-01 19:29:32.641838');
CREATE TABLE schema_version (
	id INTEGER NOT NULL, 
	version INTEGER NOT NULL, 
	applied_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "schema_version" VALUES(1,1,'2026-12-01 19:29:32.630376');
CREATE INDEX ix_llm_calls_run_id ON llm_calls (run_id);
CREATE INDEX ix_runtimes_run_island_gen ON runtimes (run_id, island, generation);
CREATE INDEX ix_runtimes_spec_hash ON runtimes (spec_hash);
CREATE INDEX ix_events_run_kind ON events (run_id, kind);
CREATE INDEX ix_programs_parent_id ON programs (parent_id);
CREATE INDEX ix_programs_run_id ON programs (run_id);
CREATE INDEX ix_programs_slot ON programs (slot);
CREATE INDEX ix_runtime_parents_parent_id ON runtime_parents (parent_id);
CREATE INDEX ix_runtime_slots_program_id ON runtime_slots (program_id);
CREATE INDEX ix_evaluations_runtime ON evaluations (runtime_id, stage, status);
CREATE INDEX ix_evaluations_run ON evaluations (run_id, stage, status);
CREATE INDEX ix_evaluations_program ON evaluations (program_id, stage, status);
CREATE INDEX ix_evaluations_queue ON evaluations (status, lease_expires_at);
COMMIT;
