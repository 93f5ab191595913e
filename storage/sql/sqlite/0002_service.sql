-- The service's records: accounts and tokens, grid responsibilities, photos, field reports, cases and their
-- audit log, surveys, upload batches and durable jobs (see storage/records.py, which holds the only SQL
-- that reads and writes them, shared with the SQLite backend).
-- Times are ISO-8601 UTC text (fixed width, so they compare as text); JSON is text checked by json_valid;
-- booleans are 0/1; points are lon/lat columns (the PostGIS schema adds a geometry).

CREATE TABLE "accounts" (
    "username"      TEXT PRIMARY KEY,
    "role"          TEXT NOT NULL CHECK ("role" IN ('grid_worker', 'supervisor', 'pipeline', 'admin')),
    "display_name"  TEXT NOT NULL DEFAULT '',
    "password_hash" TEXT NOT NULL,
    "scope"         TEXT NOT NULL DEFAULT '[]' CHECK (json_valid("scope") AND json_type("scope") = 'array'),
    "absent"        INTEGER NOT NULL DEFAULT 0 CHECK ("absent" IN (0, 1)),
    "max_open"      INTEGER NOT NULL DEFAULT 30 CHECK ("max_open" > 0),
    "created_at"    TEXT NOT NULL
);

CREATE TABLE "tokens" (
    "token_hash" TEXT PRIMARY KEY,
    "username"   TEXT NOT NULL REFERENCES "accounts" ("username") ON DELETE CASCADE,
    "created_at" TEXT NOT NULL,
    "expires_at" TEXT NOT NULL
);
CREATE INDEX "tokens_username_idx" ON "tokens" ("username");

CREATE TABLE "grid_assignments" (
    "grid_code" TEXT PRIMARY KEY,
    "worker"    TEXT REFERENCES "accounts" ("username") ON DELETE SET NULL,
    "backup"    TEXT REFERENCES "accounts" ("username") ON DELETE SET NULL
);

CREATE TABLE "photos" (
    "sha256"     TEXT PRIMARY KEY CHECK (length("sha256") = 64),
    "bytes"      INTEGER NOT NULL,
    "width"      INTEGER NOT NULL,
    "height"     INTEGER NOT NULL,
    "format"     TEXT NOT NULL,
    "exif"       TEXT NOT NULL DEFAULT '{}' CHECK (json_valid("exif")),
    "created_at" TEXT NOT NULL
);

