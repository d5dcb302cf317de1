/* wangge map pages: the small runtime shared by the dispatch, tablet and planning pages.
 *
 * The pages embed their data as compact GeoJSON and call these helpers, so each page carries
 * its data once and its code not at all (this file is cached by the browser). No jQuery:
 * Leaflet and Leaflet.markercluster are the only dependencies.
 */
(function () {
  "use strict";
  var wg = (window.wg = {});
  var ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

  /* Text as HTML: every value from the data goes through here before innerHTML. */
  wg.esc = function (v) {
    return String(v === null || v === undefined ? "" : v).replace(/[&<>"']/g, function (c) {
      return ESC[c];
    });
  };

  /* A link from a template: {name} is replaced by the URL-encoded property. */
  wg.url = function (template, props) {
    return template.replace(/\{(\w+)\}/g, function (_, k) {
      var v = props[k];
      return encodeURIComponent(v === null || v === undefined ? "" : v);
    });
  };

  /* Popup or tooltip HTML: o = {text, title (a property), fields: [[prop, label]],
   * links: [[template, label]]}. */
  wg.describe = function (props, o) {
    var h = "";
    if (o.text) h += "<div class='wg-popup-title'>" + wg.esc(o.text) + "</div>";
    if (o.title) h += "<div class='wg-popup-title'>" + wg.esc(props[o.title]) + "</div>";
    if (o.fields && o.fields.length) {
      var rows = "";
      o.fields.forEach(function (f) {
        var v = props[f[0]];
        if (v === null || v === undefined || v === "") return;
        rows += "<tr><th>" + wg.esc(f[1]) + "</th><td>" + wg.esc(v) + "</td></tr>";
      });
      if (rows) h += "<table class='wg-fields'>" + rows + "</table>";
    }
    (o.links || []).forEach(function (l) {
      h += "<a class='wg-link' href='" + wg.esc(wg.url(l[0], props)) + "'>" + wg.esc(l[1]) + "</a>";
    });
    return h;
  };

  /* Index of the class a value falls in; breaks are the classes' ascending lower bounds. */
  wg.classOf = function (v, breaks) {
    var i = 0;
    for (var k = 0; k < breaks.length; k++) if (v >= breaks[k]) i = k;
    return i;
  };

  /* Polygons: o = {style, choropleth: {property, breaks, colors, missing}, tooltip, popup,
   * lines}. With `lines` (true or a rank), the outline is drawn above every fill (in a pane, not
   * clickable) and the area itself is a transparent, clickable fill below the grids: boundaries
   * stay visible over a choropleth while a click still reaches the grid under the pointer.
   * With `lines` and no popup or tooltip, only the outline is drawn. */
  wg.areas = function (data, o) {
    var style = o.style || {};
    var interactive = !!(o.popup || o.tooltip);
    var areas = null;
    if (interactive || !o.lines) {
      areas = L.geoJson(data, {
        style: function (f) {
          var s = Object.assign({}, style);
          if (o.lines) s = { stroke: false, fill: true, fillOpacity: 0 };
          var c = o.choropleth;
          if (c) {
            var v = f.properties[c.property];
            s.fillColor = v === null || v === undefined ? c.missing : c.colors[wg.classOf(v, c.breaks)];
          }
          return s;
        },
        onEachFeature: function (f, layer) {
          if (o.tooltip) layer.bindTooltip(wg.describe(f.properties, o.tooltip), { sticky: true });
          if (o.popup) {
            layer.bindPopup(function () {
              return wg.describe(f.properties, o.popup);
            });
          }
        },
      });
    }
    if (!o.lines) return areas;
    // One pane per rank, so a city's line is drawn over a community's on their shared edge.
    var rank = o.lines === true ? 0 : o.lines;
    var name = "wgLines" + rank;
    var lines = L.geoJson(data, {
      style: Object.assign({}, style, { fill: false }),
      interactive: false,
      pane: name,
    });
    lines.beforeAdd = function (map) {
      if (!map.getPane(name)) {
        var pane = map.createPane(name);
        pane.style.zIndex = 450 + rank; // above the overlay pane's fills, below markers
        pane.style.pointerEvents = "none";
      }
    };
    return L.featureGroup(areas ? [areas, lines] : [lines]);
  };

  function token(v) {
    return String(v === null || v === undefined ? "" : v).replace(/[^A-Za-z0-9_-]/g, "");
  }

  /* Points as div-icon markers: o = {cls, classBy, size, glyphs, color, title, popup}. */
  wg.points = function (data, o) {
    var size = o.size || 28;
    return L.geoJson(data, {
      pointToLayer: function (f, latlng) {
        var kind = token(f.properties[o.classBy]);
        var glyph = (o.glyphs && o.glyphs[kind]) || "";
        return L.marker(latlng, {
          title: o.title ? String(f.properties[o.title] || "") : "",
          icon: L.divIcon({
            className: "wg-pin " + (o.cls || "") + " wg-" + kind,
            // A colour of the caller's (coverage-gap layers); checked as CSS by the page builder.
            html: o.color ? "<span class='wg-dot' style='background:" + wg.esc(o.color) + "'></span>" : wg.esc(glyph),
            iconSize: [size, size],
            iconAnchor: [size / 2, size / 2],
            popupAnchor: [0, -size / 2],
          }),
        });
      },
      onEachFeature: function (f, layer) {
        if (o.popup) {
          layer.bindPopup(function () {
            return wg.describe(f.properties, o.popup);
          });
        }
      },
    });
  };

  /* A map control holding prepared (already escaped) HTML: legends, titles. */
  wg.control = function (map, html, position, cls) {
    var Control = L.Control.extend({
      onAdd: function () {
        var div = L.DomUtil.create("div", "wg-panel " + (cls || ""));
        div.innerHTML = html;
        L.DomEvent.disableClickPropagation(div);
        L.DomEvent.disableScrollPropagation(div);
        return div;
      },
    });
    return new Control({ position: position }).addTo(map);
  };

  /* An Idempotency-Key. crypto.randomUUID exists only in secure contexts (https, localhost):
   * a tablet on a plain-http intranet address falls back to getRandomValues, which is there. */
  wg.uuid = function () {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
    var b = window.crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    var h = Array.prototype.map
      .call(b, function (x) {
        return (x + 256).toString(16).slice(1);
      })
      .join("");
    return [h.slice(0, 8), h.slice(8, 12), h.slice(12, 16), h.slice(16, 20), h.slice(20)].join("-");
  };

  /* The tablet's report form: position from GPS (or a tap on the map), POST /incidents.
   * o = {form, endpoint, csrf, source, crs, retries, pin (wg.points options for the new case)}.
   * The page's session cookie authenticates the POST (same origin); csrf is its X-CSRF-Token. */
  wg.reportForm = function (map, o) {
    var form = document.getElementById(o.form);
    if (!form) return;
    var out = form.querySelector(".wg-answer");
    var where = form.querySelector(".wg-where");
    var send = form.querySelector("button[type=submit]");
    var pos = null;
    var marker = null;
    // One key per case: kept across retries (the server files it once), renewed when the
    // officer changes the report or after it was filed.
    var key = null;

    function say(text, cls) {
      out.textContent = text;
      out.className = "wg-answer " + (cls || "");
    }
    function place(lat, lon, how) {
      pos = { lat: lat, lon: lon };
      key = null;
      if (marker) marker.setLatLng([lat, lon]);
      else {
        marker = L.marker([lat, lon], {
          icon: L.divIcon({ className: "wg-here", iconSize: [28, 28], iconAnchor: [14, 14] }),
        }).addTo(map);
      }
      where.textContent = lat.toFixed(6) + ", " + lon.toFixed(6) + " (" + how + ")";
    }
    function locate() {
      if (!navigator.geolocation) {
        where.textContent = "no GPS on this device: tap the map where the case is";
        return;
      }
      where.textContent = "locating…";
      navigator.geolocation.getCurrentPosition(
        function (p) {
          place(p.coords.latitude, p.coords.longitude, "GPS ±" + Math.round(p.coords.accuracy) + " m");
        },
        function (e) {
          where.textContent = "no GPS fix (" + e.message + "): tap the map where the case is";
        },
        { enableHighAccuracy: true, timeout: 15000, maximumAge: 30000 }
      );
    }
    map.on("click", function (e) {
      place(e.latlng.lat, e.latlng.lng, "tapped on the map");
    });
    form.querySelector(".wg-locate").addEventListener("click", locate);
    form.addEventListener("input", function () {
      key = null;
    });
    if (!o.endpoint) {
      send.disabled = true;
      say("This is a static copy: open the served page to report a case.", "wg-note");
      return;
    }
    locate();

    function post(body, attempt) {
      var headers = { "Content-Type": "application/json", "Idempotency-Key": key };
      if (o.csrf) headers["X-CSRF-Token"] = o.csrf;
      fetch(o.endpoint, {
        method: "POST",
        headers: headers,
        body: JSON.stringify(body),
        credentials: "same-origin",
      })
        .then(function (r) {
          return r
            .json()
            .catch(function () {
              return {};
            })
            .then(function (j) {
              if ((r.status >= 502 && r.status <= 504) && attempt < o.retries) throw new Error("HTTP " + r.status);
              finish(r, j);
            });
        })
        .catch(function (e) {
          if (attempt < o.retries) {
            say("Network trouble (" + e.message + "), retrying — it will be filed once…", "wg-wait");
            setTimeout(function () {
              post(body, attempt + 1);
            }, 1000 * Math.pow(2, attempt));
          } else {
            send.disabled = false;
            say("Not sent: no network. Press Report again — the case will still be filed once.", "wg-error");
          }
        });
    }
    function filed(j) {
      var grid = j.cells && j.cells.grid_code;
      if (o.pin && typeof j.lon === "number") {
        // The new case on the map at once, as the officer would see it after a reload.
        var feature = { type: "Feature", geometry: { type: "Point", coordinates: [j.lon, j.lat] }, properties: j };
        wg.points({ type: "FeatureCollection", features: [feature] }, o.pin).addTo(map);
      }
      say(
        "Filed case #" + j.id + (grid ? " in grid " + grid : " (outside every grid: queued for dispatch)"),
        "wg-ok"
      );
    }
    function finish(r, j) {
      send.disabled = false;
      if (r.ok) {
        filed(j);
        form.querySelector("textarea").value = "";
        key = null;
      } else {
        say((j.detail || j.title || "refused") + " (HTTP " + r.status + ")", "wg-error");
        if (r.status < 500) key = null;
      }
    }
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      if (!pos) {
        say("No position yet: wait for GPS or tap the map where the case is.", "wg-error");
        return;
      }
      key = key || wg.uuid();
      send.disabled = true;
      say("Sending…", "wg-wait");
      var body = {
        lon: pos.lon,
        lat: pos.lat,
        crs: o.crs,
        source: o.source,
        category: form.elements.category.value,
        description: form.elements.description.value,
      };
      if (wg.queueReport) {
        // A page with an offline queue (tablet.js) keeps the report and sends it, once, now
        // or when the network is back; the form is free for the next one meanwhile.
        var h = {
          say: say,
          filed: filed,
          release: function () {
            h.released = true;
            send.disabled = false;
            form.querySelector("textarea").value = "";
            key = null;
          },
          refused: function (r, detail) {
            send.disabled = false;
            say(detail, "wg-error");
            if (r.status < 500) key = null;
          },
          direct: function () {
            post(body, 0);
          },
        };
        wg.queueReport(o, body, key, h);
        return;
      }
      post(body, 0);
    });
  };
})();
