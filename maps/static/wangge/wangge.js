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

  /* A property as a reader sees it: coded values (a category, a status) by their names in
   * the page's language, labels = {property: {value: name}}. */
  wg.shown = function (props, prop, labels) {
    var v = props[prop];
    var names = labels && labels[prop];
    return names && v !== null && v !== undefined && names[v] !== undefined ? names[v] : v;
  };

  /* Popup or tooltip HTML: o = {text, title (a property), fields: [[prop, label]],
   * links: [[template, label]]}; labels as for wg.shown. */
  wg.describe = function (props, o, labels) {
    var h = "";
    if (o.text) h += "<div class='wg-popup-title'>" + wg.esc(o.text) + "</div>";
    if (o.title) h += "<div class='wg-popup-title'>" + wg.esc(wg.shown(props, o.title, labels)) + "</div>";
    if (o.fields && o.fields.length) {
      var rows = "";
      o.fields.forEach(function (f) {
        var v = wg.shown(props, f[0], labels);
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

  /* Points as div-icon markers: o = {cls, classBy, size, glyphs, color, title, popup, labels}. */
  wg.points = function (data, o) {
    var size = o.size || 28;
    return L.geoJson(data, {
      pointToLayer: function (f, latlng) {
        var kind = token(f.properties[o.classBy]);
        var glyph = (o.glyphs && o.glyphs[kind]) || "";
        return L.marker(latlng, {
          title: o.title ? String(wg.shown(f.properties, o.title, o.labels) || "") : "",
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
            return wg.describe(f.properties, o.popup, o.labels);
          });
        }
      },
    });
  };

  /* Layers shown one at a time (the planning page's coverage gaps): a control of radio
   * buttons headed o.title, with o.none to hide them all; themes = [[name, layer]], the first
   * shown at once. Legend rows with data-theme="<index>" are marked wg-active with theirs. */
  wg.themes = function (map, themes, o) {
    var choices = {};
    var none = L.layerGroup();
    themes.forEach(function (th) {
      choices[th[0]] = th[1];
    });
    choices[o.none] = none;
    function mark(layer) {
      var active = -1;
      themes.forEach(function (th, i) {
        if (th[1] === layer) active = i;
      });
      document.querySelectorAll(".wg-theme[data-theme]").forEach(function (row) {
        row.classList.toggle("wg-active", Number(row.getAttribute("data-theme")) === active);
        row.classList.toggle("wg-inactive", Number(row.getAttribute("data-theme")) !== active);
      });
    }
    var first = themes.length ? themes[0][1] : none;
    first.addTo(map);
    var control = L.control.layers(choices, null, { collapsed: false, position: o.position || "topright" }).addTo(map);
    var box = control.getContainer();
    box.classList.add("wg-themes");
    var head = L.DomUtil.create("div", "wg-themes-title");
    head.textContent = o.title;
    box.insertBefore(head, box.firstChild);
    map.on("baselayerchange", function (e) {
      mark(e.layer);
    });
    mark(first);
    return control;
  };

  /* Leaflet's own controls in the page's language, T = {zoom_in, zoom_out, layers, close,
   * metres, kilometres}:
   * the zoom buttons' and layer toggle's titles, popups' close buttons, the attribution's
   * prefix (no English tooltip), and a metric scale. The controls are placed after this
   * runs (the page's script adds them in turn), hence the delay. */
  wg.localize = function (map, T) {
    function name(el, text) {
      if (el && text) {
        el.title = text;
        el.setAttribute("aria-label", text);
      }
    }
    // The scale's units in the page's words ("500 米", "1 公里"): T.metres, T.kilometres.
    var Scale = L.Control.Scale.extend({
      _updateMetric: function (maxMeters) {
        var meters = this._getRoundNum(maxMeters);
        var label = meters < 1000
          ? fill(T.metres || "{n} m", { n: meters })
          : fill(T.kilometres || "{n} km", { n: meters / 1000 });
        this._updateScale(this._mScale, label, meters / maxMeters);
      },
    });
    new Scale({ imperial: false }).addTo(map);
    if (map.attributionControl) {
      map.attributionControl.setPrefix("<a href='https://leafletjs.com'>Leaflet</a>");
    }
    map.on("popupopen tooltipopen", function (e) {
      var close = e.popup && e.popup.getElement && e.popup.getElement().querySelector(".leaflet-popup-close-button");
      name(close, T.close);
    });
    setTimeout(function () {
      var box = map.getContainer();
      name(box.querySelector(".leaflet-control-zoom-in"), T.zoom_in);
      name(box.querySelector(".leaflet-control-zoom-out"), T.zoom_out);
      box.querySelectorAll(".leaflet-control-layers-toggle").forEach(function (el) {
        name(el, T.layers);
      });
    }, 0);
  };

  function fill(template, values) {
    return String(template).replace(/\{(\w+)\}/g, function (m, k) {
      return values[k] !== undefined ? String(values[k]) : m;
    });
  }

  /* What a refusal says. In English, the service's own words (the problem's detail, else
   * its title); in another language, the page's words for its status (T["http.<status>"],
   * naming the field at fault of a 422 by the page's label for it), since the service
   * speaks English; the service's words when the page has none for the status. */
  wg.problem = function (res, T, locale) {
    var b = res && res.body;
    var status = res ? res.status : "?";
    T = T || {};
    var own = T["http." + status] || (status >= 500 ? T["http.5xx"] : undefined);
    if (own && locale && locale !== "en") {
      var field = b && b.field ? String(b.field).split(/[.\[]/)[0] : "";
      return fill(own, { field: T["field." + field] || field || "" });
    }
    if (b && (b.detail || b.title)) return b.detail || b.title;
    return own ? fill(own, { field: (b && b.field) || "" }) : "HTTP " + status;
  };

  /* A refusal as the page shows it: what it says (wg.problem) and its HTTP status, in the
   * page's typography (T["http.refused"]: "{detail} (HTTP {status})"). */
  wg.refusal = function (res, T, locale) {
    return fill((T && T["http.refused"]) || "{detail} (HTTP {status})", {
      detail: wg.problem(res, T, locale),
      status: res ? res.status : "?",
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
   * o = {form, endpoint, csrf, source, crs, retries, pin (wg.points options for the new case),
   * text (its words, maps/pages.py REPORT_FORM_TEXT)}.
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
    var T = o.text || {};
    function t(k, values) {
      return String(T[k] === undefined ? k : T[k]).replace(/\{(\w+)\}/g, function (m, n) {
        return values && values[n] !== undefined && values[n] !== null ? String(values[n]) : m;
      });
    }

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
        where.textContent = t("no_gps");
        return;
      }
      where.textContent = t("locating");
      navigator.geolocation.getCurrentPosition(
        function (p) {
          // A fix is WGS84; the page may be on a GCJ-02/BD-09 basemap (maps/basemap.py).
          var ll = wg.onPage ? wg.onPage(p.coords.latitude, p.coords.longitude) : [p.coords.latitude, p.coords.longitude];
          place(ll[0], ll[1], t("gps", { m: Math.round(p.coords.accuracy) }));
        },
        function (e) {
          where.textContent = t("no_fix");
        },
        { enableHighAccuracy: true, timeout: 15000, maximumAge: 30000 }
      );
    }
    map.on("click", function (e) {
      place(e.latlng.lat, e.latlng.lng, t("tapped"));
    });
    form.querySelector(".wg-locate").addEventListener("click", locate);
    form.addEventListener("input", function () {
      key = null;
    });
    if (!o.endpoint) {
      send.disabled = true;
      say(t("static"), "wg-note");
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
            say(t("retrying"), "wg-wait");
            setTimeout(function () {
              post(body, attempt + 1);
            }, 1000 * Math.pow(2, attempt));
          } else {
            send.disabled = false;
            say(t("no_network"), "wg-error");
          }
        });
    }
    function filed(j) {
      var grid = j.cells && j.cells.grid_code;
      if (o.pin && typeof j.lon === "number") {
        // The new case on the map at once, as the officer would see it after a reload.
        // The answer is WGS84; the page may be on a GCJ-02/BD-09 basemap (maps/basemap.py).
        var ll = wg.onPage ? wg.onPage(j.lat, j.lon) : [j.lat, j.lon];
        var feature = { type: "Feature", geometry: { type: "Point", coordinates: [ll[1], ll[0]] }, properties: j };
        wg.points({ type: "FeatureCollection", features: [feature] }, o.pin).addTo(map);
      }
      var named = grid && ((o.names && o.names[grid]) || grid);
      say(grid ? t("filed_in", { id: j.id, grid: named }) : t("filed_outside", { id: j.id }), "wg-ok");
    }
    function finish(r, j) {
      send.disabled = false;
      if (r.ok) {
        filed(j);
        form.querySelector("textarea").value = "";
        key = null;
      } else {
        say(wg.refusal({ status: r.status, body: j }, T, o.locale), "wg-error");
        if (r.status < 500) key = null;
      }
    }
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      if (!pos) {
        say(t("no_position"), "wg-error");
        return;
      }
      key = key || wg.uuid();
      send.disabled = true;
      say(t("sending"), "wg-wait");
      var body = {
        lon: pos.lon,
        lat: pos.lat,
        // Positions are in the page's datum; the server converts them back exactly.
        crs: wg.datum && wg.datum !== "WGS84" ? wg.datum : o.crs,
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
