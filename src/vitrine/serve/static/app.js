// vitrine web UI: text search, image search, "more like this" with a modification, filter chips with counts for the
// current results (the catalog's own categorical columns, from GET /schema), paging, a "no close match" notice, and
// tags on click.
"use strict";

const $ = (id) => document.getElementById(id);
const CHIPS_PER_FIELD = 8;
const PAGE = Math.min(100, Math.max(1, Number(new URLSearchParams(location.search).get("k")) || 24));  // results a page: ?k=
const state = { text: "", file: null, imageUrl: null, modification: "", filters: {}, mode: "hybrid", offset: 0, facets: null, global: null, schema: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function setStatus(message, isError = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", isError);
}

function setNotice(...parts) {
  $("notice").replaceChildren(...parts);
  $("notice").hidden = parts.length === 0;
}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new Error(body && body.error ? body.error.message : `HTTP ${response.status}`);
  return body;
}

const hasQuery = () => Boolean(state.text || state.file || state.imageUrl);
const activeCount = () => Object.values(state.filters).reduce((n, values) => n + values.size, 0);

async function runSearch(append = false) {
  const form = new FormData();
  if (state.file) form.append("image", state.file);
  else if (state.imageUrl) form.append("image_url", state.imageUrl);
  const hasImage = Boolean(state.file || state.imageUrl);
  if (!hasImage && !state.text) { setStatus("Type a query or drop an image."); return; }
  if (hasImage && state.modification) form.append("modification", state.modification);
  if (!hasImage) form.append("text", state.text);
  state.offset = append ? state.offset + PAGE : 0;
  form.append("k", String(PAGE));
  form.append("offset", String(state.offset));
  form.append("mode", state.mode);
  for (const [field, values] of Object.entries(state.filters)) for (const value of values) form.append("filter", `${field}=${value}`);
  setStatus("Searching…");
  try {
    const body = await api("/search", { method: "POST", body: form });
    renderResults(body.results, append);
    if (!append) { state.facets = body.facets; renderChips(); }
    describe(body);
    document.body.dataset.queryKind = body.query.kind;
    document.body.dataset.mode = body.query.mode;
  } catch (error) {
    if (!append) renderResults([]);
    showPage(true);
    setNotice();
    setStatus(error.message, true);
  }
}

function describe(body) {
  const q = body.query;
  const what = q.kind === "composed" ? `image + "${q.modification}"` : q.kind === "image" ? "image" : `"${q.text}"`;
  const shown = $("results").children.length;
  const matched = q.soft_filters && q.soft_filters.words.length ? ` (understood: ${q.soft_filters.words.join(", ")})` : "";
  const far = Boolean(body.relevance && body.relevance.close_match === false);
  const summarise = () => {
    setStatus(`${shown} of ${body.total} results for ${what}${matched} in ${body.took_ms} ms${far ? ": none of them is a close match" : ""}`);
    $("more-results").hidden = shown >= body.total || body.results.length < PAGE;
  };
  if (far && body.total > 0 && state.offset === 0) { withhold(what, summarise); return; }
  showPage(true);
  summarise();
  if (body.total === 0 && activeCount()) {
    setNotice(el("span", {}, "No products match these filters. "), el("button", { type: "button", class: "link", onclick: clearAll }, "Clear all filters"));
  } else if (body.total === 0) {
    setNotice(el("span", {}, "Nothing in the catalog matches this query."));
  } else {
    setNotice();
  }
}

// No close match: the notice alone. A count, chips with counts and "More results" would say there is something worth
// browsing; they come back, with the nearest products, when the shopper asks for them.
function withhold(what, reveal) {
  showPage(false);
  setStatus("");
  const showAnyway = () => { setNotice(); showPage(true); reveal(); };
  setNotice(el("strong", {}, "No close match"), el("span", {}, ` for ${what}: nothing in this catalog looks like it. `),
    el("button", { type: "button", class: "link", id: "show-anyway", onclick: showAnyway }, "Show the nearest products anyway"));
}

function showPage(on) {
  $("results").hidden = !on;
  $("chips").hidden = !on;
  if (on) markAllOverflow(); else $("more-results").hidden = true;
}

function renderResults(results, append = false) {
  const grid = $("results");
  grid.hidden = false;
  const cards = results.map((hit) => el("button", {
    // the ranking score stays out of sight (data-score): its scale depends on the mode and means nothing to a shopper
    class: "card", type: "button", dataset: { id: hit.id, testid: "result", score: String(hit.score) }, title: hit.title || hit.id,
    onclick: () => { useAsReference(hit); showDetails(hit.id); },
  },
    el("img", { src: hit.image_url, alt: hit.title || hit.id, loading: "lazy" }),
    el("div", { class: "meta" }, el("div", { class: "title" }, hit.title || hit.id)),
  ));
  if (append) grid.append(...cards); else grid.replaceChildren(...cards);
  if (!results.length && !append) $("more-results").hidden = true;
}

