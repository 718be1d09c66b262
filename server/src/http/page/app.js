// HEIE's page: drop an image, watch the chain of thought stream section by section with its region
// boxes, then the heatmap, the score and the flagged regions (pointing at one outlines it on the image
// and marks the sentences about it); or rank several images. Talks to the server's JSON API
// (POST /v1/evaluate answers with server-sent events; EventSource cannot POST, so the stream is read
// with fetch and a ReadableStream).
"use strict";

const $ = (id) => document.getElementById(id);

const SECTION_TITLES = {
  SECTION_DESCRIPTION: "Image description",
  SECTION_REGIONS: "Problematic regions",
  SECTION_ANALYSIS: "Analysis of issues",
  SECTION_RATING: "Rating",
};

// ---------------------------------------------------------------------------------------------
// Talking to the server
// ---------------------------------------------------------------------------------------------

/** An API failure, with the HTTP status and the API's error code and message. */
class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Turns a non-2xx reply into an ApiFailure, reading the API's {"error":{code,message}} body. */
async function failure(response) {
  let code = "UNKNOWN";
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch (_) {
    // Not JSON (a proxy's page): keep the status line.
  }
  return new ApiFailure(response.status, code, message);
}

/** What to tell a person about a failure. */
function explain(err) {
  if (err.name === "AbortError") return "Stopped.";
  if (!(err instanceof ApiFailure)) return `Cannot reach the server (${err.message}).`;
  switch (err.status) {
    case 503:
      return `The server is not ready: it is loading the model or shutting down. Try again in a moment. (${err.message})`;
    case 429:
      return `The server is full (RESOURCE_EXHAUSTED): every slot and queue place is taken. Try again shortly. (${err.message})`;
    case 413:
      return `The image is too large for this server: ${err.message}`;
    case 400:
      return `The request was refused: ${err.message}`;
    case 401:
    case 403:
      askForKey();
      return `Not allowed: ${err.message} Enter the server's API key at the top of the page.`;
    case 504:
      return `The server gave up at the deadline: ${err.message}`;
    default:
      return `The server failed (${err.code}): ${err.message}`;
  }
}

/**
 * Reads a text/event-stream body and calls onEvent(name, data) for each message, in order.
 * Messages are separated by a blank line; "event:" names one, "data:" lines are joined with
 * newlines, lines starting with ":" are comments (the server's keep-alives).
 */
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line === "" || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let rest = colon < 0 ? "" : line.slice(colon + 1);
        if (rest.startsWith(" ")) rest = rest.slice(1);
        if (field === "event") name = rest;
        else if (field === "data") data.push(rest);
      }
      if (data.length) onEvent(name, data.join("\n"));
    }
  }
}

