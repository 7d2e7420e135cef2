"use strict";
// The network view: one card per shown model, drawn from an answer of POST /api/explain and the
// first-layer weights of GET /api/weights. Feature maps and weights arrive as integers q in
// [-255, 255] with one `limit` per array (value = q / 255 * limit); app.js owns the requests.

const weightsCache = new Map(); // model name -> promise of GET /api/weights's answer (or null)

function fetchWeights(model) {
  if (!weightsCache.has(model)) {
    weightsCache.set(model, fetch(`api/weights?model=${encodeURIComponent(model)}`)
      .then((response) => (response.ok ? response.json() : null))
      .catch(() => null));
  }
  return weightsCache.get(model);
}

// Red for positive, blue for negative, white at zero; `value` in [-1, 1].
function diverging(value) {
  const v = Math.max(-1, Math.min(1, value));
  return v >= 0 ? [255, 255 * (1 - v), 255 * (1 - v)] : [255 * (1 + v), 255 * (1 + v), 255];
}

// Black to amber for activations in [0, 1].
function glow(value) {
  const v = Math.max(0, Math.min(1, value));
  return [255 * Math.min(1, 1.6 * v), 200 * v * v, 40 * v];
}

// Paint a rows × columns array of values into `canvas` (resized to fit) with `colour(value)`.
function paint(canvas, grid, colour) {
  const rows = grid.length, columns = grid[0].length;
  canvas.width = columns;
  canvas.height = rows;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(columns, rows);
  grid.forEach((row, y) => row.forEach((value, x) => {
    pixels.data.set([...colour(value), 255], (y * columns + x) * 4);
  }));
  context.putImageData(pixels, 0, 0);
}

const scaled = (grid, limit) => grid.map((row) => row.map((q) => (q / 255) * limit));
const peak = (grid) => Math.max(1e-12, ...grid.flat().map(Math.abs));
// The 98th percentile of |value|: a few extreme pixels would otherwise wash the rest of a saliency map out.
function robustPeak(grid) {
  const sorted = grid.flat().map(Math.abs).sort((a, b) => a - b);
  return Math.max(1e-12, sorted[Math.floor(0.98 * (sorted.length - 1))]);
}

class NetworkView {
  constructor(container, model, classes, onPickClass) {
    this.model = model;
    this.classes = classes;
    this.target = null; // the class whose saliency is shown; null: the predicted one
    this.answer = null;
    this.root = document.getElementById("view-template").content.firstElementChild.cloneNode(true);
    this.root.dataset.model = model;
    this.root.querySelector(".view-name").textContent = model;
    container.append(this.root);
    this.layersBox = this.root.querySelector(".layers");
    this.detail = this.root.querySelector(".detail");
    this.weights = fetchWeights(model);
    const buttons = this.root.querySelector(".why-classes");
    classes.forEach((name, index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = name;
      button.dataset.class = String(index);
      button.title = `why (not) a ${name}?`;
      button.addEventListener("click", () => { this.target = index; onPickClass(this); });
      buttons.append(button);
    });
    this.root.querySelector(".overlay").addEventListener("change", () => this.drawSaliency());
  }

  remove() { this.root.remove(); }

  clear(message = "") {
    this.answer = null;
    delete this.root.dataset.label;
    this.layersBox.replaceChildren();
    this.detail.hidden = true;
    this.root.querySelector(".view-answer").textContent = "";
    this.root.querySelector(".top3").replaceChildren();
    this.root.querySelector(".saliency").getContext("2d").clearRect(0, 0, 28, 28);
    this.root.querySelector(".why-class").textContent = "?";
    this.setStatus(message);
  }

  setStatus(text, isError = false) {
    const status = this.root.querySelector(".view-status");
    status.textContent = text;
    status.classList.toggle("error", isError);
  }

