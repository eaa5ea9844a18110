-- sqlite3: a table of 100,000 rows built with a recursive CTE, an index, and queries
-- that sort and group (sqlite's page cache and sorter allocate with malloc).
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, val REAL);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000)
INSERT INTO t(name, grp, val) SELECT printf('row-%06d-%s', x, hex(x * 7919)), x % 97, (x * 37 % 1000) / 10.0 FROM c;
CREATE INDEX t_grp ON t(grp, val);
SELECT count(*), sum(grp), round(sum(val), 1) FROM t;
SELECT grp, count(*), round(avg(val), 3), max(name) FROM t GROUP BY grp ORDER BY grp LIMIT 5;
SELECT name FROM t WHERE grp = 42 ORDER BY val DESC, id LIMIT 3;
SELECT count(DISTINCT substr(name, 12)) FROM t;
DELETE FROM t WHERE id % 3 = 0;
SELECT count(*) FROM t;
