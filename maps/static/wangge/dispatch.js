/* wangge dispatch page, live: the case queue beside the map, kept current by the stream.
 *
 * wg.dispatchLive(map, cluster, o) takes over the page's "Open incidents" cluster: it loads
 * the open cases of the page's area (GET /cases, paged), shows them as markers coloured by
 * state and clock and as a filterable queue, and follows /cases/stream from the event the
 * page was rendered at (the browser resumes with Last-Event-ID after a drop), so cases
 * appear, change and leave without a reload. A click opens a case: its history, its grid's
 * team and the caller's actions, sent with If-Match on the version shown.
 * o: see maps/live.py (add_dispatch_queue); every word comes from o.text.
 */
(function () {
  "use strict";
  var wg = window.wg;
  var C = wg.cases;
  var LEVELS = ["city", "district", "community"];
  var FIELDS = ["reason", "assignee", "area", "duplicate_of", "satisfaction", "priority", "note"];
  var MAX_LIST = 400; // rows drawn in the queue (the markers show every case)
  var FRESH_MS = 10000;

  wg.dispatchLive = function (map, cluster, o) {
    var T = o.text;
    var root = document.getElementById("wg-queue");
    if (!root || !window.fetch) return;
    var esc = wg.esc;
    var cases = {}; // id -> the case as GET /cases answers it, kept current by the stream
    var markers = {}; // id -> its marker (in the cluster while it passes the filters)
    var outside = {}; // ids seen on the stream that lie outside the page's area
    var fetching = {}; // id -> true while GET /cases/{id} runs
    var teams = {}; // grid code -> promise of its team
    var filters = { state: "", level: "", category: "", overdue: false };
    var opened = null; // {id, detail, events, form: action name or null}
    var lastId = o.lastEventId || 0;
    var loaded = false;

    function t(key, values) {
      return C.fmt(T[key] === undefined ? key : T[key], values);
    }
    function label(prefix, value) {
      var k = prefix + "." + value;
      return T[k] === undefined ? String(value) : T[k];
    }
    function hint(action) {
      return T["hint." + action] === undefined ? label("action", action) : T["hint." + action];
    }

    // -- the panel ------------------------------------------------------------------------
    function options(values, all, labelOf) {
      var h = "<option value=''>" + esc(all) + "</option>";
      values.forEach(function (v) {
        h += "<option value='" + esc(v) + "'>" + esc(labelOf(v)) + "</option>";
      });
      return h;
    }
    root.innerHTML =
      "<div class='wg-qhead'><b>" + esc(T.queue) + "</b> <span class='wg-status'>" + esc(T.connecting) + "</span></div>" +
      "<div class='wg-filters'>" +
      "<select data-filter='state' aria-label='" + esc(T["field.state"]) + "'>" +
      options(C.OPEN, T.all_states, function (s) { return label("state", s); }) + "</select>" +
      "<select data-filter='level' aria-label='" + esc(T["field.owner"]) + "'>" +
      options(LEVELS, T.all_levels, function (s) { return label("level", s); }) + "</select>" +
      "<select data-filter='category' aria-label='" + esc(T["field.category"]) + "'>" +
      options(Object.keys(o.categories), T.all_categories, function (s) { return o.categories[s]; }) + "</select>" +
      "<label class='wg-check'><input type='checkbox' data-filter='overdue'> " + esc(T.overdue_only) + "</label>" +
      "</div>" +
      "<div class='wg-qcount'>" + esc(T.loading) + "</div>" +
      "<ol class='wg-qlist'></ol>" +
      "<section class='wg-case' hidden></section>";
    var statusEl = root.querySelector(".wg-status");
    var countEl = root.querySelector(".wg-qcount");
    var listEl = root.querySelector(".wg-qlist");
    var caseEl = root.querySelector(".wg-case");
    L.DomEvent.disableScrollPropagation(root);

    function status(text, cls) {
      statusEl.textContent = text;
      statusEl.className = "wg-status " + (cls || "");
    }

    root.querySelector(".wg-filters").addEventListener("change", function (e) {
      var f = e.target.getAttribute("data-filter");
      if (!f) return;
      filters[f] = e.target.type === "checkbox" ? e.target.checked : e.target.value;
      sync();
    });

    function passes(c) {
      if (!C.isOpen(c.state)) return false;
      if (filters.state && c.state !== filters.state) return false;
      if (filters.level && c.owner_level !== filters.level) return false;
      if (filters.category && c.category !== filters.category) return false;
      if (filters.overdue && c.clock !== "red") return false;
      return true;
    }

    function inside(c) {
      var p = o.areaPath;
      if (!p) return true;
      return !!c.area_path && (c.area_path === p || c.area_path.indexOf(p + "/") === 0);
    }

    // -- markers ----------------------------------------------------------------------------
    // Clusters take the colour of their most urgent case.
    cluster.options.iconCreateFunction = function (cl) {
      var red = 0;
      var amber = 0;
      cl.getAllChildMarkers().forEach(function (m) {
        if (m.options.wgClock === "red") red++;
        else if (m.options.wgClock === "amber") amber++;
      });
      var n = cl.getChildCount();
      var cls = n < 10 ? "small" : n < 100 ? "medium" : "large";
      var extra = red ? " wg-cluster-red" : amber ? " wg-cluster-amber" : "";
      return L.divIcon({
        html: "<div><span>" + n + "</span></div>",
        className: "marker-cluster marker-cluster-" + cls + extra,
        iconSize: L.point(40, 40),
      });
    };

    function fresh(c) {
      return c._fresh && Date.now() - c._fresh < FRESH_MS;
    }
    function iconOf(c) {
      var kind = String(c.category || "").replace(/[^a-z_]/g, "");
      var cls = "wg-pin wg-incident wg-live wg-" + kind + " wg-state-" + c.state;
      if (c.clock) cls += " wg-clock-" + c.clock;
      if (c.supervised) cls += " wg-supervised";
      if (fresh(c)) cls += " wg-fresh";
      return L.divIcon({
        className: cls,
        html: esc(o.glyphs[kind] || ""),
        iconSize: [26, 26],
        iconAnchor: [13, 13],
      });
    }
    function tip(c) {
      return (
        "<b>#" + esc(c.id) + " " + esc(o.categories[c.category] || c.category) + "</b><br>" +
        esc(label("state", c.state)) + (c.clock ? " · " + esc(C.due(c, T)) : "")
      );
    }
    function onPage(c) {
      return wg.onPage ? wg.onPage(c.lat, c.lon) : [c.lat, c.lon];
    }
    function place(c) {
      var m = markers[c.id];
      if (!m) {
        // Cases come in WGS84; the page may be on a GCJ-02/BD-09 basemap (maps/basemap.py).
        m = L.marker(onPage(c), { icon: iconOf(c), wgClock: c.clock, keyboard: true });
        m.bindTooltip(function () {
          return tip(cases[c.id] || c);
        });
        m.on("click", function () {
          select(c.id, { pan: false });
        });
        markers[c.id] = m;
        return m;
      }
      m.options.wgClock = c.clock;
      m.setIcon(iconOf(c));
      var ll = m.getLatLng();
      var at = onPage(c);
      if (ll.lat !== at[0] || ll.lng !== at[1]) m.setLatLng(at);
      return m;
    }
    function forget(id) {
      var m = markers[id];
      if (m) {
        cluster.removeLayer(m);
        delete markers[id];
      }
      delete cases[id];
    }

    /* Keep a case (newer versions only); returns whether it changed. */
    function keep(c) {
      var old = cases[c.id];
      if (old && old.version > c.version) return false;
      if (old && old.version === c.version) return false;
      c.clock = C.clock(c, o.limits);
      if (old && old._fresh) c._fresh = old._fresh;
      cases[c.id] = c;
      if (!C.isOpen(c.state)) {
        forget(c.id);
        return true;
      }
      place(c);
      return true;
    }

    /* Markers in or out of the cluster by the filters; then the queue. */
    function sync() {
      var add = [];
      var drop = [];
      Object.keys(markers).forEach(function (id) {
        var m = markers[id];
        var want = cases[id] && passes(cases[id]);
        var has = cluster.hasLayer(m);
        if (want && !has) add.push(m);
        else if (!want && has) drop.push(m);
      });
      if (drop.length) cluster.removeLayers(drop);
      if (add.length) cluster.addLayers(add);
      cluster.refreshClusters();
      renderList();
    }

    // -- the queue --------------------------------------------------------------------------
    var RANK = { red: 0, amber: 1, green: 2 };
    function order(a, b) {
      var ra = a.clock ? RANK[a.clock] : 3;
      var rb = b.clock ? RANK[b.clock] : 3;
      if (ra !== rb) return ra - rb;
      var da = a.step_due_at ? Date.parse(a.step_due_at) : Infinity;
      var db = b.step_due_at ? Date.parse(b.step_due_at) : Infinity;
      if (da !== db) return da - db;
      return b.id - a.id;
    }
    /* An area's name as the page knows it (the page's areas), else its code. */
    function areaName(code) {
      return (o.names && o.names[code]) || code || "";
    }
    function assignee(kind, code) {
      return t("assignee." + kind, { code: kind === "grid" ? areaName(code) : code });
    }
    function owner(c) {
      return c.owner_level ? label("level", c.owner_level) + " " + areaName(c.owner_area_code) : "";
    }
    function row(c) {
      var cls = "wg-qitem" + (c.clock ? " wg-clock-" + c.clock : "") + (fresh(c) ? " wg-fresh" : "");
      if (opened && opened.id === c.id) cls += " wg-selected";
      return (
        "<li class='" + cls + "' data-id='" + esc(c.id) + "' tabindex='0'>" +
        C.glyph(c, o.glyphs) +
        "<div><b>#" + esc(c.id) + " " + esc(o.categories[c.category] || c.category) + "</b> " +
        "<span class='wg-badge wg-st-" + esc(c.state) + "'>" + esc(label("state", c.state)) + "</span>" +
        (c.supervised ? " <span class='wg-badge wg-flag'>" + esc(T["flag.supervised"]) + "</span>" : "") +
        "<br><small>" + esc(owner(c)) + (c.clock ? " · <span class='wg-due'>" + esc(C.due(c, T)) + "</span>" : "") +
        "</small>" +
        (c.description ? "<div class='wg-qdesc'>" + esc(c.description) + "</div>" : "") +
        "</div></li>"
      );
    }
    function renderList() {
      if (!loaded) return;
      drawn = Date.now();
      var all = [];
      var shown = [];
      Object.keys(cases).forEach(function (id) {
        var c = cases[id];
        if (!C.isOpen(c.state)) return;
        all.push(c);
        if (passes(c)) shown.push(c);
      });
      shown.sort(order);
      countEl.textContent =
        shown.length === all.length ? t("count", { n: all.length }) : t("count_of", { shown: shown.length, n: all.length });
      listEl.innerHTML = shown.length
        ? shown.slice(0, MAX_LIST).map(row).join("")
        : "<li class='wg-qnone'>" + esc(T.none) + "</li>";
    }
    function pick(e) {
      var li = e.target.closest ? e.target.closest("li[data-id]") : null;
      if (li) select(Number(li.getAttribute("data-id")), { pan: true });
    }
    listEl.addEventListener("click", pick);
    listEl.addEventListener("keydown", function (e) {
      if (e.key === "Enter") pick(e);
    });

    // -- loading and following --------------------------------------------------------------
    function load() {
      var q = "?state=" + C.OPEN.join(",") + "&limit=" + o.pageSize;
      if (o.area) q += "&area=" + encodeURIComponent(o.area);
      var got = [];
      function page(url) {
        return C.request(url).then(function (res) {
          if (!res.ok) throw new Error(C.detail(res, T, o.locale));
          got = got.concat(res.body.items);
          if (res.body.next && got.length < o.maxCases) {
            // Same origin, whatever host name the server saw.
            var next = new URL(res.body.next, location.href);
            return page(next.pathname + next.search);
          }
          return got;
        });
      }
      return page(o.cases + q).then(
        function (items) {
          // The page's first markers (drawn from its data) give way to the live ones.
          cluster.clearLayers();
          items.forEach(keep);
          loaded = true;
          sync();
        },
        function (e) {
          countEl.textContent = t("load_failed", { detail: e.message });
        }
      );
    }

    function fetchCase(id) {
      if (fetching[id]) {
        fetching[id] = "again";
        return;
      }
      fetching[id] = true;
      C.request(o.cases + "/" + id).then(
        function (res) {
          var again = fetching[id] === "again";
          delete fetching[id];
          if (res.ok) {
            var c = res.body;
            if (!inside(c)) outside[id] = true;
            else {
              c._fresh = Date.now();
              if (keep(c)) sync();
            }
          } else if (res.status === 404) outside[id] = true;
          if (again) fetchCase(id);
        },
        function () {
          delete fetching[id];
        }
      );
    }

    function onEvent(ev) {
      if (ev.id > lastId) lastId = ev.id;
      var id = ev.case_id;
      var c = cases[id];
      if (c) {
        if (ev.case.version <= c.version) return;
        var next = C.merge(c, ev);
        next._fresh = Date.now();
        if (keep(next)) sync();
        if (opened && opened.id === id) changed(ev);
      } else if (!outside[id] && C.isOpen(ev.case.state)) {
        fetchCase(id);
      }
    }

    var source = null;
    function follow() {
      var sep = o.stream.indexOf("?") >= 0 ? "&" : "?";
      // The URL's id is where the stream starts; a reconnecting browser sends the last id it
      // got as Last-Event-ID, which the server prefers.
      source = new EventSource(o.stream + sep + "last_event_id=" + lastId);
      source.onopen = function () {
        status(T.live, "wg-on");
      };
      source.onerror = function () {
        status(T.reconnecting, "wg-off");
        if (source.readyState === 2) {
          // Refused (the session ended?) or closed: try again later from the last id.
          setTimeout(follow, 15000);
        }
      };
      source.addEventListener("case", function (e) {
        var ev;
        try {
          ev = JSON.parse(e.data);
        } catch (err) {
          return;
        }
        onEvent(ev);
      });
    }

    // Clocks run without events: amber and red come with time. The queue's "due in" texts
    // are redrawn each minute (a redraw under the pointer could swallow a click).
    var drawn = Date.now();
    setInterval(function () {
      var moved = false;
      Object.keys(cases).forEach(function (id) {
        var c = cases[id];
        var clock = C.clock(c, o.limits);
        if (clock !== c.clock || (c._fresh && !fresh(c))) {
          c.clock = clock;
          if (!fresh(c)) delete c._fresh;
          if (markers[id]) place(c);
          moved = true;
        }
      });
      if (moved) sync();
      else if (Date.now() - drawn >= 60000) renderList();
    }, 10000);

    // -- one case ---------------------------------------------------------------------------
    function select(id, how) {
      opened = { id: id, detail: null, events: null, form: null };
      listEl.hidden = true;
      countEl.hidden = true;
      caseEl.hidden = false;
      caseEl.innerHTML = "<button type='button' class='wg-back'>" + esc(T.back) + "</button><p>" + esc(T.loading) + "</p>";
      var m = markers[id];
      if (how && how.pan && m && cluster.hasLayer(m)) cluster.zoomToShowLayer(m, function () {});
      reload(null);
    }
    function close() {
      opened = null;
      caseEl.hidden = true;
      caseEl.innerHTML = "";
      listEl.hidden = false;
      countEl.hidden = false;
      renderList();
    }
    function reload(message) {
      var id = opened.id;
      return Promise.all([C.request(o.cases + "/" + id), C.request(o.cases + "/" + id + "/events")]).then(
        function (r) {
          if (!opened || opened.id !== id) return;
          if (!r[0].ok) {
            caseEl.innerHTML = backButton() + "<p class='wg-msg wg-error'>" + esc(t("failed", { detail: C.detail(r[0], T, o.locale) })) + "</p>";
            return;
          }
          opened.detail = r[0].body;
          opened.events = r[1].ok ? r[1].body : [];
          opened.form = null;
          if (keep(Object.assign({}, r[0].body))) sync();
          render(message);
        },
        function () {
          if (opened && opened.id === id) say(T.network, "wg-error");
        }
      );
    }
    function backButton() {
      return "<button type='button' class='wg-back'>" + esc(T.back) + "</button>";
    }
    function say(text, cls) {
      var el = caseEl.querySelector(".wg-msg");
      if (!el) return;
      el.textContent = text || "";
      el.className = "wg-msg " + (cls || "");
    }
    function changed(ev) {
      var who = label("role", ev.actor_role);
      var text = t("updated", { action: label("action", ev.action), role: who });
      if (opened.form) say(text, "wg-warn"); // keep what is being typed; If-Match will tell
      else reload({ text: text, cls: "wg-warn" });
    }

    function fieldsTable(d) {
      var rows = [
        [T["field.state"], label("state", d.state) + (d.clock ? " · " + C.due(d, T) : "")],
        [T["field.priority"], label("priority", d.priority)],
        [T["field.owner"], owner(d)],
        [T["field.assignee"], d.assignee_kind ? assignee(d.assignee_kind, d.assignee_code) : ""],
        [T["field.reported"], C.when(d.reported_at, o)],
        [T["field.address"], d.address],
        [T["field.description"], d.description],
      ];
      var flags = [];
      if (d.supervised) flags.push(T["flag.supervised"]);
      if (d.escalations) flags.push(t("flag.escalations", { n: d.escalations }));
      if (d.reopens) flags.push(t("flag.reopens", { n: d.reopens }));
      if (flags.length) rows.push([T["field.flags"], flags.join(", ")]);
      return (
        "<table class='wg-fields'>" +
        rows
          .filter(function (r) {
            return r[1];
          })
          .map(function (r) {
            return "<tr><th>" + esc(r[0]) + "</th><td>" + esc(r[1]) + "</td></tr>";
          })
          .join("") +
        "</table>"
      );
    }
    function actionsHtml(d) {
      var names = (d.allowed_actions || []).filter(function (a) {
        return o.actions[a];
      });
      if (!names.length) return "<p class='wg-note'>" + esc(T.no_actions) + "</p>";
      return (
        "<div class='wg-actions'>" +
        names
          .map(function (a) {
            return (
              "<button type='button' class='wg-act' data-action='" + esc(a) + "' title='" + esc(hint(a)) + "'>" +
              esc(label("action", a)) + "</button>"
            );
          })
          .join("") +
        "</div>"
      );
    }
    function historyHtml(events) {
      return (
        "<ol class='wg-history'>" +
        events
          .slice()
          .reverse()
          .map(function (e) {
            var moved = e.from_state && e.from_state !== e.to_state;
            var photos = (e.attachments || [])
              .map(function (u, i) {
                var same = false;
                try {
                  same = new URL(u).origin === location.origin;
                } catch (err) {
                  return "";
                }
                var img = same ? "<img src='" + esc(u) + "' alt='' loading='lazy'>" : "";
                return "<a class='wg-photo' href='" + esc(u) + "' target='_blank' rel='noopener noreferrer'>" + img + esc(t("photo", { n: i + 1 })) + "</a>";
              })
              .join(" ");
            return (
              "<li><time>" + esc(C.when(e.at, o)) + "</time> <b>" + esc(label("action", e.action)) + "</b> " +
              "<span class='wg-note'>" + esc(t("by", { role: label("role", e.actor_role) + (e.actor_area_code ? " " + areaName(e.actor_area_code) : "") })) + "</span>" +
              (moved ? "<br>" + esc(label("state", e.from_state)) + " → " + esc(label("state", e.to_state)) : "") +
              (e.assignee_code && e.action === "dispatch" ? "<br>" + esc(assignee(e.assignee_kind, e.assignee_code)) : "") +
              (e.reason ? "<div>" + esc(T["field.reason"]) + ": " + esc(label("reason", e.reason)) + "</div>" : "") +
              (e.note ? "<div class='wg-enote'>" + esc(e.note) + "</div>" : "") +
              (photos ? "<div>" + photos + "</div>" : "") +
              "</li>"
            );
          })
          .join("") +
        "</ol>"
      );
    }
    function render(message) {
      var d = opened.detail;
      caseEl.innerHTML =
        backButton() +
        "<h3>" + C.glyph(d, o.glyphs) + "#" + esc(d.id) + " " + esc(o.categories[d.category] || d.category) + "</h3>" +
        "<div class='wg-msg' role='status' aria-live='polite'></div>" +
        fieldsTable(d) +
        "<h4>" + esc(T.actions) + "</h4>" + actionsHtml(d) +
        "<form class='wg-actform' hidden autocomplete='off'></form>" +
        "<h4>" + esc(T.team) + "</h4><div class='wg-teambox'>" + esc(d.grid_code ? T.loading : T.no_grid) + "</div>" +
        "<h4>" + esc(T.history) + "</h4>" + historyHtml(opened.events || []);
      if (message) say(message.text, message.cls);
      if (d.grid_code) showTeam(d.grid_code);
    }

    function showTeam(code) {
      if (!teams[code]) {
        teams[code] = C.request(o.team.replace("{code}", encodeURIComponent(code))).then(function (res) {
          if (!res.ok) {
            delete teams[code];
            return null;
          }
          return res.body;
        });
      }
      teams[code].then(function (team) {
        var box = caseEl.querySelector(".wg-teambox");
        if (!box || !opened || !opened.detail || opened.detail.grid_code !== code) return;
        if (!team || !team.length) {
          box.innerHTML = "<p class='wg-note'>" + esc(T.no_team) + "</p>";
          return;
        }
        box.innerHTML =
          "<ul class='wg-team'>" +
          team
            .map(function (m) {
              var tel = String(m.phone || "").replace(/[^0-9+]/g, "");
              return (
                "<li><span><b>" + esc(m.name) + "</b><span class='wg-role'>" + esc(o.teamRoles[m.team_role] || m.team_role) + "</span></span>" +
                (tel ? "<a class='wg-tel' href='tel:" + esc(tel) + "'>" + esc(T.call) + "</a>" : "") +
                "</li>"
              );
            })
            .join("") +
          "</ul>";
      });
    }

    // -- acting ----------------------------------------------------------------------------
    function input(name, action, d) {
      var id = "wg-f-" + name;
      var lab = function (key) {
        return "<label for='" + id + "'>" + esc(T[key]) + "</label>";
      };
      if (name === "note") return lab("field.note") + "<textarea id='" + id + "' name='note' maxlength='4000'></textarea>";
      if (name === "reason") {
        if (action === "reject") {
          return lab("field.reason") + "<select id='" + id + "' name='reason'>" +
            ["not_a_case", "out_of_scope", "duplicate"].map(function (r) {
              return "<option value='" + r + "'>" + esc(label("reason", r)) + "</option>";
            }).join("") + "</select>";
        }
        return lab("field.reason") + "<input id='" + id + "' name='reason' maxlength='1000'>";
      }
      if (name === "assignee") {
        return "<label for='" + id + "'>" + esc(T["field.assignee_kind"]) + "</label>" +
          "<select id='" + id + "' name='assignee_kind'><option value='grid'>" + esc(T["assignee_kind.grid"]) + "</option>" +
          "<option value='unit'>" + esc(T["assignee_kind.unit"]) + "</option></select>" +
          "<label for='" + id + "-code'>" + esc(T["field.assignee_code"]) + "</label>" +
          "<input id='" + id + "-code' name='assignee_code' inputmode='numeric' value='" + esc(d.grid_code || "") + "'>";
      }
      if (name === "priority") {
        return "<label for='" + id + "'>" + esc(T["field.priority_new"]) + "</label><select id='" + id + "' name='priority'>" +
          ["urgent", "high", "normal"].map(function (p) {
            return "<option value='" + p + "'" + (p === d.priority ? " selected" : "") + ">" + esc(label("priority", p)) + "</option>";
          }).join("") + "</select>";
      }
      if (name === "duplicate_of") return lab("field.duplicate_of") + "<input id='" + id + "' name='duplicate_of' inputmode='numeric'>";
      if (name === "satisfaction") {
        return lab("field.satisfaction") + "<select id='" + id + "' name='satisfaction'>" +
          [5, 4, 3, 2, 1].map(function (n) {
            return "<option value='" + n + "'>" + n + "</option>";
          }).join("") + "</select>";
      }
      if (name === "area") return lab("field.area") + "<input id='" + id + "' name='area' inputmode='numeric'>";
      return "";
    }
    function openForm(action) {
      var d = opened.detail;
      var spec = o.actions[action];
      var wanted = (spec.requires || []).concat(spec.accepts || []);
      var form = caseEl.querySelector(".wg-actform");
      opened.form = action;
      form.setAttribute("data-action", action);
      form.innerHTML =
        "<b>" + esc(label("action", action)) + "</b> <span class='wg-note'>" + esc(hint(action)) + "</span>" +
        FIELDS.filter(function (f) {
          return wanted.indexOf(f) >= 0;
        })
          .map(function (f) {
            return input(f, action, d);
          })
          .join("") +
        "<div class='wg-formbtns'><button type='button' class='wg-send'>" + esc(T.send) + "</button>" +
        "<button type='button' class='wg-cancel'>" + esc(T.cancel) + "</button></div>";
      form.hidden = false;
      var first = form.querySelector("textarea, input, select");
      if (first) first.focus();
    }
    function bodyOf(form, spec) {
      var body = {};
      var v = function (n) {
        var el = form.elements[n];
        return el ? String(el.value).trim() : "";
      };
      ["note", "reason", "priority", "area"].forEach(function (n) {
        if (v(n)) body[n] = v(n);
      });
      if (v("duplicate_of")) body.duplicate_of = Number(v("duplicate_of"));
      if (v("satisfaction")) body.satisfaction = Number(v("satisfaction"));
      if (form.elements.assignee_kind && v("assignee_code")) body.assignee = { kind: v("assignee_kind"), code: v("assignee_code") };
      var missing = (spec.requires || []).filter(function (n) {
        return body[n] === undefined;
      })[0];
      return { body: body, missing: missing };
    }
    function send(form) {
      var action = form.getAttribute("data-action");
      var spec = o.actions[action];
      var d = opened.detail;
      var built = bodyOf(form, spec);
      if (built.missing) {
        say(t("required", { field: T["field." + built.missing] || built.missing }), "wg-error");
        return;
      }
      var button = form.querySelector(".wg-send");
      button.disabled = true;
      var id = d.id;
      C.request(o.cases + "/" + id + "/actions/" + encodeURIComponent(action), {
        method: "POST",
        json: built.body,
        csrf: o.csrf,
        headers: { "If-Match": '"' + d.version + '"', "Idempotency-Key": wg.uuid() },
      }).then(
        function (res) {
          if (!opened || opened.id !== id) return;
          if (res.ok) {
            if (keep(Object.assign({}, res.body))) sync();
            reload({ text: t("done", { action: label("action", action) }), cls: "wg-ok" });
          } else if (res.status === 412) {
            reload(null).then(function () {
              if (opened && opened.detail) say(t("stale", { version: opened.detail.version }), "wg-error");
            });
          } else if (res.status === 409) {
            reload({ text: t("refused", { detail: C.detail(res, T, o.locale) }), cls: "wg-error" });
          } else {
            button.disabled = false;
            say(t("failed", { detail: C.detail(res, T, o.locale) }), "wg-error");
          }
        },
        function () {
          button.disabled = false;
          say(T.network, "wg-error");
        }
      );
    }
    caseEl.addEventListener("click", function (e) {
      var b = e.target.closest ? e.target.closest("button") : null;
      if (!b) return;
      if (b.classList.contains("wg-back")) close();
      else if (b.classList.contains("wg-act")) openForm(b.getAttribute("data-action"));
      else if (b.classList.contains("wg-cancel")) {
        opened.form = null;
        var form = caseEl.querySelector(".wg-actform");
        form.hidden = true;
        form.innerHTML = "";
      } else if (b.classList.contains("wg-send")) send(b.form);
    });

    follow();
    load();
    // For a console (and the browser tests): what the page holds.
    wg.live = { cases: cases, markers: markers, cluster: cluster, select: select };
  };
})();
