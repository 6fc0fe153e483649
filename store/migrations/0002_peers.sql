-- Peers, groups and the setup keys peers join with.
CREATE TABLE groups (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    -- 1 for the implicit group every peer is in ("All").
    is_all     INTEGER NOT NULL DEFAULT 0,
    created    INTEGER NOT NULL,
    UNIQUE (account_id, name)
);

CREATE TABLE setup_keys (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    hash        BLOB NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    one_off     INTEGER NOT NULL DEFAULT 0,
    expires     INTEGER NOT NULL DEFAULT 0,
    usage_limit INTEGER NOT NULL DEFAULT 0,
    used        INTEGER NOT NULL DEFAULT 0,
    revoked     INTEGER NOT NULL DEFAULT 0,
    ephemeral   INTEGER NOT NULL DEFAULT 0,
    last_used   INTEGER NOT NULL DEFAULT 0,
    created     INTEGER NOT NULL
);

CREATE TABLE setup_key_groups (
    setup_key_id TEXT NOT NULL REFERENCES setup_keys(id) ON DELETE CASCADE,
    group_id     TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    PRIMARY KEY (setup_key_id, group_id)
);

CREATE TABLE peers (
    id                       TEXT PRIMARY KEY,
    account_id               TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    public_key               TEXT NOT NULL UNIQUE,
    name                     TEXT NOT NULL,
    dns_label                TEXT NOT NULL,
    overlay_ip               TEXT NOT NULL,
    hostname                 TEXT NOT NULL DEFAULT '',
    os                       TEXT NOT NULL DEFAULT '',
    version                  TEXT NOT NULL DEFAULT '',
    setup_key_id             TEXT REFERENCES setup_keys(id) ON DELETE SET NULL,
    ephemeral                INTEGER NOT NULL DEFAULT 0,
    login_expiration_enabled INTEGER NOT NULL DEFAULT 1,
    last_login               INTEGER NOT NULL,
    last_seen                INTEGER NOT NULL DEFAULT 0,
    created                  INTEGER NOT NULL,
    UNIQUE (account_id, overlay_ip),
    UNIQUE (account_id, dns_label)
);

CREATE TABLE group_peers (
    group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    peer_id  TEXT NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, peer_id)
);
CREATE INDEX group_peers_peer ON group_peers(peer_id);

-- Every account existing before this version gets its All group.
INSERT INTO groups (id, account_id, name, is_all, created)
SELECT lower(hex(randomblob(8))), id, 'All', 1, created FROM accounts;
