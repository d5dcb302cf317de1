/* wangge map pages: street basemaps (maps/basemap.py) as base layers of the layer control.
 *
 * wg.basemap(o) returns one Leaflet layer (a group of tile layers drawn bottom to top, e.g.
 * Tianditu's streets and its labels) for the layer control's radio buttons.
 * o = {key, datum, attribution, sources: [{url, subdomains, maxNativeZoom}],
 *      tiles: {"z/x/y": data URI} (a static file's pre-rendered offline tiles), zooms: [lo, hi]}.
 * The overlays of the page are already in o.datum (shifted by the server), so nothing here
 * moves coordinates.
 */
(function () {
  "use strict";
  var wg = (window.wg = window.wg || {});
  // A transparent pixel: a tile the static file does not hold.
  var BLANK = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7";

  var EmbeddedTiles = L.TileLayer.extend({
    initialize: function (tiles, options) {
      this._wgTiles = tiles;
      L.TileLayer.prototype.initialize.call(this, "", options);
    },
    getTileUrl: function (coords) {
      return this._wgTiles[coords.z + "/" + coords.x + "/" + coords.y] || BLANK;
    },
  });

  wg.basemap = function (o) {
    var layers = [];
    if (o.tiles) {
      layers.push(
        new EmbeddedTiles(o.tiles, {
          minNativeZoom: o.zooms[0],
          maxNativeZoom: o.zooms[1],
          maxZoom: 19,
          attribution: o.attribution,
          className: "wg-basemap wg-basemap-" + o.key,
        })
      );
    } else {
      o.sources.forEach(function (s, i) {
        layers.push(
          L.tileLayer(s.url, {
            subdomains: s.subdomains || "abc",
            maxNativeZoom: s.maxNativeZoom,
            maxZoom: 19,
            attribution: i === 0 ? o.attribution : "",
            className: "wg-basemap wg-basemap-" + o.key,
            crossOrigin: false,
          })
        );
      });
    }
    var group = L.layerGroup(layers);
    group.wgBasemap = o.key;
    return group;
  };
})();
