-- The catalog of store format version 1, as tfblackbox 0.1 created it (SQLAlchemy create_all).
CREATE TABLE meta (
	"key" VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY ("key")
);
CREATE TABLE runs (
	run_id VARCHAR(64) NOT NULL, 
	project VARCHAR(256), 
	name VARCHAR(256), 
	group_name VARCHAR(256), 
	notes TEXT, 
	status VARCHAR(16) NOT NULL, 
	exit_code INTEGER, 
	config_json TEXT NOT NULL, 
	tags_json TEXT NOT NULL, 
	host VARCHAR(256), 
	pid INTEGER, 
	command TEXT, 
	python_version VARCHAR(64), 
	tf_version VARCHAR(64), 
	tfblackbox_version VARCHAR(64), 
	git_commit VARCHAR(64), 
	started_at FLOAT NOT NULL, 
	ended_at FLOAT, 
	heartbeat_at FLOAT, 
	PRIMARY KEY (run_id)
);
CREATE TABLE writers (
	writer_id INTEGER NOT NULL, 
	run_id VARCHAR(64) NOT NULL, 
	attempt INTEGER NOT NULL, 
	host VARCHAR(256), 
	pid INTEGER, 
	started_at FLOAT NOT NULL, 
	ended_at FLOAT, 
	first_step INTEGER, 
	dropped_rows INTEGER NOT NULL, 
	error TEXT, 
	PRIMARY KEY (writer_id), 
	FOREIGN KEY(run_id) REFERENCES runs (run_id)
);
CREATE INDEX ix_writers_run_id ON writers (run_id);
CREATE TABLE cursors (
	run_id VARCHAR(64) NOT NULL, 
	destination VARCHAR(256) NOT NULL, 
	step INTEGER, 
	state_json TEXT NOT NULL, 
	updated_at FLOAT NOT NULL, 
	PRIMARY KEY (run_id, destination), 
	FOREIGN KEY(run_id) REFERENCES runs (run_id)
);
CREATE TABLE segments (
	segment_id INTEGER NOT NULL, 
	run_id VARCHAR(64) NOT NULL, 
	table_name VARCHAR(64) NOT NULL, 
	writer_id INTEGER, 
	path VARCHAR(1024) NOT NULL, 
	row_count INTEGER NOT NULL, 
	size_bytes INTEGER NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	min_step INTEGER, 
	max_step INTEGER, 
	created_at FLOAT NOT NULL, 
	PRIMARY KEY (segment_id), 
	FOREIGN KEY(run_id) REFERENCES runs (run_id), 
	FOREIGN KEY(writer_id) REFERENCES writers (writer_id), 
	UNIQUE (path)
);
CREATE INDEX ix_segments_run_table ON segments (run_id, table_name);