/** A File as base64 (the proto3 JSON form of bytes). */
function base64Of(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// ---------------------------------------------------------------------------------------------
// Server state: health and info
// ---------------------------------------------------------------------------------------------

let healthTimer = null;

function showBanner(text, kind) {
  const banner = $("banner");
  banner.hidden = !text;
  banner.textContent = text || "";
  banner.className = "banner" + (kind ? " " + kind : "");
}

// ---------------------------------------------------------------------------------------------
// API key (servers started with --api-key): kept in sessionStorage, so it is gone with the tab.
// ---------------------------------------------------------------------------------------------

const KEY_STORAGE = "heie-api-key";

/** Request headers for /v1/*: the given ones plus Authorization when a key was entered. */
function apiHeaders(extra) {
  const headers = Object.assign({}, extra);
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.authorization = `Bearer ${key}`;
  return headers;
}

/** Opens the key box after a 401/403 so the person can enter (or correct) the key. */
function askForKey() {
  const box = $("key-box");
  box.hidden = false;
  box.open = true;
  $("api-key").focus();
}

function setUpKeyBox() {
  const input = $("api-key");
  input.value = sessionStorage.getItem(KEY_STORAGE) || "";
  if (input.value) $("key-box").hidden = false;
  input.addEventListener("change", () => {
    const key = input.value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
    $("info").textContent = "";
    loadInfo();
  });
}

async function checkHealth() {
  const pill = $("server-state");
  let serving = false;
  try {
    const r = await fetch("/healthz", { cache: "no-store" });
    serving = r.ok;
    pill.textContent = serving ? "ready" : "loading the model…";
    pill.className = "pill " + (serving ? "ok" : "wait");
    showBanner(serving ? "" : "The server is loading the model (or shutting down); requests are refused until it is ready.", "wait");
  } catch (e) {
    pill.textContent = "unreachable";
    pill.className = "pill down";
    showBanner("Cannot reach the server.", "");
  }
  if (serving && !$("info").textContent) loadInfo();
  clearTimeout(healthTimer);
  healthTimer = setTimeout(checkHealth, serving ? 15000 : 2000);
}

async function loadInfo() {
  try {
    const r = await fetch("/v1/info", { cache: "no-store", headers: apiHeaders({}) });
    if (r.status === 401 || r.status === 403) askForKey();
    if (!r.ok) return;
    const info = await r.json();
    const mode = (info.headsMode || "").replace("HEADS_MODE_", "").toLowerCase().replace("_", "-");
    $("info").textContent =
      `${info.llmModel} · ${mode} heads · ${info.device || "CPU"} · ` +
      `${info.limits.parallelSlots} slots, queue ${info.limits.maxQueue}, up to ${info.limits.maxBatch} images per ranking · heie ${info.version}`;
  } catch (_) {
    // The footer stays empty; health shows the problem.
  }
}

// ---------------------------------------------------------------------------------------------
// One image
// ---------------------------------------------------------------------------------------------

const single = {
  file: null,
  controller: null,
  ticker: null,
  imageSize: null,
  /** The verdict's score once it has arrived: `[SCORE]` in the text shows it. */
  score: undefined,
};

function setProgress(element, text, kind) {
  element.textContent = text;
  element.className = "progress" + (kind ? " " + kind : "");
}

function chooseImage(file) {
  if (!file) return;
  single.file = file;
  const picture = $("picture");
  if (picture.dataset.url) URL.revokeObjectURL(picture.dataset.url);
  picture.dataset.url = URL.createObjectURL(file);
  picture.src = picture.dataset.url;
  $("stage").hidden = false;
  $("drop-text").textContent = `${file.name || "pasted image"} (${Math.round(file.size / 1024)} KiB) — drop or paste another to replace`;
  $("evaluate").disabled = false;
  resetResult();
}

function resetResult() {
  single.score = undefined;
  $("sections").replaceChildren();
  $("boxes").replaceChildren();
  $("regions").hidden = true;
  $("region-list").replaceChildren();
  $("score").hidden = true;
  $("score").replaceChildren();
  $("overlay").hidden = true;
  $("opacity-control").hidden = true;
  $("legend").hidden = true;
  $("done").textContent = "";
  setProgress($("progress"), "");
}

/**
 * The model's text as a person reads it: a run of `[MAP]` markers (one per tile) says where the regions
 * are shown, and `[SCORE]` becomes the score once it has arrived (the raw text stays in data-raw).
 */
function forPeople(raw) {
  const score = single.score === undefined ? "…" : single.score.toFixed(2);
  return raw
    .replace(/(\[MAP\])+/g, "shown in the heatmap")
    .replace(/\[SCORE\]/g, score)
    // Grounding markup: a box's coordinates are drawn on the image, its label stays in the sentence.
    .replace(/<box>[\s\S]*?(<\/box>|$)/g, "")
    .replace(/<\/?ref>/g, "");
}

function sectionBlock(section) {
  let block = document.querySelector(`.section[data-section="${section}"]`);
  if (!block) {
    for (const other of document.querySelectorAll(".section.writing")) other.classList.remove("writing");
    block = document.createElement("div");
    block.className = "section writing";
    block.dataset.section = section;
    const title = document.createElement("h2");
    title.textContent = SECTION_TITLES[section] || section;
    const text = document.createElement("pre");
    text.className = "text";
    block.append(title, text);
    $("sections").append(block);
  }
  return block;
}

function drawBox(box) {
  const svg = $("boxes");
  const ns = "http://www.w3.org/2000/svg";
  const rect = document.createElementNS(ns, "rect");
  rect.setAttribute("x", box.pixelX1);
  rect.setAttribute("y", box.pixelY1);
  rect.setAttribute("width", Math.max(1, box.pixelX2 - box.pixelX1));
  rect.setAttribute("height", Math.max(1, box.pixelY2 - box.pixelY1));
  const title = document.createElementNS(ns, "title");
  title.textContent = box.label || "problematic region";
  rect.append(title);
  svg.append(rect);
  if (box.label) {
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", box.pixelX1 + 4);
    label.setAttribute("y", box.pixelY1 + 16);
    label.textContent = box.label;
    svg.append(label);
  }
}

/** Jet-like colour map: blue (plausible) → cyan → yellow → red (implausible). */
function colour(v) {
  const stops = [[0, 0, 180], [0, 200, 255], [255, 230, 0], [230, 0, 0]];
  const x = Math.min(1, Math.max(0, v)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const t = x - i;
  return stops[i].map((c, k) => Math.round(c + (stops[i + 1][k] - c) * t));
}

/** Paints the grayscale PNG heatmap as a colour map over the image. */
function drawHeatmap(heatmap) {
  const img = new Image();
  img.onload = () => {
    const canvas = $("overlay");
    canvas.width = heatmap.width;
    canvas.height = heatmap.height;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height);
    const d = pixels.data;
    // Opaque where the map is high, a light tint where it is 0: the image stays readable under it.
    for (let p = 0; p < d.length; p += 4) {
      const v = d[p] / 255;
      const [r, g, b] = colour(v);
      d[p] = r;
      d[p + 1] = g;
      d[p + 2] = b;
      d[p + 3] = Math.round(255 * (0.2 + 0.8 * v));
    }
    ctx.putImageData(pixels, 0, 0);
    canvas.style.opacity = $("opacity").value / 100;
    canvas.hidden = false;
    canvas.dataset.drawn = "true";
    $("opacity-control").hidden = false;
    $("legend").hidden = false;
  };
  img.src = "data:image/png;base64," + heatmap.data;
}

function showScore(score) {
  const box = $("score");
  if (!box.hidden) return; // the first Score is the verdict; later ones are extras
  const value = score.score;
  single.score = value;
  for (const text of document.querySelectorAll("#sections .text")) text.textContent = forPeople(text.dataset.raw || "");
  box.className = "score " + (value >= 0.7 ? "good" : value >= 0.4 ? "fair" : "bad");
  const big = document.createElement("span");
  big.className = "value";
  big.textContent = value.toFixed(2);
  const verdict = document.createElement("span");
  verdict.className = "verdict";
  // The server's band (from the human ratings) says what the score means; older servers send none.
  verdict.textContent = score.band || (value >= 0.7 ? "looks plausible" : value >= 0.4 ? "some implausible parts" : "clearly implausible");
  const detail = document.createElement("span");
  detail.className = "detail";
  const mode = (score.mode || "").replace("HEADS_MODE_", "").toLowerCase().replace("_", "-");
  let text = `plausibility, 0–1 (${mode} heads)`;
  if (score.sToken !== undefined && score.sToken !== null) text += ` · token ${score.sToken.toFixed(2)}`;
  if (score.sMap !== undefined && score.sMap !== null) text += ` · map ${score.sMap.toFixed(2)}`;
  detail.textContent = text;
  box.append(big, verdict, detail);
  if (score.levels && score.levels.length) {
    const levels = document.createElement("div");
    levels.className = "levels";
    for (const l of score.levels) {
      const name = document.createElement("span");
      name.textContent = l.level;
      const bar = document.createElement("span");
      bar.className = "level-bar";
      bar.style.width = `${Math.max(1, Math.round(l.probability * 100))}%`;
      const pct = document.createElement("span");
      pct.textContent = `${(l.probability * 100).toFixed(0)}%`;
      levels.append(name, bar, pct);
    }
    box.append(levels);
  }
  box.hidden = false;
}

// ---------------------------------------------------------------------------------------------
// Flagged regions: the list, the outline of the one pointed at, and the sentences about it
// ---------------------------------------------------------------------------------------------

/** "REGION_CATEGORY_HAND" → "hand". */
function categoryName(category) {
  return (category || "REGION_CATEGORY_OTHER").replace("REGION_CATEGORY_", "").toLowerCase();
}

/**
 * `text` with its whitespace runs made one space and none before punctuation (as the server writes a
 * region's sentences), and for each character kept, its index in `text`.
 */
function comparable(text) {
  let out = "";
  const at = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (/\s/.test(c)) {
      if (out === "" || out.endsWith(" ")) continue;
      out += " ";
      at.push(i);
      continue;
    }
    if (/[.,;:!?]/.test(c) && out.endsWith(" ")) {
      out = out.slice(0, -1);
      at.pop();
    }
    out += c;
    at.push(i);
  }
  return { out, at };
}

