-- The account, how admins authenticate, and control's own secrets.
CREATE TABLE accounts (
    id                        TEXT PRIMARY KEY,
    name                      TEXT NOT NULL,
    overlay_network           TEXT NOT NULL,
    dns_domain                TEXT NOT NULL,
    login_expiration_seconds  INTEGER NOT NULL DEFAULT 0,
    ephemeral_offline_seconds INTEGER NOT NULL DEFAULT 600,
    created                   INTEGER NOT NULL
);

CREATE TABLE admin_tokens (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    hash       BLOB NOT NULL UNIQUE,
    created    INTEGER NOT NULL,
    last_used  INTEGER
);

-- Key material control keeps: its Curve25519 key, the TURN secret.
CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
