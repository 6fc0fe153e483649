-- placeholder; replaced by the cluster migration
SELECT 1;
