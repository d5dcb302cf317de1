"""Declarations that drive the generic code: entity kinds and map layers.

- :mod:`service.specs.entity_kinds`: one :class:`~service.specs.entity_kinds.EntitySpec` per
  kind of thing mapped to cells (units, facilities, members, care households, incidents).
  Routers, repositories, bulk import and file transfer read every per-kind behaviour from it.
- :mod:`service.specs.map_layers`: one :class:`~service.specs.map_layers.LayerSpec` per map
  layer (GeoJSON items, OGC API Features, vector tiles); the area layers are declared there,
  the entity layers derived from their entity kind.

Role groups live in :mod:`service.auth`.
"""
