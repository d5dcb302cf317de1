/* wangge service worker: keeps the tablet page and the pages' scripts for offline work.
 *
 * Served at <root>/pages/sw.js, so its scope is <root>/pages/. It answers two kinds of GET:
 * - the pages' files (<root>/static/maps/…?v=<hash>): from its cache first (a versioned URL
 *   never changes), else from the network, kept; unversioned ones (the images a stylesheet
 *   names) from the network, the cache when it fails;
 * - opening the tablet page (<root>/pages/tablet…): from the network, kept; from the cache
 *   when the network fails or is slower than WAIT_MS (a stairwell, a village), while the
 *   network's answer still refreshes the cache.
 * Everything else (the API, writes, other pages) goes to the network untouched: the page
 * itself queues its writes (tablet.js). The page asks the worker to keep its own address
 * and files ({type: "keep", urls}), since the first visit arrives before the worker.
 */
"use strict";

var CACHE = "wangge-pages-v1";
var ROOT = self.location.pathname.replace(/\/pages\/sw\.js$/, "");
var STATIC = ROOT + "/static/maps/";
var TABLET = ROOT + "/pages/tablet";
var WAIT_MS = 4000;
var MATCH = { ignoreVary: true };

self.addEventListener("install", function () {
  self.skipWaiting();
});

self.addEventListener("activate", function (event) {
  event.waitUntil(self.clients.claim());
});

function keepable(url) {
  var u = new URL(url, self.location.href);
  return (
    u.origin === self.location.origin &&
    !u.searchParams.has("access_token") &&
    (u.pathname === TABLET || u.pathname.indexOf(STATIC) === 0)
  );
}

function store(cache, key, response) {
  if (!response || !response.ok || response.type !== "basic" || response.redirected) return null;
  return cache.put(key, response);
}

self.addEventListener("message", function (event) {
  var data = event.data || {};
  if (data.type !== "keep" || !Array.isArray(data.urls)) return;
  var urls = data.urls.filter(keepable);
  var port = event.ports && event.ports[0];
  event.waitUntil(
    caches
      .open(CACHE)
      .then(function (cache) {
        var kept = urls.map(function (url) {
          return fetch(url, { credentials: "same-origin", cache: "no-store" })
            .then(function (r) {
              return store(cache, url, r);
            })
            .then(
              function () {
                return true;
              },
              function () {
                return false;
              }
            );
        });
        return Promise.all(kept).then(function (ok) {
          // Files of older versions go: the page names every file it uses now.
          return cache.keys().then(function (requests) {
            var dropped = requests
              .filter(function (r) {
                var p = new URL(r.url).pathname;
                return p.indexOf(STATIC) === 0 && urls.indexOf(r.url) < 0;
              })
              .map(function (r) {
                return cache.delete(r);
              });
            return Promise.all(dropped).then(function () {
              return ok.every(Boolean);
            });
          });
        });
      })
      .then(
        function (all) {
          if (port) port.postMessage({ kept: all });
        },
        function () {
          if (port) port.postMessage({ kept: false });
        }
      )
  );
});

/* A versioned file never changes: the cache first. Others (the images a stylesheet names):
 * the network first, the cache when it fails. */
function staticFile(request) {
  return caches.open(CACHE).then(function (cache) {
    return cache.match(request, MATCH).then(function (hit) {
      var versioned = new URL(request.url).searchParams.has("v");
      if (hit && versioned) return hit;
      return fetch(request).then(
        function (r) {
          store(cache, request, r.clone());
          return r;
        },
        function (error) {
          if (hit) return hit;
          throw error;
        }
      );
    });
  });
}

function networkFirst(request) {
  return caches.open(CACHE).then(function (cache) {
    var network = fetch(request).then(function (r) {
      store(cache, request.url, r.clone());
      return r;
    });
    var late = new Promise(function (resolve) {
      setTimeout(resolve, WAIT_MS, null);
    });
    return Promise.race([
      network.catch(function () {
        return null;
      }),
      late,
    ]).then(function (answer) {
      if (answer) return answer;
      return cache.match(request.url, MATCH).then(function (hit) {
        return hit || network;
      });
    });
  });
}

self.addEventListener("fetch", function (event) {
  var request = event.request;
  if (request.method !== "GET") return;
  var url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (url.pathname.indexOf(STATIC) === 0) {
    event.respondWith(staticFile(request));
  } else if (request.mode === "navigate" && url.pathname === TABLET && !url.searchParams.has("access_token")) {
    event.respondWith(networkFirst(request));
  }
});
