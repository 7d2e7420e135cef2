"use strict";
// The exported page: the pad and one ONNX graph, digitlab's drawing path (ink box, pen width, fit to
// 20 px, centre of mass: digitlab.images.drawing) in front of the model, all in the browser. ONNX Runtime Web is set up from the scripts beside this one (ort-wasm.js, model.js), so
// nothing is fetched: the page works from any static host and from disk.

const DEBOUNCE_MS = 120;
const pad = document.getElementById("pad");
const pen = pad.getContext("2d", { willReadFrequently: true });
const seen = document.getElementById("seen").getContext("2d");
const labelOut = document.getElementById("label");
const confidenceOut = document.getElementById("confidence");
const statusOut = document.getElementById("status");
const barsBox = document.getElementById("bars");
const hiddenBox = document.getElementById("hidden");

// What the tests read: the 28×28 image of the latest prediction, and when the model was ready
// and first answered (ms since navigation started).
const digitlabPage = { lastImage: null, predictions: 0, timings: {} };
let session = null;
let stroking = null;
let last = null;
let hasInk = false;
let timer = null;
let bars = [];
let cells = [];

function base64Bytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

async function gunzip(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function startModel() {
  ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, which neither file:// nor a plain host gives
  ort.env.wasm.proxy = false;
  ort.env.wasm.wasmPaths = { mjs: URL.createObjectURL(new Blob([digitlabRuntime.loader], { type: "text/javascript" })) };
  ort.env.wasm.wasmBinary = await gunzip(base64Bytes(digitlabRuntime.wasmGzipBase64));
  digitlabPage.timings.runtimeUnpacked = performance.now();
  session = await ort.InferenceSession.create(base64Bytes(digitlabModel.onnxBase64), { executionProviders: ["wasm"] });
  digitlabPage.timings.ready = performance.now();
  const accuracy = digitlabModel.testAccuracy == null ? "" : ` · ${(100 * digitlabModel.testAccuracy).toFixed(2)}% test accuracy`;
  document.getElementById("model-info").textContent =
    `${digitlabModel.name} · ${digitlabModel.parameters.toLocaleString("en-US")} parameters${accuracy} · ONNX Runtime Web ${digitlabRuntime.version}`;
  if (hasInk) predictPad();
}

function buildView() {
  bars = digitlabModel.classes.map((name) => {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.innerHTML = '<span class="value"></span><span class="track"><span class="fill"></span></span><span class="name"></span>';
    bar.querySelector(".name").textContent = name;
    barsBox.append(bar);
    return bar;
  });
  cells = digitlabModel.hidden.map((width, index) => {
    const layer = document.createElement("div");
    layer.className = "layer";
    layer.innerHTML = `<div class="layer-name">hidden layer ${index + 1} · ${width} units</div><div class="cells"></div>`;
    const row = Array.from({ length: width }, (_, unit) => {
      const cell = document.createElement("span");
      cell.className = "cell";
      cell.title = `unit ${unit + 1}`;
      layer.querySelector(".cells").append(cell);
      return cell;
    });
    hiddenBox.append(layer);
    return row;
  });
}

function resetResult(message) {
  labelOut.textContent = "?";
  labelOut.classList.add("empty");
  confidenceOut.textContent = message;
  for (const bar of bars) {
    bar.classList.remove("top");
    bar.querySelector(".fill").style.height = "0%";
    bar.querySelector(".value").textContent = "";
  }
  for (const cell of cells.flat()) { cell.style.background = ""; cell.dataset.value = ""; }
  seen.clearRect(0, 0, 28, 28);
  digitlabPage.lastImage = null;
}

function clearPad() {
  pen.fillStyle = "#000";
  pen.fillRect(0, 0, pad.width, pad.height);
  hasInk = false;
  clearTimeout(timer);
  timer = null;
  statusOut.textContent = "";
  resetResult("draw a digit");
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return { x: (event.clientX - box.left) * (pad.width / box.width), y: (event.clientY - box.top) * (pad.height / box.height) };
}

function strokeTo(point) {
  pen.beginPath();
  pen.moveTo(last.x, last.y);
  pen.lineTo(point.x, point.y);
  pen.stroke();
  last = point;
  hasInk = true;
}

function startStroke(event) {
  if (event.button !== 0 || stroking !== null) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  stroking = event.pointerId;
  pen.strokeStyle = "#fff";
  pen.lineWidth = pad.width / 14; // the served page's pen, so both pages see the same drawings
  pen.lineCap = "round";
  pen.lineJoin = "round";
  last = padPoint(event);
  strokeTo({ x: last.x + 0.01, y: last.y });
  schedule();
}

function moveStroke(event) {
  if (event.pointerId !== stroking) return;
  event.preventDefault();
  const points = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const point of points.length ? points : [event]) strokeTo(padPoint(point));
  schedule();
}

