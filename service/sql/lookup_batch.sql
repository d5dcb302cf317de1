-- Many points -> one chain each (same tie-break as lookup.sql), ordered by input position.
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
)
SELECT hit.i, a.code, a.name, a.level, a.depth, a.path
FROM hit
CROSS JOIN g
LEFT JOIN area d ON d.id = hit.area_id
LEFT JOIN area a ON a.code = ANY (string_to_array(d.path, '/'))
                AND a.generation_low <= g.id AND a.generation_high >= g.id
ORDER BY hit.i, a.depth