function leaveTextSearch() {
  state.text = "";
  $("search-input").value = "";  // an image search: the old words no longer describe the results
}

function useAsReference(hit) {
  state.file = null;
  state.imageUrl = hit.image_url;
  leaveTextSearch();
  showReference(hit.image_url, `More like “${hit.title || hit.id}”`);
  runSearch();
}

function useFile(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) { setStatus(`${file.name} is not an image`, true); return; }
  state.file = file;
  state.imageUrl = null;
  leaveTextSearch();
  showReference(URL.createObjectURL(file), `Your image: ${file.name}`);
  runSearch();
}

function showReference(src, label) {
  $("reference-image").src = src;
  $("reference-label").textContent = label;
  $("reference").hidden = false;
  $("modification-input").value = state.modification;
}

function clearReference() {
  state.file = null;
  state.imageUrl = null;
  state.modification = "";
  $("reference").hidden = true;
  $("file-input").value = "";
  if (state.text) runSearch(); else { renderResults([]); showPage(true); setNotice(); setStatus(""); state.facets = null; renderChips(); }
}

async function showDetails(id) {
  try {
    const product = await api(`/products/${encodeURIComponent(id)}`);
    $("details-image").src = product.image_url;
    $("details-title").textContent = product.title || product.id;
    $("details-id").textContent = `id ${product.id}`;
    const rows = (map) => Object.entries(map).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]);
    $("details-tags").replaceChildren(...(Object.keys(product.tags).length ? rows(product.tags) : [el("dd", {}, "none stored")]));
    $("details-attributes").replaceChildren(...rows(inColumnOrder(product.attributes)));
    $("details").hidden = false;
    document.body.classList.add("details-open");
  } catch (error) {
    setStatus(error.message, true);
  }
}

// The catalog's attributes as its file orders its columns (the saved schema's order); any others after them.
function inColumnOrder(attributes) {
  const columns = state.schema ? state.schema.attributes : [];
  const place = (name) => (columns.includes(name) ? columns.indexOf(name) : columns.length);
  return Object.fromEntries(Object.entries(attributes).sort(([a], [b]) => place(a) - place(b)));
}

function closeDetails() {
  $("details").hidden = true;
  document.body.classList.remove("details-open");
}

async function loadChips() {
  try {
    const [schema, attributes] = await Promise.all([api("/schema"), api(`/attributes?per_field=${CHIPS_PER_FIELD}`)]);
    state.schema = schema;
    state.global = attributes.fields;
  } catch (error) { setStatus(error.message, true); return; }
  renderChips();
}

const isPredicted = (name) => Boolean(state.schema && state.schema.facets.some((f) => f.field === name && f.predicted));
const fieldLabel = (name) => (isPredicted(name) ? `${name} (predicted)` : name);

function chip(name, value, count) {
  const on = Boolean(state.filters[name] && state.filters[name].has(value));
  return el("button", {
    class: "chip", type: "button", "aria-pressed": String(on), dataset: { field: name, value }, title: `${count} products`,
    onclick: () => toggleFilter(name, value),
  }, value, el("span", { class: "count" }, ` ${count}`));
}

// Chips: a group per field of the schema's facets (the catalog's categorical columns, then predicted tags), holding
// the current results' values with their counts (the whole catalog's before a search); values already chosen stay
// shown; "more" opens every value of the field, with type-ahead.
function renderChips() {
  const source = state.facets || state.global || {};
  const groups = (state.schema ? state.schema.facets : []).map(({ field, predicted, filled }) => chipGroup(field, predicted, filled, source)).filter(Boolean);
  $("chips").replaceChildren(...groups);
  markAllOverflow();
  renderActive();
}

function chipGroup(name, predicted, filled, source) {
  const rows = (source[name] || []).slice();
  for (const value of state.filters[name] || []) if (!rows.some((r) => r.value === value)) rows.push({ value, count: 0 });
  const catalogWide = (state.global || {})[name] || rows;
  if (catalogWide.length < 2 && !state.filters[name]) return null;  // one value in the whole catalog: nothing to choose
  const shown = rows.slice(0, CHIPS_PER_FIELD);
  for (const row of rows.slice(CHIPS_PER_FIELD)) if (state.filters[name] && state.filters[name].has(row.value)) shown.push(row);
  const row = el("div", { class: "chip-row", onscroll: (event) => markOverflow(event.currentTarget) },
    ...shown.map(({ value, count }) => chip(name, value, count)),
    el("button", { class: "chip more", type: "button", dataset: { more: name }, onclick: () => openMore(name) }, "more…"));
  return el("div", { class: "chip-group", dataset: { field: name, predicted: String(predicted) } }, groupLabel(name, predicted, filled), row);
}

