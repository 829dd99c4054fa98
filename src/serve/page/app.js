// mawqif's page: send the text to /v1/classify, colour each sentence by its
// label, chart the label shares, offer the result as JSONL. No libraries.
"use strict";

const LABELS = [
  { key: "report", name: "تقرير" },
  { key: "quotation", name: "اقتباس" },
  { key: "endorsement", name: "تأييد" },
  { key: "opinion", name: "رأي" },
];
const LABEL_NAME = Object.fromEntries(LABELS.map((l) => [l.key, l.name]));

const ERROR_TEXT = {
  empty_text: "النص فارغ: الصق خبرًا فيه جملة واحدة على الأقل.",
  invalid_utf8: "الملف ليس نصًا بترميز UTF-8.",
  body_too_large: "النص أطول مما يقبله الخادم في طلب واحد.",
  too_many_sentences: "في النص جمل أكثر مما يقبله الخادم في طلب واحد؛ قسّمه.",
  sentence_too_long: "في النص مقطع طويل جدًا بلا علامات ترقيم؛ هل النص مقسّم إلى جمل؟",
  queue_full: "الخادم مشغول الآن.",
  timeout: "انتهت المهلة قبل أن يفرغ الخادم من النص.",
  not_ready: "النموذج ما زال قيد التحميل.",
  shutting_down: "الخادم يتوقف الآن.",
};

const $ = (id) => document.getElementById(id);

const state = {
  /** The last result: { id, units, profile }. */
  result: null,
  /** The name of the uploaded file, for the download's name. */
  fileName: null,
  /** The sentence whose scores are shown. */
  shown: null,
};

const percent = (x) => `${(100 * x).toFixed(0)}٪`;
/** A unit's highest score: the probability of the label it was given. */
const confidence = (u) => Math.max(...Object.values(u.scores));
/** Whether the server's threshold says this label should be checked by hand. */
const isUnsure = (u) => state.result && confidence(u) < state.result.unsureBelow;
const fixed = (x) => x.toFixed(3);

function showMessage(text, kind) {
  const m = $("message");
  m.textContent = text;
  m.className = `message ${kind || ""}`;
}

async function checkHealth() {
  const status = $("model-status");
  try {
    const r = await fetch("/health", { cache: "no-store" });
    const body = await r.json();
    if (r.ok && body.status === "ready") {
      status.textContent = `النموذج جاهز: ${body.model}`;
      status.className = "model-status ready";
      return;
    }
    status.textContent = body.status === "draining" ? "الخادم يتوقف." : "جارٍ تحميل النموذج…";
    status.className = "model-status";
  } catch (e) {
    status.textContent = "تعذّر الاتصال بالخادم.";
    status.className = "model-status failed";
  }
  setTimeout(checkHealth, 2000);
}

async function readFile(event) {
  const file = event.target.files && event.target.files[0];
  if (!file) return;
  const buffer = await file.arrayBuffer();
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(buffer);
  } catch (e) {
    showMessage(ERROR_TEXT.invalid_utf8, "error");
    return;
  }
  $("text").value = text.replace(/^\uFEFF/, "");
  state.fileName = file.name.replace(/\.[^.]*$/, "") || "text";
  showMessage(`قُرئ الملف ${file.name}.`, "info");
}

async function classify(event) {
  event.preventDefault();
  const text = $("text").value;
  if (!text.trim()) {
    showMessage(ERROR_TEXT.empty_text, "error");
    $("text").focus();
    return;
  }
  const button = $("classify");
  button.disabled = true;
  $("result").setAttribute("aria-busy", "true");
  showMessage("جارٍ التصنيف…", "info");
  try {
    const r = await fetch("/v1/classify", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text, id: state.fileName || "text" }),
    });
    const body = await r.json().catch(() => null);
    if (!r.ok) {
      const kind = body && body.error ? body.error.kind : "";
      let msg = ERROR_TEXT[kind] || `خطأ من الخادم (${r.status}).`;
      const retry = r.headers.get("Retry-After");
      if (retry) msg += ` أعد المحاولة بعد ${retry} ثانية.`;
      if (body && body.error) msg += ` [${body.error.message}]`;
      showMessage(msg, "error");
      return;
    }
    const result = body.results[0];
    result.unsureBelow = body.unsure_below;
    state.result = result;
    render(text, result);
    const warnings = result.warnings.length ? ` تنبيه: ${result.warnings.join("؛ ")}` : "";
    showMessage(`صُنّفت ${result.units.length} جملة.${warnings}`, "info");
    $("result-title").focus();
  } catch (e) {
    showMessage(`تعذّر الاتصال بالخادم: ${e.message}`, "error");
  } finally {
    button.disabled = false;
    $("result").removeAttribute("aria-busy");
  }
}

