// camstream's page: pictures go to :explain, videos and signals become jobs whose
// progress and thumbnails arrive as Server-Sent Events.
"use strict";
const $ = (s) => document.querySelector(s);
let token = localStorage.getItem("camstreamToken") || "";
const models = {};

async function api(path, opts = {}) {
  opts.headers = Object.assign({}, opts.headers, token ? { Authorization: "Bearer " + token } : {});
  let r = await fetch(path, opts);
  if (r.status === 401) {
    token = prompt("This camstream service needs its token:") || "";
    localStorage.setItem("camstreamToken", token);
    opts.headers.Authorization = "Bearer " + token;
    r = await fetch(path, opts);
  }
  return r;
}

async function json(r) {
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function withToken(url) {
  return token ? url + (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token) : url;
}

function status(text, state = "busy") {
  const s = $("#status");
  s.textContent = text;
  s.dataset.state = state;
}

function option(sel, value, text, selected) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  o.selected = !!selected;
  sel.appendChild(o);
}

async function init() {
  try {
    const list = await json(await api("/v1/models"));
    for (const name of list.models) {
      models[name] = await json(await api("/v1/models/" + encodeURIComponent(name)));
      option($("#model"), name, name);
    }
    showModel();
  } catch (e) {
    status("Cannot reach the service: " + e.message, "error");
  }
}

function showModel() {
  const m = models[$("#model").value];
  if (!m) return;
  $("#model-info").textContent =
    `${m.kind} model, input ${m.input_shape.join("×")}, ${m.classes} classes`;
  const layer = $("#layer"), method = $("#method"), cls = $("#class");
  layer.innerHTML = "";
  for (const l of m.layers) option(layer, l.name, `${l.name}  [${l.shape.join("×")}]`, l.name === m.default_layer);
  method.innerHTML = "";
  for (const name of m.methods) option(method, name, name, name === "gradcam");
  cls.innerHTML = "";
  option(cls, "", "each input's top-1", true);
  m.labels.forEach((l, i) => option(cls, String(i), `${i}: ${l}`));
}

function kindOf(file) {
  const ext = file.name.split(".").pop().toLowerCase();
  if (file.type.startsWith("image/") || ["png", "jpg", "jpeg"].includes(ext)) return "image";
  if (file.type.startsWith("video/") || ["mp4", "mkv", "webm", "mov", "avi", "m4v"].includes(ext)) return "video";
  return "signal";
}

function reset() {
  for (const id of ["#image-result", "#video-result", "#signal-result", "#progress"]) $(id).hidden = true;
  $("#thumbs").innerHTML = "";
  $("#bar").style.width = "0";
}

async function explainFile(file) {
  reset();
  const kind = kindOf(file);
  const m = models[$("#model").value];
  if (kind === "image") return explainImage(file);
  if (kind === "video" && m.kind !== "image") {
    return status(`${m.name} takes ${m.kind} inputs; choose a picture model for videos`, "error");
  }
  return startJob(file, kind);
}

function base64Of(file) {
  return new Promise((ok, fail) => {
    const r = new FileReader();
    r.onload = () => ok(String(r.result).split(",")[1]);
    r.onerror = () => fail(r.error);
    r.readAsDataURL(file);
  });
}

async function explainImage(file) {
  status("Explaining " + file.name + " …");
  const inst = { data: { b64: await base64Of(file) }, layer: $("#layer").value, method: $("#method").value };
  if ($("#class").value !== "") inst.target = Number($("#class").value);
  try {
    const r = await json(await api(`/v1/models/${encodeURIComponent($("#model").value)}:explain`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ instances: [inst], parameters: { alpha: Number($("#alpha").value) } }),
    }));
    const e = r.explanations[0], p = r.predictions[0];
    $("#overlay").src = "data:image/png;base64," + e.heatmap_png_b64;
    $("#image-label").innerHTML =
      `<b>${esc(e.label)}</b> ${(100 * e.probability).toFixed(1)} % · ${esc(e.method)} at ${esc(e.layer)}` +
      (p.class !== e.class ? ` · the model's top-1: ${esc(p.label)} ${(100 * p.probability).toFixed(1)} %` : "");
    $("#image-result").hidden = false;
    status("done: " + file.name, "done");
  } catch (err) {
    status(err.message, "error");
  }
}

