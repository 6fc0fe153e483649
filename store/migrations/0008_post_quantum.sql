-- Post-quantum pre-shared keys: the account's mode ('off', 'permissive' or
-- 'strict'; off until it has shipped a release) and whether each peer's
-- agent said it supports them (0 until it says so at its next sync).
ALTER TABLE accounts ADD COLUMN post_quantum TEXT NOT NULL DEFAULT 'off';
ALTER TABLE peers ADD COLUMN post_quantum INTEGER NOT NULL DEFAULT 0;