/** The article with each unit wrapped in a span of its label's colour.
 *  Spans are UTF-8 byte offsets, so slicing happens on the encoded bytes. */
function render(text, result) {
  hideTip();
  const bytes = new TextEncoder().encode(text);
  const decoder = new TextDecoder();
  const article = $("article");
  const parts = [];
  let pos = 0;
  for (const u of result.units) {
    if (u.start > pos) parts.push(document.createTextNode(decoder.decode(bytes.subarray(pos, u.start))));
    const span = document.createElement("span");
    span.className = `unit label-${u.label}`;
    if (isUnsure(u)) {
      span.classList.add("unsure");
      span.dataset.unsure = "1";
    }
    span.tabIndex = 0;
    span.dataset.index = String(u.index);
    span.dataset.label = u.label;
    span.setAttribute("aria-describedby", "tip");
    span.textContent = decoder.decode(bytes.subarray(u.start, u.end));
    parts.push(span);
    pos = u.end;
  }
  // What follows the last sentence, less trailing blank lines.
  const tail = decoder.decode(bytes.subarray(pos)).trimEnd();
  if (tail) parts.push(document.createTextNode(tail));
  article.replaceChildren(...parts);
  renderSummary(result);
  renderChart(result.profile);
  $("result").hidden = false;
}

function renderSummary(result) {
  const profile = result.profile;
  const counts = LABELS.map((l) => `${l.name} ${profile.counts[l.key]}`).join("، ");
  const unsure = result.units.filter(isUnsure).length;
  const check = unsure
    ? ` ${unsure} منها موسومة بعلامة ؟ (ثقة النموذج أقل من ${result.unsureBelow.toFixed(2)}): راجعها بنفسك.`
    : "";
  $("summary").textContent = `${profile.sentences} جملة: ${counts}.${check}`;
  $("summary").dataset.unsure = String(unsure);
}

const SVG = "http://www.w3.org/2000/svg";

