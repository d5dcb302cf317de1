-- One point -> the chain city > district > community > grid of the deepest area covering it.
-- Tie-break (a point on a shared edge or vertex is covered by several areas of one level):
-- the deepest level wins, then the smallest code; the rest of the chain is that area's
-- ancestors, so the answer is always one consistent chain and never depends on plan order.
WITH g AS (
    SELECT COALESCE(CAST(:generation AS integer),
                    (SELECT max(id) FROM generation WHERE active)) AS id
), hit AS (
    SELECT p.area_id
    FROM area_part p, g
    WHERE ST_Covers(p.geom, ST_SetSRID(ST_MakePoint(CAST(:lon AS float8), CAST(:lat AS float8)), 4326))
      AND p.generation_low <= g.id AND p.generation_high >= g.id
    ORDER BY p.depth DESC, p.code
    LIMIT 1
)
SELECT g.id AS generation,
       (SELECT active FROM generation WHERE id = g.id) AS generation_active,
       a.code, a.name, a.level, a.depth, a.path
FROM g
LEFT JOIN hit ON true
LEFT JOIN area d ON d.id = hit.area_id
LEFT JOIN area a ON a.code = ANY (string_to_array(d.path, '/'))
                AND a.generation_low <= g.id AND a.generation_high >= g.id
ORDER BY a.depth