function esc(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

async function startJob(file, kind) {
  status(`Uploading ${file.name} …`);
  const form = new FormData();
  form.append("model", $("#model").value);
  form.append("layer", $("#layer").value);
  form.append("method", $("#method").value);
  form.append("alpha", $("#alpha").value);
  if ($("#class").value !== "") form.append("class", $("#class").value);
  form.append("file", file, file.name);
  let job;
  try {
    const r = await api("/v1/jobs", { method: "POST", body: form });
    job = await json(r);
  } catch (err) {
    return status(err.message, "error");
  }
  const base = "/v1/" + job.name;
  $("#progress").hidden = false;
  status(`Explaining ${file.name} …`);
  const events = new EventSource(withToken(base + "/events"));
  events.addEventListener("progress", (ev) => showProgress(JSON.parse(ev.data), kind));
  events.addEventListener("frame", (ev) => addThumb(JSON.parse(ev.data)));
  events.addEventListener("done", (ev) => {
    events.close();
    $("#bar").style.width = "100%";
    const res = JSON.parse(ev.data);
    (kind === "video" ? showVideo : showSignal)(base, res).catch((e) => status(e.message, "error"));
  });
  events.addEventListener("error", (ev) => {
    if (ev.data) {
      events.close();
      status("failed: " + JSON.parse(ev.data).message, "error");
    }
  });
}

function showProgress(p, kind) {
  if (p.frames_total) $("#bar").style.width = (100 * p.frames_done / p.frames_total).toFixed(1) + "%";
  const unit = kind === "video" ? "frames" : "samples";
  status(`${p.frames_done}${p.frames_total ? " / " + p.frames_total : ""} ${unit} · ${p.fps.toFixed(1)} ${unit}/s`);
}

function addThumb(r) {
  const f = document.createElement("figure");
  f.innerHTML = `<img src="data:image/jpeg;base64,${r.thumbnail_jpeg_b64}" alt="frame ${r.index}">` +
    `<figcaption>#${r.index} ${esc(r.label)} ${(100 * r.probability).toFixed(0)}%</figcaption>`;
  $("#thumbs").appendChild(f);
  status(`frame ${r.index}: ${r.label} ${(100 * r.probability).toFixed(1)} %`);
}

async function lines(url) {
  const text = await (await api(url)).text();
  return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
}

// The last record at or before t (records sorted by time).
function at(records, t, key) {
  let lo = 0, hi = records.length - 1, best = records[0];
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (records[mid][key] <= t) { best = records[mid]; lo = mid + 1; } else hi = mid - 1;
  }
  return best;
}

async function showVideo(base, res) {
  const frames = await lines(base + "/result?file=frames");
  const video = $("#video");
  video.src = withToken(base + "/result");
  const label = () => {
    const r = at(frames, video.currentTime + 1e-3, "seconds");
    if (r) $("#live-label").innerHTML = `frame ${r.index}: <b>${esc(r.label)}</b> ${(100 * r.probability).toFixed(1)} %`;
  };
  video.ontimeupdate = label;
  label();
  $("#video-links").innerHTML =
    `<a href="${withToken(base + "/result")}" download>annotated video</a>` +
    `<a href="${withToken(base + "/result?file=frames")}" download>per-frame JSON lines</a>`;
  $("#video-result").hidden = false;
  status(`done: ${res.frames} frames at ${res.fps.toFixed(1)} frames/s`, "done");
  video.play().catch(() => {});
}

async function showSignal(base, res) {
  const windows = await lines(base + "/result?file=windows");
  $("#plot").src = withToken(base + "/result?file=plot");
  const end = windows.length ? windows[windows.length - 1].end_s : 0;
  const scrub = () => {
    const t = end * $("#scrub").value / 1000;
    $("#cursor").style.left = (100 * $("#scrub").value / 1000) + "%";
    const w = at(windows, t, "start_s");
    if (w) $("#signal-label").innerHTML = `${t.toFixed(2)} s · window ${w.window}: <b>${esc(w.label)}</b> ${(100 * w.probability).toFixed(1)} %`;
  };
  $("#scrub").oninput = scrub;
  scrub();
  $("#signal-links").innerHTML =
    `<a href="${withToken(base + "/result?file=relevance")}" download>relevance CSV</a>` +
    `<a href="${withToken(base + "/result?file=windows")}" download>windows JSON lines</a>`;
  $("#signal-result").hidden = false;
  status(`done: ${res.windows} windows over ${res.duration_s.toFixed(1)} s`, "done");
}

$("#model").addEventListener("change", showModel);
$("#file").addEventListener("change", (e) => e.target.files[0] && explainFile(e.target.files[0]));
const drop = $("#drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) explainFile(e.dataTransfer.files[0]);
});
init();
