-- Access policies, routes to networks behind peers, and DNS.
CREATE TABLE policies (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    enabled       INTEGER NOT NULL DEFAULT 1,
    protocol      TEXT NOT NULL DEFAULT 'all',
    -- Comma-separated "443" or "8000-8100"; empty: all ports.
    ports         TEXT NOT NULL DEFAULT '',
    bidirectional INTEGER NOT NULL DEFAULT 0,
    action        TEXT NOT NULL DEFAULT 'accept',
    created       INTEGER NOT NULL
);

-- side is 'src' or 'dst'. Groups in use cannot be deleted (RESTRICT).
CREATE TABLE policy_groups (
    policy_id TEXT NOT NULL REFERENCES policies(id) ON DELETE CASCADE,
    group_id  TEXT NOT NULL REFERENCES groups(id) ON DELETE RESTRICT,
    side      TEXT NOT NULL CHECK (side IN ('src', 'dst')),
    PRIMARY KEY (policy_id, side, group_id)
);

CREATE TABLE routes (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    network     TEXT NOT NULL,
    metric      INTEGER NOT NULL DEFAULT 9999,
    masquerade  INTEGER NOT NULL DEFAULT 1,
    description TEXT NOT NULL DEFAULT '',
    enabled     INTEGER NOT NULL DEFAULT 1,
    created     INTEGER NOT NULL
);

-- The routing peers, in order of preference.
CREATE TABLE route_peers (
    route_id TEXT NOT NULL REFERENCES routes(id) ON DELETE CASCADE,
    peer_id  TEXT NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
    pos      INTEGER NOT NULL,
    PRIMARY KEY (route_id, peer_id)
);

-- The groups that receive the route; none: every peer.
CREATE TABLE route_groups (
    route_id TEXT NOT NULL REFERENCES routes(id) ON DELETE CASCADE,
    group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE RESTRICT,
    PRIMARY KEY (route_id, group_id)
);

CREATE TABLE nameserver_groups (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    -- Comma-separated lists.
    nameservers   TEXT NOT NULL,
    match_domains TEXT NOT NULL DEFAULT '',
    enabled       INTEGER NOT NULL DEFAULT 1,
    created       INTEGER NOT NULL,
    UNIQUE (account_id, name)
);

CREATE TABLE nameserver_group_groups (
    nameserver_group_id TEXT NOT NULL REFERENCES nameserver_groups(id) ON DELETE CASCADE,
    group_id            TEXT NOT NULL REFERENCES groups(id) ON DELETE RESTRICT,
    PRIMARY KEY (nameserver_group_id, group_id)
);

CREATE TABLE dns_records (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    type       TEXT NOT NULL,
    value      TEXT NOT NULL,
    ttl        INTEGER NOT NULL DEFAULT 300,
    created    INTEGER NOT NULL
);

-- Every account existing before this version gets the default rule
-- "All -> All, bidirectional", as a new account does.
INSERT INTO policies (id, account_id, name, description, enabled, protocol, bidirectional, created)
SELECT lower(hex(randomblob(8))), id, 'Default', 'every peer reaches every peer', 1, 'all', 1, created FROM accounts;
INSERT INTO policy_groups (policy_id, group_id, side)
SELECT p.id, g.id, 'src' FROM policies p JOIN groups g ON g.account_id = p.account_id AND g.is_all = 1;
INSERT INTO policy_groups (policy_id, group_id, side)
SELECT p.id, g.id, 'dst' FROM policies p JOIN groups g ON g.account_id = p.account_id AND g.is_all = 1;
