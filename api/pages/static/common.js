// What both pages share: the token, API calls with readable errors, the basemap and its datum, distances.
"use strict";

const GM = (() => {
  const TOKEN = "gridmap.token";
  const ACCOUNT = "gridmap.account";

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  const token = () => localStorage.getItem(TOKEN);

  // fetch() with the bearer token; a non-2xx reply becomes an ApiError carrying the server's one-line detail,
  // a network failure stays a TypeError (the outbox tells the two apart: retry only the latter).
  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (token()) headers.set("Authorization", `Bearer ${token()}`);
    const reply = await fetch(path, { ...options, headers });
    if (!reply.ok) {
      let detail = reply.statusText;
      try { detail = (await reply.json()).detail || detail; } catch (_) { /* not JSON */ }
      if (reply.status === 401) forget();
      throw new ApiError(reply.status, detail);
    }
    return reply;
  }
  const json = async (path, options) => (await api(path, options)).json();

  async function login(username, password) {
    const body = await json("/auth/token", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ username, password }),
    });
    localStorage.setItem(TOKEN, body.access_token);
    const me = await json("/me");
    localStorage.setItem(ACCOUNT, JSON.stringify(me));
    return me;
  }

  // Who is logged in: from the server when it answers, else what it said last time (the phone may be offline).
  async function account() {
    if (!token()) return null;
    try {
      const me = await json("/me");
      localStorage.setItem(ACCOUNT, JSON.stringify(me));
      return me;
    } catch (error) {
      if (error instanceof ApiError) return null;
      return JSON.parse(localStorage.getItem(ACCOUNT) || "null");
    }
  }

  function forget() {
    localStorage.removeItem(TOKEN);
    localStorage.removeItem(ACCOUNT);
    if (window.caches) caches.delete("gridmap-data"); // the last account's cases stay off a shared phone
  }

  async function logout() {
    try { await api("/auth/logout", { method: "POST" }); } catch (_) { /* offline: the token expires anyway */ }
    forget();
  }

  // Our layers are WGS84; a GCJ-02 basemap (Amap) needs them moved at display time, positions sent stay WGS84.
  function displayer(datum) {
    if (datum !== "gcj02") return (lon, lat) => [lon, lat];
    return (lon, lat) => gcoord.transform([lon, lat], gcoord.WGS84, gcoord.GCJ02);
  }

  function moveGeoJSON(geojson, show) {
    const walk = (c) => (typeof c[0] === "number" ? show(c[0], c[1]) : c.map(walk));
    const geometry = (g) => (g.type === "GeometryCollection"
      ? { ...g, geometries: g.geometries.map(geometry) } : { ...g, coordinates: walk(g.coordinates) });
    if (geojson.type === "FeatureCollection") return { ...geojson, features: geojson.features.map((f) => moveGeoJSON(f, show)) };
    if (geojson.type === "Feature") return { ...geojson, geometry: geojson.geometry && geometry(geojson.geometry) };
    return geometry(geojson);
  }

  function addBasemap(map, basemap) {
    basemap.layers.forEach((layer) => L.tileLayer(layer.url, {
      attribution: layer.attribution, subdomains: layer.subdomains || "abc", maxZoom: 20, maxNativeZoom: layer.maxZoom,
    }).addTo(map));
    map.getContainer().classList.toggle("no-basemap", basemap.layers.length === 0);
  }

  // Tiles that need our token (survey imagery): fetched with it and shown from a blob, so no token goes into
  // a URL (and so into logs and caches). 204 (no imagery here) becomes an empty tile.
  const BLANK = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7";
  const AuthTileLayer = window.L ? L.TileLayer.extend({
    createTile(coords, done) {
      const img = document.createElement("img");
      img.alt = "";
      api(this.getTileUrl(coords))
        .then((reply) => (reply.status === 204 ? null : reply.blob()))
        .then((blob) => {
          if (blob) {
            img.onload = () => { URL.revokeObjectURL(img.src); done(null, img); };
            img.src = URL.createObjectURL(blob);
          } else {
            img.src = BLANK;
            done(null, img);
          }
        })
        .catch((error) => done(error, img));
      return img;
    },
  }) : null;

  // Great-circle distance in metres (haversine; ample for "which case is nearest" within a street).
  function distance(lon1, lat1, lon2, lat2) {
    const rad = Math.PI / 180;
    const a = Math.sin(((lat2 - lat1) * rad) / 2) ** 2
      + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(((lon2 - lon1) * rad) / 2) ** 2;
    return 2 * 6371008.8 * Math.asin(Math.sqrt(a));
  }

  const metres = (m) => (m < 1000 ? `${Math.round(m)} 米` : `${(m / 1000).toFixed(1)} 公里`);
  const when = (iso) => (iso ? new Date(iso).toLocaleString("zh-CN", { hour12: false }) : "—");
  const escape = (text) => String(text ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

  const SOURCES = { report: "网格员上报", pipeline: "无人机巡查", hotline: "12345 热线", supervisor: "监督员" };

  return { ApiError, api, json, login, logout, account, token, displayer, moveGeoJSON, addBasemap, distance,
    metres, when, escape, SOURCES, AuthTileLayer };
})();
