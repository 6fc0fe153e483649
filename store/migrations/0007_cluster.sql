-- Placeholder on the sso branch: the cluster tables take this number on
-- their own branch, which replaces this file when the branches merge.
SELECT 1;