function svg(name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** Horizontal bars, right to left: label name, bar, share. */
function renderChart(profile) {
  const chart = $("chart");
  const desc = $("chart-desc");
  chart.replaceChildren(desc);
  const row = 40;
  const nameEdge = 392; // names are right-aligned here
  const barRight = 300; // bars grow leftwards from here
  const barMax = 230;
  LABELS.forEach((l, i) => {
    const share = profile.shares[l.key];
    const y = i * row;
    const width = Math.max(share * barMax, share > 0 ? 2 : 0);
    chart.append(svg("text", { x: nameEdge, y: y + 26, "text-anchor": "end", direction: "ltr" }, l.name));
    chart.append(svg("rect", { class: "track", x: barRight - barMax, y: y + 10, width: barMax, height: 22, rx: 4 }));
    const bar = svg("rect", {
      class: `bar label-${l.key}`,
      x: barRight - width,
      y: y + 10,
      width: width.toFixed(2),
      height: 22,
      rx: 4,
      "data-label": l.key,
      "data-share": share,
    });
    bar.append(svg("title", {}, `${l.name}: ${percent(share)} (${profile.counts[l.key]})`));
    chart.append(bar);
    chart.append(svg("text", { x: barRight - barMax - 6, y: y + 26, "text-anchor": "end", class: "share" },
      `${percent(share)}`));
  });
  desc.textContent = LABELS.map((l) => `${l.name} ${percent(profile.shares[l.key])}`).join("، ");
}

/** The scores card of one sentence, next to it. */
function showTip(span) {
  if (!state.result) return;
  const unit = state.result.units[Number(span.dataset.index)];
  if (!unit) return;
  if (state.shown && state.shown !== span) state.shown.classList.remove("active");
  state.shown = span;
  span.classList.add("active");
  const tip = $("tip");
  const title = document.createElement("h3");
  title.textContent = `الجملة ${unit.index + 1}: ${LABEL_NAME[unit.label]}`;
  const table = document.createElement("table");
  for (const l of LABELS) {
    const score = unit.scores[l.key];
    const tr = document.createElement("tr");
    if (l.key === unit.label) tr.className = "best";
    const name = document.createElement("td");
    name.textContent = l.name;
    const meterCell = document.createElement("td");
    const meter = document.createElement("span");
    meter.className = `meter label-${l.key}`;
    meter.style.width = `${Math.round(score * 80)}px`;
    meterCell.append(meter);
    const value = document.createElement("td");
    value.className = "score";
    value.dataset.label = l.key;
    value.textContent = fixed(score);
    tr.append(name, meterCell, value);
    table.append(tr);
  }
  const parts = [title, table];
  if (isUnsure(unit)) {
    const note = document.createElement("p");
    note.className = "tip-unsure";
    note.textContent = `ثقة النموذج أقل من ${state.result.unsureBelow.toFixed(2)}: راجع هذه الجملة بنفسك.`;
    parts.push(note);
  }
  tip.replaceChildren(...parts);
  tip.hidden = false;
  const rect = span.getBoundingClientRect();
  const width = tip.offsetWidth;
  const maxLeft = document.documentElement.clientWidth - width - 8;
  const left = Math.min(Math.max(8, rect.right - width), Math.max(8, maxLeft));
  tip.style.left = `${left + window.scrollX}px`;
  tip.style.top = `${rect.bottom + window.scrollY + 6}px`;
}

function hideTip() {
  $("tip").hidden = true;
  if (state.shown) state.shown.classList.remove("active");
  state.shown = null;
}

function download() {
  if (!state.result) return;
  const lines = state.result.units.map((u) => JSON.stringify(u)).join("\n") + "\n";
  const url = URL.createObjectURL(new Blob([lines], { type: "application/x-ndjson" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = `${state.fileName || "mawqif"}.jsonl`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function init() {
  $("form").addEventListener("submit", classify);
  $("file").addEventListener("change", readFile);
  $("clear").addEventListener("click", () => {
    $("text").value = "";
    $("file").value = "";
    state.fileName = null;
    showMessage("", "");
    $("text").focus();
  });
  $("download").addEventListener("click", download);
  const article = $("article");
  const unitOf = (e) => (e.target instanceof Element ? e.target.closest(".unit") : null);
  article.addEventListener("mouseover", (e) => {
    const u = unitOf(e);
    if (u) showTip(u);
  });
  article.addEventListener("mouseleave", () => {
    if (!article.contains(document.activeElement)) hideTip();
  });
  article.addEventListener("focusin", (e) => {
    const u = unitOf(e);
    if (u) showTip(u);
  });
  article.addEventListener("focusout", (e) => {
    if (!article.contains(e.relatedTarget)) hideTip();
  });
  // A tap focuses the sentence (tabIndex 0), which shows its card; a
  // second tap on the same sentence hides it.
  article.addEventListener("click", (e) => {
    const u = unitOf(e);
    if (!u) return;
    if (state.shown === u && !$("tip").hidden && e.detail > 0 && u.dataset.tapped === "1") {
      hideTip();
      u.dataset.tapped = "0";
    } else {
      showTip(u);
      u.dataset.tapped = "1";
    }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") hideTip();
  });
  window.addEventListener("resize", () => {
    if (state.shown) showTip(state.shown);
  });
  checkHealth();
}

document.addEventListener("DOMContentLoaded", init);
