-- The setup key a first start made for the join line. NULL: the account was
-- never bootstrapped; a start makes the key only then, so a revoked or
-- deleted bootstrap key stays gone. '' : bootstrapped, key unknown.
ALTER TABLE accounts ADD COLUMN bootstrap_key_id TEXT;

-- Every account existing before this version was bootstrapped (a start made
-- it); its key is the newest one named "bootstrap", the one the join token
-- of the data directory holds.
UPDATE accounts SET bootstrap_key_id = COALESCE(
    (SELECT k.id FROM setup_keys k WHERE k.account_id = accounts.id AND k.name = 'bootstrap'
     ORDER BY k.created DESC LIMIT 1), '');
