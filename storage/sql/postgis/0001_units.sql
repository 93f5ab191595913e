-- The unit table: one row per unit of every level (see gridmap/units.py).
-- Applied by storage.postgis inside one transaction, under pg_advisory_xact_lock; the runner records the
-- version in "schema_migrations". The postgis extension is created by the runner before this file.

CREATE TABLE "units" (
    "code"        text COLLATE "C" PRIMARY KEY,
    "level"       text NOT NULL
                  CHECK ("level" IN ('street', 'community', 'grid', 'courtyard', 'building')),
    "name"        text NOT NULL DEFAULT '',
    "parent_code" text COLLATE "C",
    "worker"      text,
    "population"  bigint,
    "attributes"  jsonb NOT NULL DEFAULT '{}'::jsonb
                  CHECK (jsonb_typeof("attributes") = 'object'),
    "geom"        geometry(Geometry, 4326) NOT NULL
                  CHECK (GeometryType("geom") IN ('POLYGON', 'MULTIPOLYGON') AND NOT ST_IsEmpty("geom"))
);

CREATE INDEX "units_geom_gist" ON "units" USING gist ("geom");
CREATE INDEX "units_level_idx" ON "units" ("level");
CREATE INDEX "units_parent_code_idx" ON "units" ("parent_code");
