-- The audit log, and the network-map serial's high-water mark.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    time        INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target_type TEXT NOT NULL DEFAULT '',
    target_id   TEXT NOT NULL DEFAULT '',
    target_name TEXT NOT NULL DEFAULT '',
    detail      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_account_time ON events(account_id, id);

-- Serials up to this value may have been handed out; a restart continues
-- above it, so serials never go backwards.
ALTER TABLE accounts ADD COLUMN serial INTEGER NOT NULL DEFAULT 0;
