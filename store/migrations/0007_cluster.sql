-- What the replicas of one network share on PostgreSQL (store/pgcluster):
-- which replicas are alive, leases, presence and one-time tokens. Times are
-- unix microseconds from the database's clock (never a replica's), except
-- started, which a replica reports for display. On SQLite, with one
-- process, these tables stay empty.
CREATE TABLE cluster_replicas (
    id         TEXT PRIMARY KEY,
    public_url TEXT NOT NULL DEFAULT '',
    signal_url TEXT NOT NULL DEFAULT '',
    relay_urls TEXT NOT NULL DEFAULT '',
    version    TEXT NOT NULL DEFAULT '',
    started    BIGINT NOT NULL,
    seen       BIGINT NOT NULL
);

CREATE TABLE cluster_leases (
    name    TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    expires BIGINT NOT NULL
);

CREATE TABLE cluster_presence (
    key     TEXT NOT NULL,
    replica TEXT NOT NULL,
    PRIMARY KEY (key, replica)
);
CREATE INDEX cluster_presence_replica ON cluster_presence(replica);

CREATE TABLE cluster_once (
    token   TEXT PRIMARY KEY,
    expires BIGINT NOT NULL
);
CREATE INDEX cluster_once_expires ON cluster_once(expires);
