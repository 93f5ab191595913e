-- Tile epochs: a number per source of vector tiles ('units', 'cases') that grows with every committed
-- statement writing that table, however it was written (the service, `gridmap worker`, psql). The service's
-- tile cache (api/tilecache.py) keeps each tile with the epoch it was drawn at and serves it only while
-- that epoch holds, so a commit invalidates it in every process at once.
--
-- The epoch is sum("changes") over the source's rows. Writers only INSERT here: a single counter row that
-- every case write UPDATEs would make concurrent report transactions queue on its row lock until they
-- commit; inserts never wait. A row becomes visible at its writer's commit, with the data it describes.
-- Every 64th row folds the committed rows no other transaction holds into one (the sum is unchanged), so
-- the sum stays over a few dozen rows; only in READ COMMITTED, where rows another fold deleted are skipped
-- rather than a serialisation failure. Statement-level triggers: a 40,000-unit import adds one row; a
-- statement that writes no row still counts (a needless invalidation, never a missed one).
-- Each source starts at a random number, so a re-created database does not reissue its ETags.

CREATE TABLE "tile_epochs" (
    "id"      bigint GENERATED ALWAYS AS IDENTITY,
    "source"  text NOT NULL CHECK ("source" IN ('units', 'cases')),
    "changes" bigint NOT NULL
);
INSERT INTO "tile_epochs" ("source", "changes")
SELECT "source", floor(random() * 1e12)::bigint FROM (VALUES ('units'), ('cases')) AS "s" ("source");

CREATE FUNCTION "tile_epoch_bump"() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    "row_id" bigint;
BEGIN
    INSERT INTO "tile_epochs" ("source", "changes") VALUES (TG_ARGV[0], 1) RETURNING "id" INTO "row_id";
    IF "row_id" % 64 = 0 AND current_setting('transaction_isolation') = 'read committed' THEN
        WITH "folded" AS (
            DELETE FROM "tile_epochs" WHERE ctid IN (SELECT ctid FROM "tile_epochs" FOR UPDATE SKIP LOCKED)
            RETURNING "source", "changes"
        )
        INSERT INTO "tile_epochs" ("source", "changes")
        SELECT "source", sum("changes") FROM "folded" GROUP BY "source";
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER "units_tile_epoch" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "units"
    FOR EACH STATEMENT EXECUTE FUNCTION "tile_epoch_bump"('units');
CREATE TRIGGER "cases_tile_epoch" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "cases"
    FOR EACH STATEMENT EXECUTE FUNCTION "tile_epoch_bump"('cases');