  async show(answer) {
    this.answer = answer;
    this.setStatus("");
    this.root.querySelector(".view-answer").textContent =
      answer.rejected ? "— not a digit" : `— ${answer.label}, ${(answer.confidence * 100).toFixed(1)}%`;
    const top = this.root.querySelector(".top3");
    top.replaceChildren(...answer.top.map((item) => {
      const entry = document.createElement("li");
      entry.textContent = `${item.label}: ${(item.probability * 100).toFixed(1)}%`;
      return entry;
    }));
    this.drawSaliency();
    const weights = await this.weights;
    if (this.answer !== answer) return; // a newer answer arrived while the weights loaded
    this.drawLayers(answer, weights);
    this.root.dataset.label = answer.label; // drawn: tests wait for it
    if (this.hovered) this.showDetail(this.hovered);
  }

  saliency() {
    const found = this.answer.saliency.find((item) => item.index === this.target);
    return found || this.answer.saliency[0];
  }

  // The 28×28 the model saw, in gray, under the attribution map: red pushed towards the class, blue against it.
  drawSaliency() {
    if (!this.answer) return;
    const item = this.saliency();
    const limit = robustPeak(item.values);
    const overlay = this.root.querySelector(".overlay").checked;
    paint(this.root.querySelector(".saliency"), item.values.map((row, y) => row.map((value, x) => [value, this.answer.image[y][x]])),
      ([value, level]) => {
        const [r, g, b] = diverging(value / limit);
        const base = overlay ? (level / 255) * 0.55 * 255 : 0;
        const weight = Math.min(1, Math.abs(value / limit) * 1.5);
        return [base + (r - base) * weight, base + (g - base) * weight, base + (b - base) * weight];
      });
    this.root.querySelector(".why-class").textContent = item.label;
    const sign = item.index === this.answer.index ? "" : (item.total >= 0 ? "(pushed towards it)" : "(pushed away from it)");
    this.root.querySelector(".why-note").textContent = `sum ${item.total.toFixed(2)} ${sign}`;
    this.root.querySelectorAll(".why-classes button").forEach((button) => {
      button.classList.toggle("chosen", Number(button.dataset.class) === item.index);
    });
  }

  drawLayers(answer, weights) {
    const rows = [];
    if (weights && weights.kind === "filters") rows.push(this.filterRow(weights, answer.layers[0]));
    answer.layers.forEach((layer, number) => {
      if (layer.kind === "dense" && number === 0 && weights && weights.kind === "units") rows.push(this.unitRow(layer, weights));
      else if (layer.kind === "dense") rows.push(this.cellRow(layer));
      else rows.push(this.mapRow(layer));
    });
    rows.push(this.outputRow(answer));
    this.layersBox.replaceChildren(...rows);
  }

  row(title) {
    const row = document.createElement("div");
    row.className = "layer";
    const name = document.createElement("h3");
    name.textContent = title;
    const units = document.createElement("div");
    units.className = "units";
    row.append(name, units);
    return [row, units];
  }

  // An MLP's first hidden layer: each unit's 28×28 weight image, framed as bright as the unit is active.
  unitRow(layer, weights) {
    const [row, units] = this.row(`${layer.name}: ${layer.shape[0]} units (their weights; brightness = activation)`);
    layer.values.forEach((q, index) => {
      const unit = this.element("unit", index, (q / 255) * layer.limit, Math.max(0, q / 255));
      const canvas = document.createElement("canvas");
      paint(canvas, weights.values[index], (w) => diverging(w / 255));
      unit.append(canvas);
      units.append(unit);
    });
    return row;
  }

  cellRow(layer) {
    const [row, units] = this.row(`${layer.name}: ${layer.shape[0]} units`);
    layer.values.forEach((q, index) => units.append(this.element("cell", index, (q / 255) * layer.limit, Math.max(0, q / 255))));
    row.classList.add("cells");
    return row;
  }

