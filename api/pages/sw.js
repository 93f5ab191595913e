// The phone page's service worker: the page opens with no network, and what it last read is still shown.
// The shell (page, scripts, styles) is served from a cache named after a hash of those files, so a release
// replaces it; reads of the API go to the network first and fall back on their last answer. Writes are never
// touched here: the page's outbox (IndexedDB) owns them, so nothing is sent twice from two places.
"use strict";

const VERSION = "__VERSION__";
const SHELL = __SHELL__;
const SHELL_CACHE = `gridmap-shell-${VERSION}`;
const DATA_CACHE = "gridmap-data";
const READS = ["/me", "/cases", "/ogc/", "/open311/v2/services.json", "/pages/config.json"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL_CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((names) => Promise.all(names.filter((n) => n.startsWith("gridmap-shell-") && n !== SHELL_CACHE).map((n) => caches.delete(n))))
    .then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) return;
  if (SHELL.includes(url.pathname) || url.pathname.startsWith("/vendor/leaflet/images/")) {
    event.respondWith(caches.match(request, { ignoreSearch: true }).then((hit) => hit || fetch(request)));
  } else if (READS.some((prefix) => url.pathname.startsWith(prefix))) {
    event.respondWith(networkFirst(request));
  }
});

async function networkFirst(request) {
  const cache = await caches.open(DATA_CACHE);
  try {
    const reply = await fetch(request);
    if (reply.ok) cache.put(request, reply.clone());
    return reply;
  } catch (error) {
    const hit = await cache.match(request);
    if (hit) return hit;
    throw error;
  }
}
