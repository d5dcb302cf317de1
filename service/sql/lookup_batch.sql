-- Many points -> one row each, in input order: the 1-based input index, the generation and
-- whether it is active, the deepest area's path and the chain's codes and names from the top
-- down (empty arrays when no area covers the point).
--
-- Covering is ST_Covers on the stored boundary itself; the subdivided parts only find the
-- candidates through their index, so a point on an edge that a subdivision cut meets is
-- judged exactly like any other (and exactly as the bulk path's cell index judges it).
-- Levels are tried from the grid up, and a level is only searched when no deeper one
-- covered the point (one-time filters), so most points never test the large city polygon.
-- Tie-break (a point on a shared edge or vertex is covered by several areas of one level):
-- the deepest level wins, then the smallest code; the rest of the chain is that area's
-- ancestors, so the answer is always one consistent chain and never depends on plan order.
-- A candidate part's own area is read by its id (a sub-select): written as a join, the
-- planner reached area through its GiST index (ST_Covers is index-supported) and tested
-- ST_Covers on every area whose box holds the point (the city's and district's too) before
-- joining on the id: backend CPU per point 83 -> 47 us at 1x, and it grew with the size.
WITH g AS (
    SELECT COALESCE(CAST(:generation AS integer),
                    (SELECT max(id) FROM generation WHERE active)) AS id
), pts AS (
    SELECT u.i, ST_SetSRID(ST_MakePoint(u.x, u.y), 4326) AS geom
    FROM unnest(CAST(:lons AS float8[]), CAST(:lats AS float8[])) WITH ORDINALITY AS u(x, y, i)
), hit AS (
    SELECT pts.i, COALESCE(h3.area_id, h2.area_id, h1.area_id, h0.area_id) AS area_id
    FROM pts
    CROSS JOIN g
    LEFT JOIN LATERAL (
        SELECT p.area_id FROM area_part p
        WHERE p.depth = 3 AND p.geom && pts.geom
          AND p.generation_low <= g.id AND p.generation_high >= g.id
          AND ST_Covers((SELECT a.geom FROM area a WHERE a.id = p.area_id), pts.geom)
        ORDER BY p.code LIMIT 1
    ) h3 ON true
    LEFT JOIN LATERAL (
        SELECT p.area_id FROM area_part p
        WHERE h3.area_id IS NULL AND p.depth = 2 AND p.geom && pts.geom
          AND p.generation_low <= g.id AND p.generation_high >= g.id
          AND ST_Covers((SELECT a.geom FROM area a WHERE a.id = p.area_id), pts.geom)
        ORDER BY p.code LIMIT 1
    ) h2 ON true
    LEFT JOIN LATERAL (
        SELECT p.area_id FROM area_part p
        WHERE h3.area_id IS NULL AND h2.area_id IS NULL AND p.depth = 1
          AND p.geom && pts.geom
          AND p.generation_low <= g.id AND p.generation_high >= g.id
          AND ST_Covers((SELECT a.geom FROM area a WHERE a.id = p.area_id), pts.geom)
        ORDER BY p.code LIMIT 1
    ) h1 ON true
    LEFT JOIN LATERAL (
        SELECT p.area_id FROM area_part p
        WHERE h3.area_id IS NULL AND h2.area_id IS NULL AND h1.area_id IS NULL
          AND p.depth = 0 AND p.geom && pts.geom
          AND p.generation_low <= g.id AND p.generation_high >= g.id
          AND ST_Covers((SELECT a.geom FROM area a WHERE a.id = p.area_id), pts.geom)
        ORDER BY p.code LIMIT 1
    ) h0 ON true
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