/** Where `sentence` is in `text`, as [start, end) of `text`; null when it is not there. */
function locate(text, sentence) {
  const hay = comparable(text);
  const needle = comparable(sentence).out.trim();
  const found = needle ? hay.out.indexOf(needle) : -1;
  if (found < 0) return null;
  return [hay.at[found], hay.at[found + needle.length - 1] + 1];
}

/** Wraps each region's sentences in the explanation in <mark data-regions="ids">. */
function markSentences(regions) {
  for (const element of document.querySelectorAll("#sections .text")) {
    const text = element.textContent;
    const ranges = [];
    for (const region of regions) {
      for (const sentence of region.sentences || []) {
        const range = locate(text, sentence);
        if (range) ranges.push({ start: range[0], end: range[1], id: String(region.id) });
      }
    }
    if (!ranges.length) continue;
    // Cut the text where any range starts or ends; each piece knows the regions covering it.
    const cuts = [...new Set([0, text.length, ...ranges.flatMap((r) => [r.start, r.end])])].sort((a, b) => a - b);
    const pieces = [];
    for (let k = 0; k + 1 < cuts.length; k++) {
      const [from, to] = [cuts[k], cuts[k + 1]];
      const ids = [...new Set(ranges.filter((r) => r.start <= from && to <= r.end).map((r) => r.id))];
      const piece = text.slice(from, to);
      if (!ids.length) {
        pieces.push(document.createTextNode(piece));
        continue;
      }
      const mark = document.createElement("mark");
      mark.className = "region-sentence";
      mark.dataset.regions = ids.join(" ");
      mark.textContent = piece;
      pieces.push(mark);
    }
    element.replaceChildren(...pieces);
  }
}

