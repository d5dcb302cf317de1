/* wangge map pages: street basemaps (maps/basemap.py) as base layers of the layer control.
 *
 * wg.basemap(o) returns one Leaflet layer (a group of tile layers drawn bottom to top, e.g.
 * Tianditu's streets and its labels) for the layer control's radio buttons.
 * o = {key, datum, attribution, sources: [{url, subdomains, maxNativeZoom}],
 *      tiles: {"z/x/y": data URI} (a static file's pre-rendered offline tiles), zooms: [lo, hi]}.
 * The overlays of the page are already in o.datum (shifted by the server), so nothing here
 * moves coordinates.
 *
 * A provider whose tiles do not come (no internet in a closed dispatch room, a bad or expired
 * key, a provider refusing: every tile of a view failing, or none arriving within
 * wg.basemapWait ms) is replaced by the offline basemap, in the same datum (the overlays stay
 * where they are), and the map says so in the page's language (o.texts) until the reader
 * closes the notice or picks a basemap. The switcher keeps every choice: picking the failed
 * provider again tries it again.
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

  /* The page's datum: its overlays were shifted to it by the server. Positions that reach
   * the page later in WGS84 (a GPS fix, a case from GET /cases or the stream) are moved here
   * with the same forward formulas as geo/coords.py (closed forms: exact to ~1e-13°; only
   * the inverse is iterative, and it runs on the server: the tablet's form sends its point
   * with crs = the page's datum). */
  wg.datum = "WGS84";
  var A = 6378245.0;
  var EE = 0.00669342162296594323;
  var X_PI = (Math.PI * 3000.0) / 180.0;
  var GCJ_BOX = [72.004, 0.8293, 137.8347, 55.8271]; // geo.coords.GCJ02_BBOX

  function gcj(lon, lat) {
    if (!(lon >= GCJ_BOX[0] && lon <= GCJ_BOX[2] && lat >= GCJ_BOX[1] && lat <= GCJ_BOX[3])) {
      return [lon, lat];
    }
    var x = lon - 105.0;
    var y = lat - 35.0;
    var P = Math.PI;
    var common = 20.0 * Math.sin(6.0 * x * P) + 20.0 * Math.sin(2.0 * x * P);
    var dlat =
      -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * Math.sqrt(Math.abs(x)) +
      (common + 20.0 * Math.sin(y * P) + 40.0 * Math.sin((y * P) / 3.0) +
        160.0 * Math.sin((y * P) / 12.0) + 320.0 * Math.sin((y * P) / 30.0)) * (2.0 / 3.0);
    var dlon =
      300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * Math.sqrt(Math.abs(x)) +
      (common + 20.0 * Math.sin(x * P) + 40.0 * Math.sin((x * P) / 3.0) +
        150.0 * Math.sin((x * P) / 12.0) + 300.0 * Math.sin((x * P) / 30.0)) * (2.0 / 3.0);
    var s = Math.sin((lat * P) / 180.0);
    var magic = 1.0 - EE * s * s;
    var sq = Math.sqrt(magic);
    dlat = (dlat * 180.0) / (((A * (1.0 - EE)) / (magic * sq)) * P);
    dlon = (dlon * 180.0) / ((A / sq) * Math.sqrt(1.0 - s * s) * P);
    return [lon + dlon, lat + dlat];
  }

  function bd(lon, lat) {
    var g = gcj(lon, lat);
    var z = Math.hypot(g[0], g[1]) + 0.00002 * Math.sin(g[1] * X_PI);
    var theta = Math.atan2(g[1], g[0]) + 0.000003 * Math.cos(g[0] * X_PI);
    return [z * Math.cos(theta) + 0.0065, z * Math.sin(theta) + 0.006];
  }

  /* [lat, lng] on this page of a WGS84 position (Leaflet's order). */
  wg.onPage = function (lat, lon) {
    if (wg.datum === "GCJ-02") return gcj(lon, lat).reverse();
    if (wg.datum === "BD-09") return bd(lon, lat).reverse();
    return [lat, lon];
  };

  wg.basemap = function (o) {
    wg.datum = o.datum || "WGS84";
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
    groups.push(group);
    if (!o.tiles && o.key !== "offline") watch(group, layers, o);
    return group;
  };

  /* Milliseconds a shown provider may take to deliver its first tile of a view. */
  wg.basemapWait = window.WG_BASEMAP_WAIT_MS || 15000;
  var groups = [];

  function watch(group, layers, o) {
    layers.forEach(function (layer) {
      var pass = { loaded: 0, failed: 0 };
      var timer = null;
      function stop() {
        if (timer) clearTimeout(timer);
        timer = null;
      }
      layer.on("loading", function () {
        pass = { loaded: 0, failed: 0 };
        stop();
        timer = setTimeout(function () {
          timer = null;
          if (pass.loaded === 0 && layer.isLoading()) failed(group, o);
        }, wg.basemapWait);
      });
      layer.on("tileload", function () {
        pass.loaded += 1;
        stop();
      });
      layer.on("tileerror", function () {
        pass.failed += 1;
      });
      // Every tile of the view answered: none of them with an image.
      layer.on("load", function () {
        stop();
        if (pass.failed > 0 && pass.loaded === 0) failed(group, o);
      });
      layer.on("remove", stop);
    });
  }

  function failed(group, o) {
    // Not inside the tile layer's own event: Leaflet goes on with the layer after it.
    setTimeout(function () {
      giveWay(group, o);
    }, 0);
  }

  function giveWay(group, o) {
    var map = group._map;
    if (!map) return;
    var offline = null;
    groups.forEach(function (g) {
      if (g.wgBasemap === "offline" && g !== group) offline = g;
    });
    var T = o.texts || {};
    if (offline) {
      map.wgSwitching = true; // the layer control announces it as a base layer change
      map.removeLayer(group);
      map.addLayer(offline);
      map.wgSwitching = false;
    }
    notice(map, offline ? T.switched : T.failed, T.close);
  }

  /* A notice in the map's top-left corner, under the page's title (Leaflet stacks a corner's
   * controls: it covers none of them), until closed or a basemap is picked; one at a time. */
  function notice(map, text, close) {
    var box = map.wgNotice;
    if (!box || !box.parentNode) {
      box = L.DomUtil.create("div", "wg-notice leaflet-control");
      box.setAttribute("role", "alert");
      L.DomEvent.disableClickPropagation(box);
      L.DomEvent.disableScrollPropagation(box);
      var control = L.control({ position: "topleft" });
      control.onAdd = function () {
        return box;
      };
      control.addTo(map);
      map.wgNotice = box;
    }
    if (!map.wgNoticeWatch) {
      map.wgNoticeWatch = true;
      map.on("baselayerchange", function () {
        if (map.wgNotice && map.wgNotice.parentNode && !map.wgSwitching) {
          map.wgNotice.parentNode.removeChild(map.wgNotice);
        }
      });
    }
    box.textContent = "";
    var span = L.DomUtil.create("span", "wg-notice-text", box);
    span.textContent = text;
    var button = L.DomUtil.create("button", "wg-notice-close", box);
    button.type = "button";
    button.textContent = "\u00d7";
    button.setAttribute("aria-label", close || "");
    button.title = close || "";
    L.DomEvent.on(button, "click", function () {
      if (box.parentNode) box.parentNode.removeChild(box);
    });
  }
})();
