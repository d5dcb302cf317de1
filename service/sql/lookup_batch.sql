-- Many points -> one row each, in input order (same tie-break as lookup.sql): the 1-based
-- input index, the generation and whether it is active, the deepest area's path and the
-- chain's codes and names from the top down.
WITH g AS (
    SELECT COALESCE(CAST(:generation AS integer),
                    (SELECT max(id) FROM generation WHERE active)) AS id
), pts AS (
    SELECT u.i, ST_SetSRID(ST_MakePoint(u.x, u.y), 4326) AS geom
    FROM unnest(CAST(:lons AS float8[]), CAST(:lats AS float8[])) WITH ORDINALITY AS u(x, y, i)
), hit AS (
    SELECT pts.i, h.area_id
    FROM pts
    LEFT JOIN LATERAL (
        SELECT p.area_id
        FROM area_part p, g
        WHERE ST_Covers(p.geom, pts.geom)
          AND p.generation_low <= g.id AND p.generation_high >= g.id
        ORDER BY p.depth DESC, p.code
        LIMIT 1
    ) h ON true
), chains AS (
    -- Points falling in the same area share one chain: resolve each distinct area once.
    SELECT d.id AS area_id, d.path,
           array_agg(a.code ORDER BY a.depth) AS codes,
           array_agg(a.name ORDER BY a.depth) AS names
    FROM (SELECT DISTINCT area_id FROM hit WHERE area_id IS NOT NULL) h
    JOIN area d ON d.id = h.area_id
    CROSS JOIN g
    JOIN area a ON a.code = ANY (string_to_array(d.path, '/'))
               AND a.generation_low <= g.id AND a.generation_high >= g.id
    GROUP BY d.id, d.path
)
SELECT hit.i, g.id AS generation,
       (SELECT active FROM generation WHERE id = g.id) AS generation_active,
       chains.path, coalesce(chains.codes, '{}') AS codes,
       coalesce(chains.names, '{}') AS names
FROM hit
CROSS JOIN g
LEFT JOIN chains ON chains.area_id = hit.area_id
ORDER BY hit.i