// A field the tagger made up says so; one whose blank cells it filled says that some of its values are predicted.
function groupLabel(name, predicted, filled) {
  if (predicted) return el("span", { class: "label", title: "predicted by vitrine from the product photos: the catalog has no such column" },
    name, el("span", { class: "predicted" }, " (predicted)"));
  if (filled) return el("span", { class: "label", title: `${filled} product${filled === 1 ? "" : "s"} had no ${name} in the catalog: vitrine predicted it from the photos` },
    name, el("span", { class: "predicted" }, " (partly predicted)"));
  return el("span", { class: "label" }, name);
}

// A phone scrolls each chip row sideways (a desktop wraps it): a fade at a cut edge says there is more that way.
function markOverflow(row) {
  row.classList.toggle("more-right", row.scrollLeft + row.clientWidth < row.scrollWidth - 1);
  row.classList.toggle("more-left", row.scrollLeft > 1);
}

function markAllOverflow() {
  document.querySelectorAll(".chip-row").forEach(markOverflow);
}

async function openMore(name) {
  const group = [...document.querySelectorAll(".chip-group")].find((g) => g.dataset.field === name);  // any column name, quotes too
  let values;
  try { values = (await api(`/attributes?field=${encodeURIComponent(name)}&per_field=5000`)).fields[name]; } catch (error) { setStatus(error.message, true); return; }
  const listId = `values-${name.replace(/[^A-Za-z0-9_-]/g, "_")}`;  // an id holds no spaces
  const input = el("input", { type: "search", class: "type-ahead", list: listId, placeholder: `any ${name}…`, "aria-label": `${name} value`, dataset: { typeahead: name } });
  const pick = () => {
    const value = values.find((v) => v.value.toLowerCase() === input.value.trim().toLowerCase());
    // adds, never toggles: Enter and the change event that follows it must not undo each other
    if (value && !(state.filters[name] && state.filters[name].has(value.value))) toggleFilter(name, value.value);
  };
  input.addEventListener("change", pick);
  input.addEventListener("keydown", (event) => { if (event.key === "Enter") { event.preventDefault(); pick(); } });
  const list = el("datalist", { id: listId }, ...values.map(({ value, count }) => el("option", { value }, `${count}`)));
  group.querySelector("[data-more]").replaceWith(input, list);
  markOverflow(group.querySelector(".chip-row"));
  input.focus();
}

function renderActive() {
  const items = Object.entries(state.filters).flatMap(([name, values]) => [...values].map((value) =>
    el("button", { type: "button", class: "chip", "aria-pressed": "true", dataset: { active: `${name}=${value}` }, onclick: () => toggleFilter(name, value) }, `${fieldLabel(name)}: ${value} ×`)));
  $("active-list").replaceChildren(...items);
  $("active-filters").hidden = items.length === 0;
}

function toggleFilter(field, value) {
  const values = state.filters[field] || (state.filters[field] = new Set());
  if (values.has(value)) values.delete(value); else values.add(value);
  if (!values.size) delete state.filters[field];
  renderChips();
  if (hasQuery()) runSearch();
}

function clearAll() {
  state.filters = {};
  renderChips();
  if (hasQuery()) runSearch(); else setNotice();
}

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.text = $("search-input").value.trim();
  state.file = null; state.imageUrl = null; state.modification = "";
  $("reference").hidden = true;
  runSearch();
});
$("mode-select").addEventListener("change", (event) => { state.mode = event.target.value; if (hasQuery()) runSearch(); });
$("modify-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.modification = $("modification-input").value.trim();
  runSearch();
});
$("more-results").addEventListener("click", () => runSearch(true));
$("clear-all").addEventListener("click", clearAll);
$("clear-reference").addEventListener("click", clearReference);
$("close-details").addEventListener("click", closeDetails);
window.addEventListener("resize", markAllOverflow);
$("file-input").addEventListener("change", (event) => useFile(event.target.files[0]));
const zone = $("drop-zone");
zone.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") $("file-input").click(); });
zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (event) => { event.preventDefault(); zone.classList.remove("over"); useFile(event.dataTransfer.files[0]); });
loadChips();