/** Outlines region `id` on the image and marks its sentences; null clears both. */
function pointAt(id) {
  for (const e of document.querySelectorAll("#boxes .region-outline, #region-list li")) {
    e.classList.toggle("active", id !== null && e.dataset.region === id);
  }
  for (const mark of document.querySelectorAll("#sections mark.region-sentence")) {
    mark.classList.toggle("active", id !== null && mark.dataset.regions.split(" ").includes(id));
  }
}

function showRegions(regions) {
  const list = $("region-list");
  const svg = $("boxes");
  const ns = "http://www.w3.org/2000/svg";
  list.replaceChildren();
  for (const old of svg.querySelectorAll(".region-outline")) old.remove();
  for (const region of regions) {
    const id = String(region.id);
    const box = region.box || {};
    const outline = document.createElementNS(ns, "rect");
    outline.classList.add("region-outline");
    outline.dataset.region = id;
    outline.setAttribute("x", box.pixelX1 || 0);
    outline.setAttribute("y", box.pixelY1 || 0);
    outline.setAttribute("width", Math.max(1, (box.pixelX2 || 0) - (box.pixelX1 || 0)));
    outline.setAttribute("height", Math.max(1, (box.pixelY2 || 0) - (box.pixelY1 || 0)));
    svg.append(outline);

    const item = document.createElement("li");
    item.dataset.region = id;
    item.tabIndex = 0;
    const label = document.createElement("span");
    label.className = "region-label";
    label.textContent = region.label || "unnamed region";
    const category = document.createElement("span");
    category.className = "region-category";
    category.textContent = categoryName(region.category);
    const severity = document.createElement("span");
    severity.className = "region-severity";
    severity.textContent = `severity ${(region.severity || 0).toFixed(2)}`;
    severity.title = "(1 − score) × the heatmap's mean over the region, 0–1";
    item.append(label, category, severity);
    for (const [on, off] of [["mouseenter", "mouseleave"], ["focus", "blur"]]) {
      item.addEventListener(on, () => pointAt(id));
      item.addEventListener(off, () => pointAt(null));
    }
    list.append(item);
  }
  markSentences(regions);
  $("regions").hidden = regions.length === 0;
}

function showDone(done) {
  const t = done.timings || {};
  const tokens = done.tokens || {};
  const reasons = {
    FINISH_REASON_COMPLETED: "Finished",
    FINISH_REASON_LENGTH: "Finished (a section reached its token cap)",
    FINISH_REASON_CANCELLED: "Cancelled",
  };
  const reason = reasons[done.finishReason] || done.finishReason;
  $("done").textContent =
    `${reason} in ${(t.totalMs / 1000).toFixed(1)} s (queued ${(t.queueMs / 1000).toFixed(1)} s, first token ` +
    `${(t.timeToFirstTokenMs / 1000).toFixed(1)} s) · ${tokens.generatedTokens} tokens at ${t.decodeTokensPerS.toFixed(1)}/s · ${done.device}`;
}

