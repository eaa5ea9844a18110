-- The peak part of bench/accuracy.ts: an in-memory database built, indexed and sorted
-- ($ROWS is replaced with the row count). Every page and sorter buffer comes from malloc.
CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT, c REAL);
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < $ROWS)
INSERT INTO t SELECT x, hex(randomblob(24)), x * 0.5 FROM n;
CREATE INDEX tb ON t(b);
SELECT count(*), sum(length(b)) FROM (SELECT b, c FROM t ORDER BY c DESC, b);
DELETE FROM t WHERE a % 2 = 0;
VACUUM;
SELECT count(*) FROM t;