CREATE TABLE "cases" (
    "id"               INTEGER PRIMARY KEY AUTOINCREMENT,
    "category"         TEXT NOT NULL,
    "source"           TEXT NOT NULL CHECK ("source" IN ('report', 'pipeline', 'hotline', 'supervisor')),
    "state"            TEXT NOT NULL
                       CHECK ("state" IN ('reported', 'registered', 'dispatched', 'handled', 'verified', 'closed', 'cancelled')),
    "lon"              REAL NOT NULL CHECK ("lon" BETWEEN -180 AND 180),
    "lat"              REAL NOT NULL CHECK ("lat" BETWEEN -90 AND 90),
    "street"           TEXT,
    "community"        TEXT,
    "grid"             TEXT,
    "courtyard"        TEXT,
    "assignee"         TEXT,
    "description"      TEXT NOT NULL DEFAULT '',
    "source_ref"       TEXT UNIQUE,
    "attributes"       TEXT NOT NULL DEFAULT '{}' CHECK (json_valid("attributes")),
    "escalation_level" INTEGER NOT NULL DEFAULT 0,
    "reported_at"      TEXT NOT NULL,
    "registered_at"    TEXT,
    "dispatched_at"    TEXT,
    "handled_at"       TEXT,
    "verified_at"      TEXT,
    "closed_at"        TEXT,
    "deadline_at"      TEXT,
    "updated_at"       TEXT NOT NULL,
    "version"          INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX "cases_state_idx" ON "cases" ("state");
CREATE INDEX "cases_grid_idx" ON "cases" ("grid");
CREATE INDEX "cases_assignee_idx" ON "cases" ("assignee");
CREATE INDEX "cases_category_lonlat_idx" ON "cases" ("category", "lat", "lon");

-- The audit log: append only. Each event carries the SHA-256 of its predecessor's hash and its own content,
-- so a rewrite anywhere breaks the chain (storage.records.verify_chain); the triggers refuse UPDATE and
-- DELETE outright.
CREATE TABLE "case_events" (
    "id"         INTEGER PRIMARY KEY AUTOINCREMENT,
    "case_id"    INTEGER NOT NULL REFERENCES "cases" ("id"),
    "seq"        INTEGER NOT NULL,
    "at"         TEXT NOT NULL,
    "actor"      TEXT NOT NULL,
    "role"       TEXT NOT NULL,
    "action"     TEXT NOT NULL,
    "from_state" TEXT,
    "to_state"   TEXT NOT NULL,
    "assignee"   TEXT,
    "note"       TEXT NOT NULL DEFAULT '',
    "photos"     TEXT NOT NULL DEFAULT '[]' CHECK (json_valid("photos")),
    "prev_hash"  TEXT NOT NULL,
    "hash"       TEXT NOT NULL,
    UNIQUE ("case_id", "seq")
);

CREATE TRIGGER "case_events_no_update" BEFORE UPDATE ON "case_events"
BEGIN
    SELECT RAISE(ABORT, 'case_events is an append-only audit log: UPDATE refused');
END;
CREATE TRIGGER "case_events_no_delete" BEFORE DELETE ON "case_events"
BEGIN
    SELECT RAISE(ABORT, 'case_events is an append-only audit log: DELETE refused');
END;

CREATE TABLE "reports" (
    "id"          INTEGER PRIMARY KEY AUTOINCREMENT,
    "client_id"   TEXT NOT NULL UNIQUE,
    "username"    TEXT NOT NULL,
    "category"    TEXT NOT NULL,
    "lon"         REAL NOT NULL,
    "lat"         REAL NOT NULL,
    "datum"       TEXT NOT NULL,
    "accuracy_m"  REAL,
    "observed_at" TEXT NOT NULL,
    "received_at" TEXT NOT NULL,
    "note"        TEXT NOT NULL DEFAULT '',
    "photos"      TEXT NOT NULL DEFAULT '[]' CHECK (json_valid("photos")),
    "flags"       TEXT NOT NULL DEFAULT '[]' CHECK (json_valid("flags")),
    "grid"        TEXT,
    "case_id"     INTEGER NOT NULL REFERENCES "cases" ("id")
);
CREATE INDEX "reports_case_idx" ON "reports" ("case_id");

CREATE TABLE "surveys" (
    "id"          TEXT PRIMARY KEY,
    "batch_id"    TEXT NOT NULL,
    "path"        TEXT NOT NULL,
    "acquired_at" TEXT NOT NULL,
    "minx"        REAL NOT NULL,
    "miny"        REAL NOT NULL,
    "maxx"        REAL NOT NULL,
    "maxy"        REAL NOT NULL,
    "stac"        TEXT NOT NULL CHECK (json_valid("stac")),
    "created_at"  TEXT NOT NULL
);

CREATE TABLE "upload_batches" (
    "id"           TEXT PRIMARY KEY,
    "username"     TEXT NOT NULL,
    "state"        TEXT NOT NULL CHECK ("state" IN ('open', 'complete')),
    "manifest"     TEXT NOT NULL CHECK (json_valid("manifest") AND json_type("manifest") = 'object'),
    "created_at"   TEXT NOT NULL,
    "completed_at" TEXT
);

CREATE TABLE "jobs" (
    "id"          INTEGER PRIMARY KEY AUTOINCREMENT,
    "kind"        TEXT NOT NULL,
    "batch_id"    TEXT UNIQUE,
    "state"       TEXT NOT NULL CHECK ("state" IN ('queued', 'running', 'done', 'failed')),
    "attempts"    INTEGER NOT NULL DEFAULT 0,
    "lease_owner" TEXT,
    "lease_until" TEXT,
    "progress"    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid("progress")),
    "result"      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid("result")),
    "error"       TEXT,
    "created_at"  TEXT NOT NULL,
    "updated_at"  TEXT NOT NULL
);
CREATE INDEX "jobs_state_idx" ON "jobs" ("state", "id");
