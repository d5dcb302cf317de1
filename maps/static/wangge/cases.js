/* wangge live pages: what the dispatch queue and the tablet share about cases.
 *
 * No user-visible text here: every word comes from the page's text dict (maps/live.py).
 * Requests go to the service's own origin with the page session cookie; writes carry the
 * page's CSRF token.
 */
(function () {
  "use strict";
  var wg = window.wg;
  var OPEN = ["reported", "registered", "dispatched", "signed", "handled"];
  var AMBER_AT = 0.8; // as the service's clock (service.dispatch.cases.AMBER_AT)

  var C = (wg.cases = { OPEN: OPEN });

  /* A text from the dict with {name} filled in (values escaped by the caller if HTML). */
  C.fmt = function (template, values) {
    return String(template || "").replace(/\{(\w+)\}/g, function (m, k) {
      return values && values[k] !== undefined && values[k] !== null ? String(values[k]) : m;
    });
  };

  C.isOpen = function (state) {
    return OPEN.indexOf(state) >= 0;
  };

  /* green, amber (past 80 % of the step's limit), red (overdue) or null (no clock), now. */
  C.clock = function (c, limits, now) {
    if (!c.step_due_at || !C.isOpen(c.state)) return null;
    var due = Date.parse(c.step_due_at);
    now = now || Date.now();
    if (c.step_overdue || now >= due) return "red";
    var minutes = limits && limits[c.category + "|" + c.priority + "|" + c.step];
    if (minutes && now >= due - minutes * 60000 * (1 - AMBER_AT)) return "amber";
    return "green";
  };

  /* "3 h 5 min" from milliseconds, in the page's words. */
  C.span = function (ms, T) {
    var m = Math.max(0, Math.round(Math.abs(ms) / 60000));
    if (m < 60) return C.fmt(T["t.min"], { m: m });
    var h = Math.floor(m / 60);
    if (h < 48) return C.fmt(T["t.hours"], { h: h, m: m % 60 });
    return C.fmt(T["t.days"], { d: Math.floor(h / 24), h: h % 24 });
  };

  /* "due in 2 h 10 min" / "overdue by 5 min" / "" (no deadline). */
  C.due = function (c, T, now) {
    if (!c.step_due_at || !C.isOpen(c.state)) return "";
    var left = Date.parse(c.step_due_at) - (now || Date.now());
    if (left <= 0) return C.fmt(T.overdue_by, { t: C.span(left, T) });
    if (c.step_overdue) return T.overdue;
    return C.fmt(T.due_in, { t: C.span(left, T) });
  };

  /* A moment as the page's language writes it, in the city's time: o = {locale, timeZone}
   * (the page's options; the browser's own settings do not decide). */
  C.when = function (iso, o) {
    if (!iso) return "";
    var d = new Date(iso);
    if (isNaN(d)) return String(iso);
    o = o || {};
    try {
      return d.toLocaleString(o.locale || undefined, {
        timeZone: o.timeZone || undefined,
        year: "numeric",
        month: "short",
        day: "numeric",
        hour: "2-digit",
        minute: "2-digit",
        second: "2-digit",
      });
    } catch (err) {
      return d.toLocaleString();
    }
  };

  /* fetch on the page session: resolves {status, ok, body, etag}; rejects on no network. */
  C.request = function (url, opts) {
    opts = opts || {};
    var headers = Object.assign({}, opts.headers || {});
    if (opts.csrf && opts.method && opts.method !== "GET") headers["X-CSRF-Token"] = opts.csrf;
    var body = opts.body;
    if (opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.json);
    }
    return fetch(url, {
      method: opts.method || "GET",
      headers: headers,
      body: body,
      credentials: "same-origin",
      cache: "no-store",
    }).then(function (r) {
      return r
        .json()
        .catch(function () {
          return null;
        })
        .then(function (j) {
          return { status: r.status, ok: r.ok, body: j, etag: r.headers.get("ETag") };
        });
    });
  };

  /* What a refusal says, in the page's words (wg.problem). */
  C.detail = function (res, T, locale) {
    return wg.problem(res, T, locale);
  };

  /* The glyph of a case's category, as a small pin (not a map marker). */
  C.glyph = function (c, glyphs) {
    var kind = String(c.category || "").replace(/[^a-z_]/g, "");
    return "<span class='wg-pin wg-glyph wg-" + kind + "'>" + wg.esc(glyphs[kind] || "") + "</span>";
  };

  /* Merge the case of a stream event (``ev.case``) into a known case. */
  C.merge = function (c, ev) {
    var out = Object.assign({}, c, ev.case);
    out.id = ev.case_id;
    return out;
  };
})();