/** Shows where the evaluation stands, with the time spent in that stage. */
function stage(text) {
  const since = performance.now();
  clearInterval(single.ticker);
  const paint = () => setProgress($("progress"), `${text} ${((performance.now() - since) / 1000).toFixed(1)} s`, "busy");
  paint();
  single.ticker = setInterval(paint, 200);
}

function finish(text, kind) {
  clearInterval(single.ticker);
  single.ticker = null;
  setProgress($("progress"), text, kind);
  for (const w of document.querySelectorAll(".section.writing")) w.classList.remove("writing");
  $("evaluate").disabled = !single.file;
  $("stop").hidden = true;
  single.controller = null;
}

async function evaluate() {
  if (!single.file || single.controller) return;
  resetResult();
  const controller = new AbortController();
  single.controller = controller;
  $("evaluate").disabled = true;
  $("stop").hidden = false;
  stage("Sending the image…");
  const options = { heatmapEncodings: ["HEATMAP_ENCODING_PNG8"], explanation: $("explanation").checked };
  const maxTokens = parseInt($("max-tokens").value, 10);
  if (maxTokens > 0) options.maxTokensPerSection = maxTokens;
  const image = { encoded: await base64Of(single.file) };
  const prompt = $("prompt").value.trim();
  if (prompt) image.generationPrompt = prompt;
  let ended = false;
  try {
    const response = await fetch("/v1/evaluate", {
      method: "POST",
      headers: apiHeaders({ "content-type": "application/json", accept: "text/event-stream" }),
      body: JSON.stringify({ image, options }),
      signal: controller.signal,
    });
    if (!response.ok) throw await failure(response);
    stage("Accepted; waiting…");
    let writing = false;
    await readEvents(response.body, (name, data) => {
      if (name === "error") {
        const e = JSON.parse(data);
        throw new ApiFailure(500, e.code, e.message);
      }
      const event = JSON.parse(data)[name];
      switch (name) {
        case "started": {
          const tiles = event.tiles || {};
          single.imageSize = [event.imageWidth, event.imageHeight];
          $("boxes").setAttribute("viewBox", `0 0 ${event.imageWidth} ${event.imageHeight}`);
          stage(`Queued for a free slot, then reading the image (${tiles.cols}×${tiles.rows} tiles${tiles.hasThumbnail ? " + thumbnail" : ""})…`);
          break;
        }
        case "textDelta": {
          const block = sectionBlock(event.section);
          const text = block.querySelector(".text");
          // Sections begin with the blank lines that separate them in the model's context.
          const raw = text.dataset.raw || "";
          text.dataset.raw = raw + (raw ? event.text : event.text.replace(/^\s+/, ""));
          text.textContent = forPeople(text.dataset.raw);
          text.scrollTop = text.scrollHeight;
          if (!writing || block.dataset.announced !== "1") {
            writing = true;
            block.dataset.announced = "1";
            stage(`Writing: ${(SECTION_TITLES[event.section] || event.section).toLowerCase()}…`);
          }
          break;
        }
        case "regionBox":
          drawBox(event);
          break;
        case "heatmap":
          if (event.encoding === "HEATMAP_ENCODING_PNG8") drawHeatmap(event);
          stage("Heatmap ready; scoring…");
          break;
        case "score":
          showScore(event);
          break;
        case "regions":
          showRegions(event.regions || []);
          break;
        case "done":
          ended = true;
          showDone(event);
          break;
        default:
          break; // newer servers may send more kinds of events
      }
    });
    finish(ended ? "Done." : "The stream ended early.", ended ? "" : "error");
  } catch (err) {
    controller.abort(); // closes the connection, which cancels the work on the server
    finish(explain(err), "error");
    if (err instanceof ApiFailure && err.status === 503) checkHealth();
  }
}

// ---------------------------------------------------------------------------------------------
// Several images: rank them
// ---------------------------------------------------------------------------------------------

const batch = { files: [], controller: null, ticker: null };

function addBatchFiles(files) {
  for (const f of files) if (f.type.startsWith("image/") || /\.(png|jpe?g|webp)$/i.test(f.name)) batch.files.push(f);
  renderBatch(null);
}

