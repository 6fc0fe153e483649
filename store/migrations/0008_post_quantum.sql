-- Placeholder on the sso branch: the post-quantum account column takes this
-- number on its own branch, which replaces this file when the branches merge.
SELECT 1;
