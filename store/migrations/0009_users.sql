-- People who log in through the identity provider (single sign-on). A user
-- is the provider's issuer and subject; email and name are what the
-- provider said at the last login. role: owner, admin, auditor or user.
CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    email      TEXT NOT NULL DEFAULT '',
    name       TEXT NOT NULL DEFAULT '',
    role       TEXT NOT NULL DEFAULT 'user',
    blocked    BIGINT NOT NULL DEFAULT 0,
    created    BIGINT NOT NULL,
    last_login BIGINT NOT NULL DEFAULT 0,
    UNIQUE (account_id, issuer, subject)
);

-- The peers that joined by single sign-on belong to their user; deleting
-- the user deletes them (control does it, so that maps follow).
CREATE TABLE peer_users (
    peer_id TEXT PRIMARY KEY REFERENCES peers(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE
);
CREATE INDEX peer_users_user ON peer_users(user_id);

-- Groups the identity provider's groups claim keeps: created and filled at
-- logins, not editable by hand.
CREATE TABLE idp_groups (
    group_id TEXT PRIMARY KEY REFERENCES groups(id) ON DELETE CASCADE
);