function renderBatch(result) {
  const list = $("ranking");
  list.replaceChildren();
  const order = result ? result.order : batch.files.map((_, i) => i);
  order.forEach((index, place) => {
    const file = batch.files[index];
    const item = document.createElement("li");
    const img = document.createElement("img");
    img.src = URL.createObjectURL(file);
    img.alt = file.name;
    img.onload = () => URL.revokeObjectURL(img.src);
    const meta = document.createElement("div");
    meta.className = "meta";
    const rank = document.createElement("span");
    rank.className = "rank";
    const score = document.createElement("span");
    if (result) {
      rank.textContent = `#${place + 1}`;
      score.textContent = result.scores[index].toFixed(3);
      if (place === 0) item.classList.add("top");
    } else {
      rank.textContent = `image ${index + 1}`;
      score.textContent = "–";
    }
    meta.append(rank, score);
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = file.name;
    item.append(img, meta, name);
    list.append(item);
  });
  $("rank").disabled = batch.files.length === 0 || !!batch.controller;
  $("batch-drop-text").textContent = batch.files.length
    ? `${batch.files.length} image(s) — drop more to add`
    : "Drop several images here or click to choose";
}

async function rank() {
  if (!batch.files.length || batch.controller) return;
  const controller = new AbortController();
  batch.controller = controller;
  $("rank").disabled = true;
  $("batch-stop").hidden = false;
  const since = performance.now();
  const paint = () =>
    setProgress($("batch-progress"), `Scoring ${batch.files.length} image(s)… ${((performance.now() - since) / 1000).toFixed(1)} s`, "busy");
  paint();
  batch.ticker = setInterval(paint, 200);
  try {
    const images = await Promise.all(batch.files.map(async (f) => ({ encoded: await base64Of(f) })));
    const response = await fetch("/v1/rerank", {
      method: "POST",
      headers: apiHeaders({ "content-type": "application/json" }),
      body: JSON.stringify({ images, fast: $("fast").checked, topK: 0 }),
      signal: controller.signal,
    });
    if (!response.ok) throw await failure(response);
    const result = await response.json();
    clearInterval(batch.ticker);
    setProgress($("batch-progress"), `Ranked ${result.order.length} image(s) in ${(result.totalMs / 1000).toFixed(1)} s, best first.`);
    batch.controller = null;
    renderBatch(result);
  } catch (err) {
    clearInterval(batch.ticker);
    setProgress($("batch-progress"), explain(err), "error");
    batch.controller = null;
    renderBatch(null);
  }
  $("batch-stop").hidden = true;
}

// ---------------------------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------------------------

function dropZone(zone, onFiles) {
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files.length) onFiles([...e.dataTransfer.files]);
  });
}

function selectTab(name) {
  for (const [tab, panel] of [["tab-single", "single"], ["tab-batch", "batch"]]) {
    const on = panel === name;
    $(tab).setAttribute("aria-selected", String(on));
    $(panel).hidden = !on;
  }
}

$("tab-single").addEventListener("click", () => selectTab("single"));
$("tab-batch").addEventListener("click", () => selectTab("batch"));

$("file").addEventListener("change", (e) => chooseImage(e.target.files[0]));
dropZone($("drop"), (files) => chooseImage(files[0]));
document.addEventListener("paste", (e) => {
  const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((i) => i.type.startsWith("image/"));
  if (!item) return;
  const file = item.getAsFile();
  if ($("batch").hidden) chooseImage(file);
  else addBatchFiles([file]);
});
$("single-form").addEventListener("submit", (e) => {
  e.preventDefault();
  evaluate();
});
$("stop").addEventListener("click", () => single.controller && single.controller.abort());
$("opacity").addEventListener("input", () => {
  $("overlay").style.opacity = $("opacity").value / 100;
});

$("batch-files").addEventListener("change", (e) => {
  addBatchFiles([...e.target.files]);
  e.target.value = "";
});
dropZone($("batch-drop"), addBatchFiles);
$("batch-form").addEventListener("submit", (e) => {
  e.preventDefault();
  rank();
});
$("batch-stop").addEventListener("click", () => batch.controller && batch.controller.abort());
$("batch-clear").addEventListener("click", () => {
  batch.files = [];
  setProgress($("batch-progress"), "");
  renderBatch(null);
});

setUpKeyBox();
checkHealth();
