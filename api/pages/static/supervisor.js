// The supervisor's page: where cases cluster (folium heatmap and choropleth), who is slow (indicators), what is
// overdue, every case with its audit trail, and the drone surveys with their jobs. Read-only: acting on cases
// stays in the API and the workflow's rules.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const cell = (text, cls) => `<td${cls ? ` class="${cls}"` : ""}>${GM.escape(text)}</td>`;
  const rate = (v) => (v === null || v === undefined ? "—" : `${Math.round(v * 100)}%`);
  const hours = (v) => (v === null || v === undefined ? "—" : v.toFixed(1));
  let categories = {};
  let labels = { states: {}, actions: {} }; // the workflow's Chinese labels, from /pages/config.json

  $("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    try {
      await GM.login(form.username.value.trim(), form.password.value);
      await start();
    } catch (error) {
      $("login-error").textContent = error instanceof GM.ApiError ? `登录失败：${error.message}` : "无法连接服务器";
    }
  });
  $("logout").addEventListener("click", async () => { await GM.logout(); location.reload(); });
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
  $("indicator-by").addEventListener("change", () => guard(loadIndicators()));

  async function start() {
    const me = await GM.account();
    if (!me || !["supervisor", "admin"].includes(me.role)) {
      if (me) $("login-error").textContent = "此页面供监督员使用；网格员请用手机页面 /m/";
      $("login").hidden = false;
      $("app").hidden = true;
      return;
    }
    $("login").hidden = true;
    $("app").hidden = false;
    $("who").textContent = me.display_name || me.username;
    const [config, services] = await Promise.all([GM.json("/pages/config.json"), GM.json("/open311/v2/services.json")]);
    $("street").textContent = config.street;
    labels = config.labels;
    categories = Object.fromEntries(services.map((s) => [s.service_code, s.service_name]));
    document.querySelector("#filters select[name=category]").append(...services.map((s) => new Option(s.service_name, s.service_code)));
    await refresh();
    window.gridmapReady = true;
  }

  function filterQuery() {
    const form = $("filters");
    const end = new Date();
    const start = new Date(end.getTime() - Number(form.days.value) * 86400000);
    const query = new URLSearchParams({ start: start.toISOString(), end: end.toISOString() });
    if (form.category.value) query.set("category", form.category.value);
    if (form.source.value) query.set("source", form.source.value);
    return query;
  }

  async function guard(promise) {
    try { await promise; } catch (error) { $("error").textContent = `读取失败：${error.message}`; }
  }

  function refresh() {
    $("error").textContent = "";
    return Promise.all([loadHeatmap(), loadOverdue(), loadIndicators(), loadCases(), loadSurveys()].map(guard));
  }

  // The folium page comes with our token, so it is fetched here and shown in a sandboxed frame.
  async function loadHeatmap() {
    $("heatmap").srcdoc = await (await GM.api(`/heatmaps/map.html?${filterQuery()}`)).text();
  }

  async function loadOverdue() {
    const reply = await GM.json("/cases?overdue=true&limit=200");
    $("overdue-count").textContent = `${reply.total} 件`;
    $("overdue").tBodies[0].innerHTML = reply.cases.map((c) => `<tr class="bad">${cell(`#${c.id}`)}${cell(categories[c.category] || c.category)}`
      + `${cell(c.grid)}${cell(c.assignee)}${cell(GM.when(c.deadline_at))}${cell(c.escalation_level ? `${c.escalation_level} 级` : "—")}</tr>`).join("");
  }

  async function loadIndicators() {
    const by = $("indicator-by").value;
    const query = filterQuery();
    const reply = await GM.json(`/indicators?by=${by}&start=${encodeURIComponent(query.get("start"))}&end=${encodeURIComponent(query.get("end"))}`);
    $("indicators").tBodies[0].innerHTML = reply.groups.map((g) => {
      const bad = g.on_time_rate !== null && g.on_time_rate < 0.8;
      return `<tr${bad ? ' class="bad"' : ""}>${cell(by === "category" ? categories[g.key] || g.key : g.key)}${cell(g.cases, "num")}`
        + `${cell(rate(g.closure_rate), "num")}${cell(rate(g.on_time_rate), "num")}${cell(hours(g.median_hours_to_dispatch), "num")}`
        + `${cell(hours(g.median_hours_to_verify), "num")}${cell(g.repeat_cases, "num")}</tr>`;
    }).join("");
  }

  async function loadCases() {
    const form = $("filters");
    const query = new URLSearchParams({ limit: "200" });
    if (form.category.value) query.set("category", form.category.value);
    const reply = await GM.json(`/cases?${query}`);
    $("case-count").textContent = `共 ${reply.total} 件，显示 ${reply.cases.length} 件`;
    const body = $("cases").tBodies[0];
    body.innerHTML = reply.cases.map((c) => `<tr data-case-id="${c.id}">${cell(`#${c.id}`)}${cell(labels.states[c.state])}`
      + `${cell(categories[c.category] || c.category)}${cell(GM.SOURCES[c.source] || c.source)}${cell(c.grid)}${cell(c.assignee)}${cell(GM.when(c.reported_at))}</tr>`).join("");
    body.querySelectorAll("tr").forEach((row) => row.addEventListener("click", () => guard(showCase(row))));
  }

  async function showCase(row) {
    document.querySelectorAll("#cases tr.selected").forEach((r) => r.classList.remove("selected"));
    row.classList.add("selected");
    const c = await GM.json(`/cases/${row.dataset.caseId}`);
    $("case-detail").hidden = false;
    $("detail-title").textContent = `案件 #${c.id} · ${c.state_label}`;
    $("detail-meta").textContent = `${categories[c.category] || c.category} · 网格 ${c.grid || "—"} · 处置人 ${c.assignee || "—"} · 期限 ${GM.when(c.deadline_at)}`;
    $("detail-description").textContent = c.description || "";
    $("audit-intact").textContent = c.audit_intact ? "（完整，未被改动）" : "（校验失败：记录被改动！）";
    $("audit").innerHTML = c.events.map((e) => `<li><strong>${GM.escape(labels.actions[e.action] || e.action)}</strong> `
      + `${GM.escape(labels.states[e.from_state] || "")} → ${GM.escape(labels.states[e.to_state] || "")}`
      + `${e.assignee ? ` · 派给 ${GM.escape(e.assignee)}` : ""}${e.note ? `<br>${GM.escape(e.note)}` : ""}`
      + `<br><span class="who">${GM.escape(e.actor)}（${GM.escape(e.role)}） ${GM.when(e.at)}${e.photos.length ? ` · 照片 ${e.photos.length}` : ""}</span></li>`).join("");
  }

  async function loadSurveys() {
    const [surveys, jobs] = await Promise.all([GM.json("/surveys"), GM.json("/jobs")]);
    const items = surveys.features || [];
    drawSwipe(items);
    $("surveys").tBodies[0].innerHTML = items.map((s) => {
      const gsd = s.properties.gsd || (s.properties["proj:transform"] || [])[0];
      return `<tr>${cell(s.id.slice(0, 12))}${cell(GM.when(s.properties.datetime))}${cell(gsd ? `${Number(gsd).toFixed(2)} 米` : "—")}`
        + `${cell((s.bbox || []).map((v) => v.toFixed(4)).join(", "))}</tr>`;
    }).join("") || `<tr><td colspan="4">暂无航拍</td></tr>`;
    $("jobs").tBodies[0].innerHTML = (jobs.jobs || jobs).map((j) => `<tr${j.state === "failed" ? ' class="bad"' : ""}>${cell(`#${j.id}`)}`
      + `${cell(j.batch_id)}${cell(j.state)}${cell(progress(j.progress))}${cell(j.attempts, "num")}${cell(GM.when(j.updated_at))}`
      + `${cell(j.error || summary(j.result))}</tr>`).join("") || `<tr><td colspan="7">暂无任务</td></tr>`;
  }

  // Before/after swipe of two surveys: each in its own pane, each pane clipped at the slider (in layer
  // coordinates, which move as the map pans).
  const swipe = { map: null, layers: [] };

  function drawSwipe(items) {
    $("swipe-panel").hidden = items.length < 2;
    if (items.length < 2) return;
    const label = (s) => `${GM.when(s.properties.datetime)} · ${s.id.slice(0, 8)}`;
    for (const [id, index] of [["swipe-before", 1], ["swipe-after", 0]]) {
      $(id).replaceChildren(...items.map((s) => new Option(label(s), s.id)));
      $(id).selectedIndex = index;
    }
    if (!swipe.map) {
      swipe.map = L.map("swipe-map", { attributionControl: false });
      for (const pane of ["before", "after"]) swipe.map.createPane(pane).style.zIndex = 300;
      swipe.map.on("move zoom resize", clip);
      $("swipe").addEventListener("input", clip);
      $("swipe-before").addEventListener("change", () => guard(showPair(items)));
      $("swipe-after").addEventListener("change", () => guard(showPair(items)));
    }
    return showPair(items);
  }

  async function showPair(items) {
    swipe.layers.forEach((layer) => layer.remove());
    const chosen = [$("swipe-before").value, $("swipe-after").value];
    const specs = await Promise.all(chosen.map((id) => GM.json(`/surveys/${id}/tilejson.json`)));
    swipe.layers = specs.map((spec, i) => new GM.AuthTileLayer(`/surveys/${chosen[i]}/tiles/{z}/{x}/{y}.png`, {
      pane: ["before", "after"][i], maxZoom: 22, maxNativeZoom: spec.maxzoom, minZoom: spec.minzoom,
      bounds: [[spec.bounds[1], spec.bounds[0]], [spec.bounds[3], spec.bounds[2]]],
    }).addTo(swipe.map));
    const [w, s, e, n] = specs[1].bounds;
    swipe.map.invalidateSize();
    swipe.map.fitBounds([[s, w], [n, e]]);
    clip();
  }

  function clip() {
    const map = swipe.map;
    const nw = map.containerPointToLayerPoint([0, 0]);
    const se = map.containerPointToLayerPoint(map.getSize());
    const x = nw.x + (map.getSize().x * Number($("swipe").value)) / 1000;
    map.getPane("before").style.clip = `rect(${nw.y}px, ${x}px, ${se.y}px, ${nw.x}px)`;
    map.getPane("after").style.clip = `rect(${nw.y}px, ${se.x}px, ${se.y}px, ${x}px)`;
  }

  const progress = (p) => (p && p.stage ? `${p.stage}${p.done !== undefined ? ` ${p.done}/${p.total}` : ""}` : "—");
  const summary = (r) => (r && r.pairs ? `航拍 ${(r.surveys || []).length}，比对 ${r.pairs.length}，新案件 ${r.pairs.reduce((n, p) => n + (p.cases || 0), 0)}` : "");

  start().catch((error) => { $("error").textContent = `启动失败：${error.message}`; });
})();
