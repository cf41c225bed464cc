// vitrine web UI: text search, image search, "more like this" with a modification, filter chips, tags on click.
"use strict";

const $ = (id) => document.getElementById(id);
const CHIP_FIELDS = ["gender", "articleType", "baseColour", "usage", "season", "masterCategory", "subCategory"];
const CHIPS_PER_FIELD = 8;
const state = { text: "", file: null, imageUrl: null, modification: "", filters: {} };

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

async function api(path, options) {
  const response = await fetch(path, options);
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new Error(body && body.error ? body.error.message : `HTTP ${response.status}`);
  return body;
}

async function runSearch() {
  const form = new FormData();
  if (state.file) form.append("image", state.file);
  else if (state.imageUrl) form.append("image_url", state.imageUrl);
  const hasImage = Boolean(state.file || state.imageUrl);
  if (!hasImage && !state.text) { setStatus("Type a query or drop an image."); return; }
  if (hasImage && state.modification) form.append("modification", state.modification);
  if (!hasImage) form.append("text", state.text);
  form.append("k", "24");
  for (const [field, values] of Object.entries(state.filters)) for (const value of values) form.append("filter", `${field}=${value}`);
  setStatus("Searching…");
  try {
    const body = await api("/search", { method: "POST", body: form });
    renderResults(body.results);
    const what = body.query.kind === "composed" ? `image + "${body.query.modification}"` : body.query.kind === "image" ? "image" : `"${body.query.text}"`;
    setStatus(`${body.results.length} results for ${what} in ${body.took_ms} ms`);
    document.body.dataset.queryKind = body.query.kind;
  } catch (error) {
    renderResults([]);
    setStatus(error.message, true);
  }
}

function renderResults(results) {
  const grid = $("results");
  grid.replaceChildren(...results.map((hit) => el("button", {
    class: "card", type: "button", dataset: { id: hit.id, testid: "result" }, title: hit.title || hit.id,
    onclick: () => { useAsReference(hit); showDetails(hit.id); },
  },
    el("img", { src: hit.image_url, alt: hit.title || hit.id, loading: "lazy" }),
    el("div", { class: "meta" }, el("div", { class: "title" }, hit.title || hit.id), el("div", { class: "score" }, `score ${hit.score.toFixed(3)}`)),
  )));
}

function useAsReference(hit) {
  state.file = null;
  state.imageUrl = hit.image_url;
  showReference(hit.image_url, `More like “${hit.title || hit.id}”`);
  runSearch();
}

function useFile(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) { setStatus(`${file.name} is not an image`, true); return; }
  state.file = file;
  state.imageUrl = null;
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
  if (state.text) runSearch(); else { renderResults([]); setStatus(""); }
}

async function showDetails(id) {
  try {
    const product = await api(`/products/${encodeURIComponent(id)}`);
    $("details-image").src = product.image_url;
    $("details-title").textContent = product.title || product.id;
    $("details-id").textContent = `id ${product.id}`;
    const rows = (map) => Object.entries(map).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]);
    $("details-tags").replaceChildren(...(Object.keys(product.tags).length ? rows(product.tags) : [el("dd", {}, "none stored")]));
    $("details-attributes").replaceChildren(...rows(product.attributes));
    $("details").hidden = false;
  } catch (error) {
    setStatus(error.message, true);
  }
}

async function loadChips() {
  let fields;
  try { fields = (await api(`/attributes?per_field=${CHIPS_PER_FIELD}`)).fields; } catch (error) { setStatus(error.message, true); return; }
  const groups = CHIP_FIELDS.filter((name) => fields[name] && fields[name].length > 1).map((name) => el("div", { class: "chip-group" },
    el("span", {}, name),
    ...fields[name].map(({ value, count }) => el("button", {
      class: "chip", type: "button", "aria-pressed": "false", dataset: { field: name, value }, title: `${count} products`,
      onclick: (event) => toggleFilter(event.currentTarget, name, value),
    }, value)),
  ));
  $("chips").replaceChildren(...groups);
}

function toggleFilter(chip, field, value) {
  const values = state.filters[field] || (state.filters[field] = new Set());
  if (values.has(value)) values.delete(value); else values.add(value);
  if (!values.size) delete state.filters[field];
  chip.setAttribute("aria-pressed", String(values.has(value)));
  if (state.text || state.file || state.imageUrl) runSearch();
}

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.text = $("search-input").value.trim();
  state.file = null; state.imageUrl = null; state.modification = "";
  $("reference").hidden = true;
  runSearch();
});
$("modify-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.modification = $("modification-input").value.trim();
  runSearch();
});
$("clear-reference").addEventListener("click", clearReference);
$("close-details").addEventListener("click", () => { $("details").hidden = true; });
$("file-input").addEventListener("change", (event) => useFile(event.target.files[0]));
const zone = $("drop-zone");
zone.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") $("file-input").click(); });
zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (event) => { event.preventDefault(); zone.classList.remove("over"); useFile(event.dataTransfer.files[0]); });
loadChips();
