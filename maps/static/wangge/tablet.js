/* wangge tablet, live and offline: "my cases" and the queue of what waits to be sent.
 *
 * wg.tablet(map, o) adds to the tablet page:
 * - my cases: the open cases dispatched to the grid (GET /cases?assignee=<grid>), kept in
 *   IndexedDB so they are there without a network, refreshed when the case stream says one
 *   changed; a handler gets sign-for, feedback (a note and photos) and escalate buttons;
 * - the outbox: every report (the page's form files through it, wg.queueReport) and every
 *   case action is first written to IndexedDB with its own Idempotency-Key, then sent, in
 *   order; without a network it waits and goes when the network returns (the `online`
 *   event, or a retry with backoff), so each arrives exactly once whatever is lost on the
 *   way. The officer sees what still waits ("N waiting to send").
 * - a service worker (sw.js) that keeps the page and its files, so the tablet opens offline.
 * Case actions from the queue carry no If-Match: the officer acted on what the tablet
 * showed, perhaps hours ago, and the case's own rules (409, 403) are the check that
 * matters; a version moved by the clock alone (an overdue flag) must not refuse them.
 * o: see maps/live.py (add_tablet_desk); every word comes from o.text.
 */
(function () {
  "use strict";
  var wg = window.wg;
  var C = wg.cases;
  var DB_NAME = "wangge-tablet";
  var MINE = ["dispatched", "signed", "handled"];
  var MAX_SIDE = 1600; // photos are shrunk to this many pixels on their long side …
  var KEEP_BYTES = 1500000; // … unless they are small already
  var PHOTO_TYPES = ["image/jpeg", "image/png", "image/webp"];
  // Predicted state after an action still waiting to be sent (null: it leaves my cases).
  var AFTER = { sign: "signed", feedback: "handled", escalate: null, return: null };

  // -- IndexedDB: cases of the grid, the outbox --------------------------------------------
  function openDb() {
    return new Promise(function (resolve, reject) {
      if (!window.indexedDB) return reject(new Error("no IndexedDB"));
      var req = indexedDB.open(DB_NAME, 1);
      req.onupgradeneeded = function () {
        var db = req.result;
        var cases = db.createObjectStore("cases", { keyPath: "id" });
        cases.createIndex("grid", "_grid");
        db.createObjectStore("outbox", { keyPath: "seq", autoIncrement: true });
        db.createObjectStore("meta");
      };
      req.onsuccess = function () {
        resolve(req.result);
      };
      req.onerror = function () {
        reject(req.error);
      };
    });
  }

  function Store(dbp) {
    /* run(store, mode, work): work(objectStore) may return an IDBRequest whose result the
     * promise resolves to, once the transaction has committed. */
    function run(names, mode, work) {
      return dbp.then(function (db) {
        return new Promise(function (resolve, reject) {
          var tx = db.transaction(names, mode);
          var req = work(tx);
          tx.oncomplete = function () {
            resolve(req && "result" in req ? req.result : undefined);
          };
          tx.onerror = tx.onabort = function () {
            reject(tx.error);
          };
        });
      });
    }
    return {
      outbox: function () {
        return run("outbox", "readonly", function (tx) {
          return tx.objectStore("outbox").getAll();
        });
      },
      add: function (item) {
        return run("outbox", "readwrite", function (tx) {
          return tx.objectStore("outbox").add(item);
        });
      },
      save: function (item) {
        return run("outbox", "readwrite", function (tx) {
          return tx.objectStore("outbox").put(item);
        });
      },
      remove: function (seq) {
        return run("outbox", "readwrite", function (tx) {
          tx.objectStore("outbox").delete(seq);
        });
      },
      cases: function (grid) {
        return run("cases", "readonly", function (tx) {
          return tx.objectStore("cases").index("grid").getAll(grid);
        });
      },
      /* The grid's cases become exactly ``list``. */
      replaceCases: function (grid, list, asOf) {
        return run(["cases", "meta"], "readwrite", function (tx) {
          var s = tx.objectStore("cases");
          var keys = s.index("grid").getAllKeys(grid);
          keys.onsuccess = function () {
            keys.result.forEach(function (k) {
              s.delete(k);
            });
            list.forEach(function (c) {
              s.put(Object.assign({}, c, { _grid: grid }));
            });
          };
          tx.objectStore("meta").put(asOf, "cases:" + grid);
        });
      },
      putCase: function (grid, c) {
        return run("cases", "readwrite", function (tx) {
          tx.objectStore("cases").put(Object.assign({}, c, { _grid: grid }));
        });
      },
      dropCase: function (id) {
        return run("cases", "readwrite", function (tx) {
          tx.objectStore("cases").delete(id);
        });
      },
      asOf: function (grid) {
        return run("meta", "readonly", function (tx) {
          return tx.objectStore("meta").get("cases:" + grid);
        });
      },
    };
  }

  /* A photo as the queue keeps it: {type, data: ArrayBuffer}, shrunk for a weak network. */
  function shrink(file) {
    function original() {
      return file.arrayBuffer().then(function (data) {
        return { type: file.type || "image/jpeg", data: data };
      });
    }
    if (!window.createImageBitmap) return original();
    return createImageBitmap(file)
      .then(function (bmp) {
        var scale = Math.min(1, MAX_SIDE / Math.max(bmp.width, bmp.height));
        if (scale === 1 && file.size <= KEEP_BYTES && PHOTO_TYPES.indexOf(file.type) >= 0) return original();
        var canvas = document.createElement("canvas");
        canvas.width = Math.round(bmp.width * scale);
        canvas.height = Math.round(bmp.height * scale);
        canvas.getContext("2d").drawImage(bmp, 0, 0, canvas.width, canvas.height);
        return new Promise(function (resolve) {
          canvas.toBlob(resolve, "image/jpeg", 0.82);
        }).then(function (blob) {
          if (!blob) return original();
          return blob.arrayBuffer().then(function (data) {
            return { type: "image/jpeg", data: data };
          });
        });
      })
      .catch(original);
  }

  wg.tablet = function (map, o) {
    var T = o.text;
    var esc = wg.esc;
    var sheet = document.querySelector(".wg-sheet");
    var desk = document.getElementById("wg-desk");
    if (!sheet || !desk || !window.fetch) return;
    var dbp = openDb();
    var store = Store(dbp);
    var dbFailed = false;
    dbp.catch(function () {
      dbFailed = true; // nothing is kept: reports go straight out (wg.reportForm's own way)
    });
    var items = []; // the outbox, oldest first (a mirror of IndexedDB)
    var cases = []; // the grid's cases as last fetched
    var asOf = null;
    var handlers = {}; // seq -> the report form's callbacks, while the page lives
    var problem = {}; // case id -> why its last action was refused
    var forms = {}; // case id -> the action whose form is open
    var sessionEnded = false;
    var offlineReady = false;

    function t(key, values) {
      return C.fmt(T[key] === undefined ? key : T[key], values);
    }

    // -- the sections -----------------------------------------------------------------------
    var box = document.createElement("section");
    box.className = "wg-outbox";
    box.setAttribute("aria-live", "polite");
    var mine = document.createElement("section");
    mine.className = "wg-mine";
    var counts = sheet.querySelector(".wg-counts");
    var after = counts ? counts.nextSibling : sheet.firstChild;
    sheet.insertBefore(box, after);
    sheet.insertBefore(mine, after);

    function waiting() {
      return items.filter(function (i) {
        return i.state !== "refused";
      });
    }
    function renderBox() {
      var n = waiting().length;
      var net = sessionEnded ? T.session : !navigator.onLine ? T.offline : offlineReady ? T.ready_offline : T.online;
      box.className = "wg-outbox" + (items.length ? " wg-has" : "") + (navigator.onLine ? "" : " wg-offline");
      box.innerHTML =
        "<h2>" + esc(n ? t("waiting", { n: n }) : T.nothing_waiting) + "</h2>" +
        "<div class='wg-net'>" + esc(net) + "</div>" +
        (items.length
          ? "<ul class='wg-oblist'>" +
            items
              .map(function (i) {
                var state =
                  i.state === "refused" ? t("item.refused", { detail: i.error }) : i.state === "sending" ? T["item.sending"] : T["item.waiting"];
                return (
                  "<li class='wg-ob-" + esc(i.state || "waiting") + (i.state === "refused" ? " wg-refused" : "") + "'><span><span class='wg-oblabel'>" +
                  esc(i.label) + "</span><span class='wg-obstate'>" + esc(state) + "</span></span>" +
                  (i.state === "refused" ? "<button type='button' data-discard='" + esc(i.seq) + "'>" + esc(T.discard) + "</button>" : "") +
                  "</li>"
                );
              })
              .join("") +
            "</ul>"
          : "");
      desk.setAttribute("data-waiting", String(n));
      desk.setAttribute("data-offline-ready", offlineReady ? "1" : "0");
    }
    box.addEventListener("click", function (e) {
      var seq = e.target.getAttribute && e.target.getAttribute("data-discard");
      if (!seq) return;
      seq = Number(seq);
      store.remove(seq).then(function () {
        items = items.filter(function (i) {
          return i.seq !== seq;
        });
        render();
      });
    });

    /* A case as the tablet shows it: the server's state, then what still waits to be sent. */
    function predicted(c) {
      var state = c.state;
      var pending = [];
      items.forEach(function (i) {
        if (i.kind !== "action" || i.caseId !== c.id || i.state === "refused") return;
        pending.push(T["action." + i.action] || i.action);
        if (state !== null && i.action in AFTER) state = AFTER[i.action];
      });
      return { state: state, pending: pending };
    }
    function buttons(c, state) {
      if (!o.handler || state === null) return "";
      var names = o.actions.filter(function (a) {
        if (a === "sign") return state === "dispatched";
        if (a === "feedback") return state === "signed";
        return state === "dispatched" || state === "signed"; // escalate, return
      });
      return (
        "<div class='wg-mcbtns'>" +
        names
          .map(function (a) {
            return "<button type='button' data-action='" + esc(a) + "'>" + esc(T["action." + a] || a) + "</button>";
          })
          .join("") +
        "</div>"
      );
    }
    function formHtml(c, action) {
      var id = "wg-mc-" + c.id;
      var h = "<div class='wg-mcform' data-form='" + esc(action) + "'>";
      if (action === "feedback") {
        h += "<label for='" + id + "-note'>" + esc(T["field.what_done"]) + "</label><textarea id='" + id + "-note' name='note' maxlength='4000'></textarea>";
        h += "<label for='" + id + "-photos'>" + esc(T["field.photos"]) + "</label><input id='" + id + "-photos' name='photos' type='file' accept='image/*' capture='environment' multiple>";
      } else {
        h += "<label for='" + id + "-reason'>" + esc(T["field.why"]) + "</label><input id='" + id + "-reason' name='reason' type='text' maxlength='1000'>";
        h += "<label for='" + id + "-note'>" + esc(T["field.note"]) + "</label><textarea id='" + id + "-note' name='note' maxlength='4000'></textarea>";
      }
      h += "<div class='wg-formbtns'><button type='button' class='wg-send'>" + esc(T.send) + "</button>";
      h += "<button type='button' class='wg-cancel'>" + esc(T.cancel) + "</button></div>";
      h += "<div class='wg-mcerror' hidden></div></div>";
      return h;
    }
    function caseHtml(c) {
      var p = predicted(c);
      var shown = p.state === null ? c.state : p.state;
      return (
        "<li class='wg-mycase' data-id='" + esc(c.id) + "' data-state='" + esc(shown) + "'>" +
        "<div class='wg-mchead'>" + C.glyph(c, o.glyphs) + "<b>#" + esc(c.id) + " " + esc(o.categories[c.category] || c.category) + "</b>" +
        "<span class='wg-badge wg-st-" + esc(shown) + "'>" + esc(T["state." + shown] || shown) + "</span>" +
        (c.step_due_at ? "<span class='wg-due'>" + esc(C.due(c, T)) + "</span>" : "") + "</div>" +
        (c.description || c.address ? "<div class='wg-mcdesc'>" + esc([c.description, c.address].filter(Boolean).join(" · ")) + "</div>" : "") +
        (p.pending.length ? "<div class='wg-mcpending'>" + esc(t("pending", { what: p.pending.join(", ") })) + "</div>" : "") +
        (problem[c.id] ? "<div class='wg-mcerror'>" + esc(t("refused_case", { detail: problem[c.id] })) + "</div>" : "") +
        (forms[c.id] ? formHtml(c, forms[c.id]) : buttons(c, p.state)) +
        "</li>"
      );
    }
    function renderCases(force) {
      var open = cases.filter(function (c) {
        return MINE.indexOf(c.state) >= 0;
      });
      // A form being filled in stays as it is (a note, chosen photos): the list catches up
      // when it is sent or cancelled.
      if (!force && Object.keys(forms).length) return;
      mine.innerHTML =
        "<h2>" + esc(T.my_cases) + (asOf ? " <small class='wg-note'>" + esc(t("as_of", { time: C.when(asOf, o) })) + "</small>" : "") + "</h2>" +
        (open.length ? "<ul class='wg-mycases'>" + open.map(caseHtml).join("") + "</ul>" : "<p class='wg-note'>" + esc(T.no_cases) + "</p>");
    }
    function render() {
      renderBox();
      renderCases();
    }

    // -- acting on my cases -----------------------------------------------------------------
    mine.addEventListener("click", function (e) {
      var b = e.target.closest ? e.target.closest("button") : null;
      var li = b && b.closest("li[data-id]");
      if (!li) return;
      var id = Number(li.getAttribute("data-id"));
      var c = cases.filter(function (x) {
        return x.id === id;
      })[0];
      if (!c) return;
      var action = b.getAttribute("data-action");
      if (action === "sign") {
        delete problem[id];
        queueAction(c, "sign", {}, []);
      } else if (action) {
        forms[id] = action;
        renderCases(true);
        var first = mine.querySelector("li[data-id='" + id + "'] .wg-mcform textarea, li[data-id='" + id + "'] .wg-mcform input");
        if (first) first.focus();
      } else if (b.classList.contains("wg-cancel")) {
        delete forms[id];
        renderCases(true);
      } else if (b.classList.contains("wg-send")) {
        var form = li.querySelector(".wg-mcform");
        var kind = form.getAttribute("data-form");
        var note = (form.querySelector("[name=note]") || {}).value || "";
        var reason = (form.querySelector("[name=reason]") || {}).value || "";
        var err = form.querySelector(".wg-mcerror");
        var need = kind === "feedback" ? (note.trim() ? null : T["field.what_done"]) : reason.trim() ? null : T["field.why"];
        if (need) {
          err.hidden = false;
          err.textContent = t("required", { field: need });
          return;
        }
        var body = {};
        if (note.trim()) body.note = note.trim();
        if (reason.trim()) body.reason = reason.trim();
        var files = form.querySelector("[name=photos]");
        var list = files && files.files ? Array.prototype.slice.call(files.files, 0, 20) : [];
        b.disabled = true;
        Promise.all(list.map(shrink)).then(function (photos) {
          delete forms[id];
          delete problem[id];
          queueAction(c, kind, body, photos);
        });
      }
    });

    function queueAction(c, action, body, photos) {
      var item = {
        kind: "action",
        caseId: c.id,
        action: action,
        url: o.cases + "/" + c.id + "/actions/" + action,
        attachments: o.cases + "/" + c.id + "/attachments",
        body: body,
        photos: photos,
        key: wg.uuid(),
        label: t("action_label", { action: T["action." + action] || action, id: c.id }),
        created: new Date().toISOString(),
      };
      return enqueue(item);
    }

    function enqueue(item, h) {
      return store.add(item).then(function (seq) {
        item.seq = seq;
        if (h) handlers[seq] = h;
        items.push(item);
        render();
        flush();
        return item;
      });
    }

    /* The page's report form files through the outbox (wg.reportForm calls this). */
    wg.queueReport = function (form, body, key, h) {
      var label = t("report_label", { category: o.categories[body.category] || body.category });
      var item = { kind: "report", url: form.endpoint, body: body, key: key, label: label, created: new Date().toISOString(), tries: 0 };
      enqueue(item, h).catch(
        function () {
          // No IndexedDB (a private window that refuses it): send it straight away.
          h.direct();
        }
      );
    };

    // -- sending ----------------------------------------------------------------------------
    function outcome(res) {
      if (res.ok) return "sent";
      if (res.status === 401) return "session";
      if (res.status === 408 || res.status === 425 || res.status === 429 || res.status >= 500) return "wait";
      return "refused";
    }
    function post(url, opts) {
      opts.method = "POST";
      opts.csrf = o.csrf;
      return C.request(url, opts).then(
        function (res) {
          return { res: res, outcome: outcome(res) };
        },
        function () {
          return { res: null, outcome: "wait" };
        }
      );
    }
    function upload(item, i) {
      var photo = item.photos[i];
      if (i >= item.photos.length) return Promise.resolve(null);
      if (photo.url) return upload(item, i + 1);
      return post(item.attachments, {
        body: new Blob([photo.data], { type: photo.type }),
        headers: { "Content-Type": photo.type, "Idempotency-Key": item.key + "-photo-" + i },
      }).then(function (r) {
        if (r.outcome !== "sent") return r;
        photo.url = r.res.body.url;
        photo.data = null; // stored on the server: the tablet need not keep it
        return store.save(item).then(function () {
          return upload(item, i + 1);
        });
      });
    }
    function sendOne(item) {
      item.tries = (item.tries || 0) + 1;
      if (item.kind === "report") {
        return post(item.url, { json: item.body, headers: { "Idempotency-Key": item.key } });
      }
      return upload(item, 0).then(function (failed) {
        if (failed) return failed;
        var body = Object.assign({}, item.body);
        var urls = (item.photos || []).map(function (p) {
          return p.url;
        });
        if (urls.length) body.attachments = urls;
        return post(item.url, { json: body, headers: { "Idempotency-Key": item.key } });
      });
    }

    function sent(item, res) {
      var h = handlers[item.seq];
      delete handlers[item.seq];
      if (item.kind === "report") {
        if (h) {
          if (!h.released) h.release();
          h.filed(res.body);
        }
        return Promise.resolve();
      }
      var c = res.body;
      cases = cases.filter(function (x) {
        return x.id !== c.id;
      });
      if (c.assignee_kind === "grid" && c.assignee_code === o.grid && MINE.indexOf(c.state) >= 0) {
        cases.push(c);
        cases.sort(function (a, b) {
          return a.id - b.id;
        });
        return store.putCase(o.grid, c);
      }
      return store.dropCase(c.id);
    }
    function refused(item, res) {
      var detail = wg.refusal(res, T, o.locale);
      var h = handlers[item.seq];
      delete handlers[item.seq];
      if (item.kind === "action") problem[item.caseId] = detail;
      if (h) {
        h.refused(res, detail);
        if (item.tries === 1) {
          // Refused at once, in front of the officer: the form said so, nothing lingers.
          return store.remove(item.seq).then(function () {
            items = items.filter(function (i) {
              return i !== item;
            });
          });
        }
      }
      item.state = "refused";
      item.error = detail;
      return store.save(item);
    }

    var flushing = false;
    var timer = null;
    var backoff = 1000;
    function withLock(work) {
      if (navigator.locks && navigator.locks.request) return navigator.locks.request("wangge-outbox", work);
      return work();
    }
    function sendAll() {
      // Another tab may have sent some: the database says what still waits.
      return store.outbox().then(function (stored) {
        var mirror = {};
        items.forEach(function (i) {
          mirror[i.seq] = i;
        });
        items = stored.map(function (s) {
          var m = mirror[s.seq];
          return m ? Object.assign(m, { state: s.state, error: s.error, photos: s.photos }) : s;
        });
        var next = items.filter(function (i) {
          return i.state !== "refused";
        })[0];
        if (!next) return "empty";
        next.state = "sending";
        renderBox();
        return sendOne(next).then(function (r) {
          if (r.outcome === "sent") {
            backoff = 1000;
            return store
              .remove(next.seq)
              .then(function () {
                items = items.filter(function (i) {
                  return i !== next;
                });
                return sent(next, r.res);
              })
              .then(function () {
                render();
                return sendAll();
              });
          }
          if (r.outcome === "refused") {
            return refused(next, r.res).then(function () {
              render();
              return sendAll();
            });
          }
          next.state = "waiting";
          var h = handlers[next.seq];
          if (h && !h.released) {
            h.release();
            if (r.outcome === "session") h.say(T.session, "wg-error");
            else h.say(T.saved, "wg-wait");
          }
          return r.outcome;
        });
      });
    }
    function flush() {
      if (flushing || sessionEnded || dbFailed) return;
      clearTimeout(timer);
      timer = null;
      flushing = true;
      withLock(sendAll)
        .then(
          function (result) {
            return result;
          },
          function () {
            return "wait";
          }
        )
        .then(function (result) {
          flushing = false;
          if (result === "session") sessionEnded = true;
          if (result === "wait") {
            timer = setTimeout(flush, backoff);
            backoff = Math.min(backoff * 2, 30000);
          }
          if (result === "empty") refresh();
          render();
        });
    }

    // -- my cases from the service ----------------------------------------------------------
    var refreshing = null;
    function refresh() {
      if (refreshing || !navigator.onLine) return refreshing;
      var url = o.cases + "?assignee=" + encodeURIComponent(o.grid) + "&state=" + MINE.join(",") + "&limit=" + o.pageSize;
      refreshing = C.request(url)
        .then(function (res) {
          if (res.status === 401) {
            sessionEnded = true;
            return;
          }
          if (!res.ok) return;
          asOf = new Date().toISOString();
          cases = res.body.items.filter(function (c) {
            return c.assignee_kind === "grid" && c.assignee_code === o.grid;
          });
          return store.replaceCases(o.grid, cases, asOf);
        })
        .catch(function () {})
        .then(function () {
          refreshing = null;
          render();
        });
      return refreshing;
    }

    var source = null;
    var soon = null;
    function follow() {
      if (source || !window.EventSource || !navigator.onLine) return;
      source = new EventSource(o.stream);
      source.addEventListener("case", function (e) {
        var ev;
        try {
          ev = JSON.parse(e.data);
        } catch (err) {
          return;
        }
        var ours =
          ev.case.assignee_code === o.grid ||
          cases.some(function (c) {
            return c.id === ev.case_id;
          });
        if (!ours) return;
        clearTimeout(soon);
        soon = setTimeout(refresh, 500);
      });
      source.onerror = function () {
        if (source && source.readyState === 2) {
          source = null;
          setTimeout(follow, 15000);
        }
      };
    }
    function unfollow() {
      if (source) source.close();
      source = null;
    }

    window.addEventListener("online", function () {
      backoff = 1000;
      follow();
      flush();
      refresh();
    });
    window.addEventListener("offline", function () {
      unfollow();
      render();
    });

    // -- offline: the service worker keeps the page -----------------------------------------
    function keepPage() {
      if (!o.sw || !navigator.serviceWorker) return;
      var scope = o.sw.replace(/[^/]*$/, "");
      navigator.serviceWorker
        .register(o.sw, { scope: scope })
        .then(function () {
          return navigator.serviceWorker.ready;
        })
        .then(function (reg) {
          var urls = [location.href];
          document.querySelectorAll("script[src], link[rel=stylesheet][href]").forEach(function (el) {
            urls.push(new URL(el.getAttribute("src") || el.getAttribute("href"), location.href).href);
          });
          // The images the stylesheets name (the layer control's icon), as they resolve.
          Array.prototype.forEach.call(document.styleSheets, function (sheet) {
            var rules;
            try {
              rules = sheet.cssRules;
            } catch (err) {
              return;
            }
            Array.prototype.forEach.call(rules || [], function (rule) {
              var re = /url\(["']?([^"')]+)["']?\)/g;
              var m;
              while ((m = re.exec(rule.cssText))) {
                if (m[1].indexOf("data:") !== 0) urls.push(new URL(m[1], sheet.href || location.href).href);
              }
            });
          });
          var channel = new MessageChannel();
          channel.port1.onmessage = function (e) {
            offlineReady = !!(e.data && e.data.kept);
            renderBox();
          };
          reg.active.postMessage({ type: "keep", urls: urls }, [channel.port2]);
        })
        .catch(function () {});
    }

    // -- start ------------------------------------------------------------------------------
    render();
    Promise.all([store.outbox(), store.cases(o.grid), store.asOf(o.grid)])
      .then(function (r) {
        items = r[0];
        items.forEach(function (i) {
          if (i.state === "sending") i.state = "waiting";
        });
        if (!cases.length) cases = r[1];
        asOf = asOf || r[2] || null;
      })
      .catch(function () {})
      .then(function () {
        render();
        flush();
        refresh();
        follow();
        keepPage();
      });
  };
})();