function endStroke(event) {
  if (event.pointerId !== stroking) return;
  stroking = null;
  clearTimeout(timer);
  timer = null;
  predictPad();
}

function schedule() {
  if (timer === null) timer = setTimeout(() => { timer = null; predictPad(); }, DEBOUNCE_MS);
}

let running = false;
let again = false;
digitlabPage.idle = () => !running && !again && timer === null && stroking === null;

async function predictPad() {
  if (!hasInk || !session) return;
  if (running) { again = true; return; } // one inference at a time; the newest drawing goes next
  running = true;
  try {
    const started = performance.now();
    const pixels = pen.getImageData(0, 0, pad.width, pad.height).data;
    const gray = new Float32Array(pad.width * pad.height); // the pad is gray: its red channel is its gray level
    for (let i = 0; i < gray.length; i++) gray[i] = pixels[4 * i];
    const outputs = await session.run({ pad: new ort.Tensor("float32", gray, [1, 1, pad.height, pad.width]) });
    const image = Uint8Array.from(outputs.image.data);
    digitlabPage.timings.lastRunMs = performance.now() - started;
    if (!image.some((value) => value > 0)) {
      resetResult("no ink found: draw a digit");
      return;
    }
    show(image, outputs);
  } catch (error) {
    statusOut.textContent = `prediction failed: ${error.message || error}`;
    statusOut.classList.add("error");
  } finally {
    running = false;
    if (again) { again = false; predictPad(); }
  }
}

function show(image, outputs) {
  const logits = Array.from(outputs.logits.data), top = Math.max(...logits);
  const exps = logits.map((value) => Math.exp(value - top)), total = exps.reduce((a, b) => a + b, 0);
  const probabilities = exps.map((value) => value / total);
  const best = probabilities.indexOf(Math.max(...probabilities));
  labelOut.textContent = digitlabModel.classes[best];
  labelOut.classList.remove("empty");
  confidenceOut.textContent = `${(100 * probabilities[best]).toFixed(1)}% sure`;
  bars.forEach((bar, index) => {
    bar.classList.toggle("top", index === best);
    bar.querySelector(".fill").style.height = `${(100 * probabilities[index]).toFixed(1)}%`;
    bar.querySelector(".value").textContent = probabilities[index] >= 0.01 ? `${Math.round(100 * probabilities[index])}` : "";
  });
  cells.forEach((row, layer) => {
    const values = Array.from(outputs[`hidden${layer}`].data), most = Math.max(...values, 1e-6);
    row.forEach((cell, unit) => {
      const level = Math.round(255 * values[unit] / most); // brightness: the unit's activation, relative to the layer's strongest
      cell.style.background = `rgb(${level} ${level} ${level})`;
      cell.dataset.value = values[unit].toFixed(4);
    });
  });
  const picture = seen.createImageData(28, 28);
  image.forEach((value, i) => { picture.data.set([value, value, value, 255], 4 * i); });
  seen.putImageData(picture, 0, 0);
  digitlabPage.lastImage = Array.from(image);
  digitlabPage.predictions += 1;
  if (digitlabPage.timings.firstPrediction === undefined) digitlabPage.timings.firstPrediction = performance.now();
}

buildView();
clearPad();
pad.addEventListener("pointerdown", startStroke);
pad.addEventListener("pointermove", moveStroke);
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);
document.getElementById("clear").addEventListener("click", clearPad);
startModel().catch((error) => {
  statusOut.textContent = `the model could not start: ${error.message || error}`;
  statusOut.classList.add("error");
  console.error(error);
});
