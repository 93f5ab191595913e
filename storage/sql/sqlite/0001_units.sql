-- The unit table: one row per unit of every level (see gridmap/units.py).
-- Applied by storage.sqlite inside one BEGIN IMMEDIATE transaction; the runner records the version in
-- "schema_migrations".
--
-- "id" is an INTEGER PRIMARY KEY (an alias of the rowid, so VACUUM never renumbers it): it is the key of
-- the R*Tree. The bounding box is kept in plain columns too, so triggers keep "units_rtree" in sync in the
-- same transaction as every INSERT, UPDATE (including upserts) and DELETE on "units".
-- "geom" is WKB exactly as given (Polygon or MultiPolygon, EPSG:4326); "attributes" is a JSON object.

CREATE TABLE "units" (
    "id"          INTEGER PRIMARY KEY,
    "code"        TEXT NOT NULL UNIQUE,
    "level"       TEXT NOT NULL
                  CHECK ("level" IN ('street', 'community', 'grid', 'courtyard', 'building')),
    "name"        TEXT NOT NULL DEFAULT '',
    "parent_code" TEXT,
    "worker"      TEXT,
    "population"  INTEGER,
    "attributes"  TEXT NOT NULL DEFAULT '{}'
                  CHECK (json_valid("attributes") AND json_type("attributes") = 'object'),
    "geom"        BLOB NOT NULL,
    "minx"        REAL NOT NULL,
    "miny"        REAL NOT NULL,
    "maxx"        REAL NOT NULL,
    "maxy"        REAL NOT NULL
);

CREATE INDEX "units_level_idx" ON "units" ("level");
CREATE INDEX "units_parent_code_idx" ON "units" ("parent_code");

CREATE VIRTUAL TABLE "units_rtree" USING rtree("id", "minx", "maxx", "miny", "maxy");

CREATE TRIGGER "units_rtree_insert" AFTER INSERT ON "units"
BEGIN
    INSERT INTO "units_rtree" ("id", "minx", "maxx", "miny", "maxy")
    VALUES (new."id", new."minx", new."maxx", new."miny", new."maxy");
END;

CREATE TRIGGER "units_rtree_update" AFTER UPDATE OF "id", "minx", "miny", "maxx", "maxy" ON "units"
BEGIN
    DELETE FROM "units_rtree" WHERE "id" = old."id";
    INSERT INTO "units_rtree" ("id", "minx", "maxx", "miny", "maxy")
    VALUES (new."id", new."minx", new."maxx", new."miny", new."maxy");
END;

CREATE TRIGGER "units_rtree_delete" AFTER DELETE ON "units"
BEGIN
    DELETE FROM "units_rtree" WHERE "id" = old."id";
END;
