-- Tile epochs: a counter per source of vector tiles ('units', 'cases') that triggers bump on every row
-- written, however it was written (the service, `gridmap worker`, the sqlite3 shell). The service's tile
-- cache (api/tilecache.py) keeps each tile with the epoch it was drawn at and serves it only while that
-- epoch holds, so a commit invalidates it in every process at once.
-- SQLite runs one writer at a time anyway, so a single row per source costs no waiting (PostgreSQL's
-- version of this table is an insert-only log for that reason); the epoch is sum("changes") on both.
-- Each source starts at a random number, so a re-created database does not reissue its ETags.

CREATE TABLE "tile_epochs" (
    "source"  TEXT PRIMARY KEY CHECK ("source" IN ('units', 'cases')),
    "changes" INTEGER NOT NULL
);
INSERT INTO "tile_epochs" ("source", "changes") VALUES ('units', abs(random() % 1000000000000)),
                                                       ('cases', abs(random() % 1000000000000));

CREATE TRIGGER "units_tile_epoch_insert" AFTER INSERT ON "units"
BEGIN
    UPDATE "tile_epochs" SET "changes" = "changes" + 1 WHERE "source" = 'units';
END;
CREATE TRIGGER "units_tile_epoch_update" AFTER UPDATE ON "units"
BEGIN
    UPDATE "tile_epochs" SET "changes" = "changes" + 1 WHERE "source" = 'units';
END;
CREATE TRIGGER "units_tile_epoch_delete" AFTER DELETE ON "units"
BEGIN
    UPDATE "tile_epochs" SET "changes" = "changes" + 1 WHERE "source" = 'units';
END;
CREATE TRIGGER "cases_tile_epoch_insert" AFTER INSERT ON "cases"
BEGIN
    UPDATE "tile_epochs" SET "changes" = "changes" + 1 WHERE "source" = 'cases';
END;
CREATE TRIGGER "cases_tile_epoch_update" AFTER UPDATE ON "cases"
BEGIN
    UPDATE "tile_epochs" SET "changes" = "changes" + 1 WHERE "source" = 'cases';
END;
CREATE TRIGGER "cases_tile_epoch_delete" AFTER DELETE ON "cases"
BEGIN
    UPDATE "tile_epochs" SET "changes" = "changes" + 1 WHERE "source" = 'cases';
END;