  // A conv net's first-layer filters, each framed as bright as its feature map is active overall.
  filterRow(weights, firstBlock) {
    const [row, units] = this.row(`first-layer filters: ${weights.shape[0]} × ${weights.shape[1]}×${weights.shape[2]}`);
    weights.values.forEach((kernel, index) => {
      const map = firstBlock ? firstBlock.values[index] : [[0]];
      const mean = map.flat().reduce((sum, q) => sum + q, 0) / map.flat().length / 255;
      const unit = this.element("unit filter", index, mean * (firstBlock ? firstBlock.limit : 0), Math.min(1, 3 * mean));
      const canvas = document.createElement("canvas");
      paint(canvas, kernel, (w) => diverging(w / 255));
      unit.append(canvas);
      units.append(unit);
    });
    return row;
  }

  mapRow(layer) {
    const [row, units] = this.row(`${layer.name}: ${layer.shape[0]} feature maps of ${layer.shape[1]}×${layer.shape[2]}`);
    row.classList.add("maps");
    layer.values.forEach((grid, index) => {
      const canvas = document.createElement("canvas");
      canvas.className = "map";
      canvas.dataset.sum = String(grid.flat().reduce((sum, q) => sum + q, 0));
      canvas.title = `${layer.name}, channel ${index}`;
      canvas.style.width = canvas.style.height = `${Math.max(15, Math.min(28, 3 * layer.shape[1]))}px`;
      paint(canvas, grid, (q) => glow(q / 255));
      units.append(canvas);
    });
    return row;
  }

  outputRow(answer) {
    const [row, units] = this.row("output: probability of each class");
    row.classList.add("cells");
    answer.probabilities.forEach((p, index) => {
      const cell = this.element("cell output", index, p, p);
      cell.textContent = this.classes[index];
      units.append(cell);
    });
    return row;
  }

  element(kind, index, value, brightness) {
    const element = document.createElement("div");
    element.className = kind;
    element.dataset.index = String(index);
    element.dataset.value = value.toFixed(4);
    element.style.setProperty("--on", brightness.toFixed(3));
    element.title = `${kind.split(" ").pop()} ${index}: ${value.toFixed(3)}`;
    if (kind.startsWith("unit")) {
      element.tabIndex = 0;
      const pick = () => { this.hovered = { kind, index }; this.showDetail(this.hovered); };
      element.addEventListener("pointerenter", pick);
      element.addEventListener("focus", pick);
      element.addEventListener("click", pick); // a tap on a phone
    }
    return element;
  }

  // One unit large: its weights, and what it sees of this drawing (input × weight, or its feature map).
  async showDetail({ kind, index }) {
    const weights = await this.weights;
    if (!weights || !this.answer) return;
    const weight = this.detail.querySelector(".detail-weight");
    const seen = this.detail.querySelector(".detail-seen");
    const kernel = scaled(weights.values[index], weights.limit);
    const limit = peak(kernel);
    paint(weight, kernel, (w) => diverging(w / limit));
    const text = this.detail.querySelector(".detail-text");
    if (kind === "unit") {
      const product = kernel.map((row, y) => row.map((w, x) => (w * this.answer.image[y][x]) / 255));
      const most = peak(product);
      paint(seen, product, (v) => diverging(v / most));
      const layer = this.answer.layers[0];
      const activation = (layer.values[index] / 255) * layer.limit;
      const total = product.flat().reduce((sum, v) => sum + v, 0) + (weights.bias ? weights.bias[index] : 0);
      this.detail.querySelector(".detail-weight-caption").textContent = `unit ${index}: weights`;
      this.detail.querySelector(".detail-seen-caption").textContent = "input × weight";
      text.textContent = `activation ${activation.toFixed(3)} ≈ ReLU(Σ input × weight + bias ≈ ${total.toFixed(3)})`;
    } else {
      const map = this.answer.layers[0].values[index];
      paint(seen, map, (q) => glow(q / 255));
      this.detail.querySelector(".detail-weight-caption").textContent = `filter ${index}`;
      this.detail.querySelector(".detail-seen-caption").textContent = "its feature map (block 1)";
      text.textContent = `mean activation ${(map.flat().reduce((s, q) => s + q, 0) / map.flat().length / 255 * this.answer.layers[0].limit).toFixed(3)}`;
    }
    this.detail.dataset.unit = String(index);
    this.detail.hidden = false;
  }
}
