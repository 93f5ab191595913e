// The grid worker's phone map: their grids, their open cases nearest first, where they stand, and reports and
// verifications that survive a dead signal. Everything written is put in an outbox (IndexedDB) first and sent
// from there; a report carries a client_id made here, so the server stores it once however often it is sent.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const outbox = idbKeyval.createStore("gridmap-outbox", "items");
  const OPEN_STATES = ["dispatched", "handled"];
  const CASE_COLOURS = { dispatched: "#d35400", handled: "#2874a6" };
  const reads = new Set(["/me"]); // every GET the page needs to open offline
  const read = (path) => { reads.add(path); return GM.json(path); };
  const state = { me: null, labels: null, map: null, show: null, fix: null, fixMarker: null, centred: false, cases: [], caseLayer: null, open: null };

  // ------------------------------------------------------------------------------------------------ start

  window.addEventListener("online", () => { network(); flush(); });
  window.addEventListener("offline", network);
  document.querySelectorAll("[data-close]").forEach((b) => b.addEventListener("click", () => b.closest("dialog").close()));

  $("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    $("login-error").textContent = "";
    try {
      await GM.login(form.username.value.trim(), form.password.value);
      form.reset();
      await start();
    } catch (error) {
      $("login-error").textContent = error instanceof GM.ApiError ? `登录失败：${error.message}` : "无法连接服务器";
    }
  });

  $("logout").addEventListener("click", async () => {
    await GM.logout();
    location.reload();
  });

  async function start() {
    const configured = read("/pages/config.json"); // needs no token: asked for alongside the account
    const me = await GM.account();
    if (!me) {
      $("app").hidden = true;
      $("login").hidden = false;
      return;
    }
    state.me = me;
    $("login").hidden = true;
    $("app").hidden = false;
    $("who").textContent = `${me.display_name || me.username}`;
    network();
    const config = await configured;
    state.labels = config.labels;
    initMap(config);
    const categories = loadCategories(); // only the report form needs them: not waited for
    await Promise.all([drawGrids(), loadCases()]);
    watchPosition();
    await countOutbox();
    flush();
    setInterval(flush, 30000);
    // The service worker fetches the shell again to keep it: after the first paint, not competing with it.
    if ("serviceWorker" in navigator) {
      // Reads made before the worker took over went past it: read them again through it, so the page has them offline.
      navigator.serviceWorker.addEventListener("controllerchange", () => reads.forEach((path) => GM.api(path).catch(() => {})));
      navigator.serviceWorker.register("/m/sw.js", { scope: "/m/" }).catch(() => {});
    }
    await categories;
    addLatestSurvey(config).catch(() => {}); // a basemap to inspect on, when a drone survey covers the street
    window.gridmapReadyAt = performance.now(); // the browser tests and the page benchmark wait for these
    window.gridmapReady = true;
  }

  // -------------------------------------------------------------------------------------------------- map

  function initMap(config) {
    state.show = GM.displayer(config.basemap.datum);
    const map = L.map("map", { zoomControl: false, attributionControl: config.basemap.layers.length > 0 });
    GM.addBasemap(map, config.basemap);
    const [minx, miny, maxx, maxy] = config.bounds;
    map.fitBounds([state.show(minx, miny).reverse(), state.show(maxx, maxy).reverse()]);
    state.map = map;
    state.caseLayer = L.layerGroup().addTo(map);
  }

  async function addLatestSurvey(config) {
    const [survey] = (await GM.json(`/surveys?bbox=${config.bounds.join(",")}`)).features || [];
    if (!survey || config.basemap.datum !== "wgs84") return; // survey tiles are WGS84-true: not over GCJ-02 tiles
    const spec = await GM.json(`/surveys/${survey.id}/tilejson.json`);
    const imagery = new GM.AuthTileLayer(`/surveys/${survey.id}/tiles/{z}/{x}/{y}.png`, {
      maxZoom: 21, maxNativeZoom: spec.maxzoom, minZoom: spec.minzoom, zIndex: 1,
      bounds: [[spec.bounds[1], spec.bounds[0]], [spec.bounds[3], spec.bounds[2]]],
    });
    const day = (survey.properties.datetime || "").slice(0, 10);
    L.control.layers(null, { [`最新航拍 ${day}`]: imagery }, { position: "topright" }).addTo(state.map);
  }

  // A grid worker's scope is their grids, fetched one by one (a few KB); a supervisor's is communities or the
  // street, whose grids are picked from the whole layer.
  async function drawGrids() {
    const scope = state.me.scope || [];
    let mine;
    if (state.me.role === "grid_worker") {
      mine = await Promise.all(scope.map((code) => read(`/ogc/collections/grids/items/${encodeURIComponent(code)}`)));
    } else {
      const collection = await read("/ogc/collections/grids/items?limit=10000");
      mine = collection.features.filter((f) => state.me.role === "admin" || scope.some((code) => String(f.id).startsWith(code)));
    }
    if (!mine.length) return;
    const layer = L.geoJSON(GM.moveGeoJSON({ type: "FeatureCollection", features: mine }, state.show), {
      style: { color: "#b03a2e", weight: 2, fillOpacity: 0.06 },
      onEachFeature: (f, l) => l.bindTooltip(`${f.properties.name || f.id}`, { permanent: mine.length <= 4, className: "grid-label", direction: "center" }),
    }).addTo(state.map);
    state.map.fitBounds(layer.getBounds(), { padding: [12, 12] });
  }

  // ------------------------------------------------------------------------------------------------ cases

  async function loadCases() {
    const query = OPEN_STATES.map((s) => `state=${s}`).join("&");
    const reply = await read(`/cases?mine=true&limit=500&${query}`);
    state.cases = reply.cases;
    drawCases();
  }

  function drawCases() {
    const here = state.fix;
    const cases = state.cases.map((c) => ({ ...c, far: here ? GM.distance(here.lon, here.lat, c.lon, c.lat) : null }));
    if (here) cases.sort((a, b) => a.far - b.far);
    $("case-count").textContent = `${cases.length} 件`;
    const now = Date.now();
    $("cases").replaceChildren(...cases.map((c) => {
      const li = document.createElement("li");
      li.dataset.caseId = c.id;
      if (c.deadline_at && new Date(c.deadline_at).getTime() < now) li.classList.add("overdue");
      li.innerHTML = `<span class="what">#${c.id} ${GM.escape(c.description || c.category).slice(0, 40)}</span>`
        + `<span class="far">${c.far === null ? "" : GM.metres(c.far)}</span>`
        + `<span class="meta">${state.labels.states[c.state]} · 期限 ${GM.when(c.deadline_at)}</span>`;
      li.addEventListener("click", () => openCase(c.id));
      return li;
    }));
    state.caseLayer.clearLayers();
    cases.forEach((c) => L.circleMarker(state.show(c.lon, c.lat).reverse(), {
      radius: 8, color: "#fff", weight: 2, fillColor: CASE_COLOURS[c.state] || "#7f8c8d", fillOpacity: 0.95,
    }).on("click", () => openCase(c.id)).addTo(state.caseLayer));
  }

  async function openCase(id) {
    const dialog = $("case-dialog");
    $("case-error").textContent = "";
    let detail;
    try {
      detail = await GM.json(`/cases/${id}`);
    } catch (error) {
      toast(error instanceof GM.ApiError ? error.message : "离线：无法读取案件详情");
      return;
    }
    state.open = detail;
    $("case-title").textContent = `案件 #${detail.id} · ${detail.state_label}`;
    $("case-meta").textContent = `上报 ${GM.when(detail.reported_at)} · 期限 ${GM.when(detail.deadline_at)} · 网格 ${detail.grid || "—"}`;
    $("case-description").textContent = detail.description || "";
    const chips = detail.attributes && detail.attributes.chip_before;
    $("chips").hidden = !chips;
    if (chips) {
      showChip($("chip-before"), `/cases/${id}/chips/before`);
      showChip($("chip-after"), `/cases/${id}/chips/after`);
    }
    const actions = OFFERED.filter((a) => detail.allowed_actions.includes(a));
    const select = dialog.querySelector("select[name=action]");
    select.replaceChildren(...actions.map((a) => new Option(state.labels.actions[a], a)));
    $("case-action").hidden = $("case-submit").hidden = actions.length === 0;
    dialog.showModal();
  }

  const OFFERED = ["handle", "verify", "return"]; // what a worker does on the spot, in the order offered

  async function showChip(img, path) {
    try {
      img.src = URL.createObjectURL(await (await GM.api(path)).blob());
    } catch (_) {
      img.removeAttribute("src");
    }
  }

  $("case-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const action = form.action.value;
    const photo = form.photo.files[0] || null;
    if (action === "verify" && !photo) { $("case-error").textContent = "核查需要现场照片"; return; }
    if (action !== "verify" && !form.note.value.trim()) { $("case-error").textContent = "请填写说明"; return; }
    await enqueue({ kind: "action", case_id: state.open.id, action, note: form.note.value.trim(), version: state.open.version, photo });
    form.reset();
    $("case-dialog").close();
  });

  // ------------------------------------------------------------------------------------------- reporting

  async function loadCategories() {
    const services = await read("/open311/v2/services.json");
    const select = document.querySelector("#report-form select[name=category]");
    const events = services.filter((s) => s.keywords === "event");
    select.replaceChildren(...[...events, ...services.filter((s) => s.keywords !== "event")].map(
      (s) => new Option(`${s.service_name}（${s.group}）`, s.service_code)));
  }

  $("report-open").addEventListener("click", () => {
    $("report-error").textContent = "";
    $("report-fix").textContent = state.fix ? `位置：精度 ±${Math.round(state.fix.accuracy)} 米` : "尚未定位";
    $("report-dialog").showModal();
  });

  $("report-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    if (!state.fix) { $("report-error").textContent = "尚未定位，请到室外稍候再试"; return; }
    const report = {
      client_id: crypto.randomUUID(), category: form.category.value, lon: state.fix.lon, lat: state.fix.lat,
      datum: "wgs84", accuracy_m: Math.round(state.fix.accuracy * 10) / 10, observed_at: new Date().toISOString(),
      note: form.note.value.trim(),
    };
    await enqueue({ kind: "report", report, photo: form.photo.files[0] });
    form.reset();
    $("report-dialog").close();
  });

  // --------------------------------------------------------------------------------------------- outbox

  async function enqueue(item) {
    const key = item.report ? item.report.client_id : crypto.randomUUID();
    await idbKeyval.set(key, { ...item, key, queued_at: new Date().toISOString() }, outbox);
    await countOutbox();
    toast(navigator.onLine ? "已保存，正在发送…" : "已保存在手机上，联网后自动发送");
    flush();
  }

  async function countOutbox() {
    const n = (await idbKeyval.keys(outbox)).length;
    $("outbox").hidden = n === 0;
    $("outbox").textContent = `待发送 ${n}`;
    return n;
  }

  // Send what is queued, oldest first, one sender at a time (a Web Lock: two tabs never send the same item).
  // An item leaves the outbox when the server has it, or refused it for good (a 4xx other than 401/408/429,
  // whose reason is shown); a network failure leaves it for the next try.
  function flush() {
    return navigator.locks.request("gridmap-outbox", { ifAvailable: true }, async (lock) => {
      if (!lock || !GM.token()) return;
      const items = (await idbKeyval.values(outbox)).sort((a, b) => a.queued_at.localeCompare(b.queued_at));
      let sent = 0;
      for (const item of items) {
        try {
          await send(item);
          sent += 1;
        } catch (error) {
          if (!(error instanceof GM.ApiError) || [401, 408, 429].includes(error.status) || error.status >= 500) {
            console.warn("outbox: will retry", item.key, error.message);
            break;
          }
          toast(`未被接受：${error.message}`, 8000);
        }
        await idbKeyval.del(item.key, outbox);
      }
      await countOutbox();
      if (sent) {
        toast(`已发送 ${sent} 条`);
        await loadCases().catch(() => {});
      }
    });
  }

  async function send(item) {
    if (item.kind === "report") {
      const body = new FormData();
      body.append("report", JSON.stringify(item.report));
      if (item.photo) body.append("photos", item.photo, item.photo.name || "photo.jpg");
      await GM.api("/reports", { method: "POST", body });
      return;
    }
    const photos = [];
    if (item.photo) {
      const body = new FormData();
      body.append("photo", item.photo, item.photo.name || "photo.jpg");
      photos.push((await GM.json("/photos", { method: "POST", body })).sha256);
    }
    await GM.api(`/cases/${item.case_id}/actions`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ action: item.action, note: item.note || null, photos, version: item.version }),
    });
  }

  // ------------------------------------------------------------------------------------------- position

  function watchPosition() {
    if (!navigator.geolocation) { $("fix").textContent = "此设备不能定位"; return; }
    navigator.geolocation.watchPosition((position) => {
      const { longitude: lon, latitude: lat, accuracy } = position.coords;
      state.fix = { lon, lat, accuracy };
      $("fix").textContent = `定位 ±${Math.round(accuracy)} 米`;
      const at = state.show(lon, lat).reverse();
      if (!state.fixMarker) {
        state.fixMarker = L.layerGroup([
          L.circle(at, { radius: accuracy, color: "#1a73e8", weight: 1, fillOpacity: 0.12 }),
          L.circleMarker(at, { radius: 7, color: "#fff", weight: 2, fillColor: "#1a73e8", fillOpacity: 1 }),
        ]).addTo(state.map);
      } else {
        state.fixMarker.eachLayer((l) => { l.setLatLng(at); if (l.setRadius && l instanceof L.Circle) l.setRadius(accuracy); });
      }
      if (!state.centred) {
        state.centred = true; // the first fix: show where the worker stands, close enough to find the way
        state.map.setView(at, Math.max(state.map.getZoom(), 17));
      }
      drawCases();
    }, (error) => { $("fix").textContent = error.code === 1 ? "未允许定位" : "定位失败"; },
    { enableHighAccuracy: true, maximumAge: 10000, timeout: 30000 });
  }

  // ------------------------------------------------------------------------------------------------ misc

  function network() {
    const online = navigator.onLine;
    $("net").textContent = online ? "在线" : "离线";
    $("net").classList.toggle("offline", !online);
  }

  let toastTimer = null;
  function toast(text, ms = 3000) {
    const el = $("toast");
    el.textContent = text;
    el.classList.add("show");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => el.classList.remove("show"), ms);
  }

  start().catch((error) => toast(`启动失败：${error.message}`, 10000));
})();
