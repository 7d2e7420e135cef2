"use strict";
// The drawing pad is white ink on black, like MNIST itself; the server's preprocessing crops,
// scales and centres it exactly as it does for photos (`digitlab predict`). Every drawing goes to
// POST /api/explain, whose answer feeds both the prediction card and the network view (network.js);
// with "Compare with", the same picture also goes to a second served model, shown in its own view.

const DEBOUNCE_MS = 150;
const pad = document.getElementById("pad");
const pen = pad.getContext("2d");
const seen = document.getElementById("seen").getContext("2d");
const labelOut = document.getElementById("label");
const confidenceOut = document.getElementById("confidence");
const sourceOut = document.getElementById("source");
const statusOut = document.getElementById("status");
const barsBox = document.getElementById("bars");
const upload = document.getElementById("upload");
const camera = document.getElementById("camera");

let classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
let bars = [];
let stroking = null; // the pointerId drawing now (a second finger is ignored), or null
let last = null;
let hasInk = false;
let showingUpload = false;
let timer = null;
let latest = 0; // number of the newest request; older answers are dropped
let shownPhoto = null; // where an uploaded photo sits on the pad: a promise of {scale, left, top}, or null
let lastSent = null; // the newest picture's request (url -> fetch promise) and its source, to ask again
let views = []; // one NetworkView per shown model: the chosen one, then the compared one
const modelPick = document.getElementById("model");
const comparePick = document.getElementById("compare");
const viewsBox = document.getElementById("views");

function buildBars() {
  barsBox.replaceChildren();
  bars = classes.map((name) => {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.innerHTML = '<span class="value"></span><span class="track"><span class="fill"></span></span><span class="name"></span>';
    bar.querySelector(".name").textContent = name;
    barsBox.append(bar);
    return bar;
  });
}

function resetResult(message) {
  labelOut.textContent = "?";
  labelOut.classList.add("empty");
  confidenceOut.textContent = message;
  sourceOut.textContent = "";
  for (const bar of bars) {
    bar.classList.remove("top");
    bar.querySelector(".fill").style.height = "0%";
    bar.querySelector(".value").textContent = "";
  }
  seen.clearRect(0, 0, 28, 28);
  for (const view of views) view.clear();
}

function clearPad() {
  pen.fillStyle = "#000";
  pen.fillRect(0, 0, pad.width, pad.height);
  hasInk = false;
  showingUpload = false;
  shownPhoto = null;
  delete pad.dataset.box;
  clearTimeout(timer);
  timer = null;
  latest += 1;
  lastSent = null;
  setStatus("");
  resetResult("draw a digit");
}

function setStatus(text, isError = false) {
  statusOut.textContent = text;
  statusOut.classList.toggle("error", isError);
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
  if (showingUpload) clearPad();
  pad.setPointerCapture(event.pointerId);
  stroking = event.pointerId;
  pen.strokeStyle = "#fff";
  pen.lineWidth = pad.width / 14; // MNIST strokes are about 1/10 of the digit's height
  pen.lineCap = "round";
  pen.lineJoin = "round";
  last = padPoint(event);
  strokeTo({ x: last.x + 0.01, y: last.y }); // a dot for a tap
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

// Ask at most every DEBOUNCE_MS while the pen moves, and once more when it lifts.
function schedule() {
  if (timer === null) timer = setTimeout(() => { timer = null; predictPad(); }, DEBOUNCE_MS);
}

function predictPad() {
  if (!hasInk) return;
  const body = JSON.stringify({ image: pad.toDataURL("image/png"), name: "drawing" });
  send((url) => fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body }), "your drawing");
}

function predictFile(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  shownPhoto = showUpload(file);
  send((url) => fetch(url, { method: "POST", body: form }), file.name);
}

// Draw the photo into the pad (EXIF rotation applied, as the server applies it); resolves to where it went.
async function showUpload(file) {
  clearTimeout(timer);
  timer = null;
  hasInk = false;
  showingUpload = true;
  delete pad.dataset.box;
  pen.fillStyle = "#000";
  pen.fillRect(0, 0, pad.width, pad.height);
  try {
    const picture = await createImageBitmap(file, { imageOrientation: "from-image" });
    const scale = Math.min(pad.width / picture.width, pad.height / picture.height);
    const width = picture.width * scale, height = picture.height * scale;
    const place = { scale, left: (pad.width - width) / 2, top: (pad.height - height) / 2 };
    pen.drawImage(picture, place.left, place.top, width, height);
    return place;
  } catch {
    return null; // a format the browser cannot draw (HEIC or TIFF, say): the server may still read it
  }
}

// Outline, on the photo in the pad, the box (x0, y0, x1, y1 in the photo's pixels) where the server found the ink.
async function drawBox(box, photo) {
  const place = await photo;
  if (!place || photo !== shownPhoto) return;
  const [x0, y0, x1, y1] = box.map((value, index) => value * place.scale + (index % 2 ? place.top : place.left));
  pen.strokeStyle = "#f59e0b";
  pen.lineWidth = 3;
  pen.strokeRect(x0 - 2, y0 - 2, x1 - x0 + 4, y1 - y0 + 4);
  pad.dataset.box = box.join(",");
}

async function send(request, source) {
  const number = ++latest;
  lastSent = { request, source };
  setStatus("thinking…");
  if (views[1]) compareWith(views[1], request, number);
  let answer, response;
  try {
    response = await request(route(views[0]));
    answer = await response.json();
  } catch (error) {
    if (number === latest) setStatus(`The server did not answer (${error.message}).`, true);
    return;
  }
  if (number !== latest) return;
  if (!response.ok) {
    resetResult("no prediction");
    setStatus(answer.error || `HTTP ${response.status}`, true);
    return;
  }
  show(answer, source);
  if (views[0]) {
    if ("layers" in answer) views[0].show(answer);
    else views[0].clear("a whole number is read without the network view");
  }
  setStatus("");
}

// The same picture, for the compared model's own view.
async function compareWith(view, request, number) {
  if (numberMode.checked) return view.clear("numbers are read by the chosen model only");
  try {
    const response = await request(route(view));
    const answer = await response.json();
    if (number !== latest) return;
    if (response.ok) view.show(answer);
    else view.clear(answer.error || `HTTP ${response.status}`);
  } catch (error) {
    if (number === latest) view.clear(`The server did not answer (${error.message}).`);
  }
}

function askAgain() {
  if (lastSent) send(lastSent.request, lastSent.source);
}

// "Read a number": the picture goes to /api/number, which reads several digits left to right
const numberMode = document.getElementById("number-mode");
numberMode.addEventListener("change", schedule);

function route(view) {
  const model = view ? `?model=${encodeURIComponent(view.model)}` : "";
  if (numberMode.checked) return `api/number${model}`;
  const target = view && view.target !== null ? `&target=${encodeURIComponent(classes[view.target])}` : "";
  return `api/explain${model}${target}`;
}

function showNumber(answer, source) {
  labelOut.textContent = answer.number;
  labelOut.classList.remove("empty");
  confidenceOut.textContent = answer.digits.map((digit) => `${digit.label} ${(digit.confidence * 100).toFixed(1)}%`).join(", ");
  sourceOut.textContent = `from ${source}`;
}

function show(answer, source) {
  if ("number" in answer) return showNumber(answer, source);
  // A rejected picture keeps its bars (what the model would have said) but gets no label.
  labelOut.textContent = answer.rejected ? "?" : answer.label;
  labelOut.classList.toggle("empty", Boolean(answer.rejected));
  confidenceOut.textContent = answer.rejected
    ? (answer.reason || "").startsWith("not one digit")
      ? "several digits? tick Read a number"
      : "this does not look like a digit"
    : `${answer.confidence > 0.999 ? ">99.9" : (answer.confidence * 100).toFixed(1)}% sure`;
  sourceOut.textContent = `from ${source}`;
  answer.probabilities.forEach((p, index) => {
    const bar = bars[index];
    bar.classList.toggle("top", index === answer.index);
    bar.querySelector(".fill").style.height = `${(p * 100).toFixed(1)}%`;
    bar.querySelector(".value").textContent = `${Math.round(p * 100)}%`;
    bar.title = `${classes[index]}: ${(p * 100).toFixed(2)}%`;
  });
  const pixels = seen.createImageData(28, 28);
  answer.image.flat().forEach((level, index) => {
    pixels.data.set([level, level, level, 255], index * 4);
  });
  seen.putImageData(pixels, 0, 0);
  if (showingUpload && answer.box) drawBox(answer.box, shownPhoto);
}

// The served models fill the two pickers; the page starts with the server's default model.
async function loadModels() {
  try {
    const response = await fetch("api/models");
    const listed = await response.json();
    if (!response.ok) throw new Error(listed.error || `HTTP ${response.status}`);
    for (const model of listed.models) {
      modelPick.append(new Option(`${model.name} (${model.model})`, model.name, model.name === listed.default));
      comparePick.append(new Option(`${model.name} (${model.model})`, model.name));
    }
    document.getElementById("pickers").hidden = false;
  } catch (error) {
    setStatus(`The list of models is unavailable (${error.message}).`, true);
  }
  await chooseModels();
}

async function chooseModels() {
  for (const view of views) view.remove();
  await loadModelInfo(modelPick.value);
  const shown = [modelPick.value, comparePick.value].filter((name, index) => name && (index === 0 || name !== modelPick.value));
  views = shown.map((name) => new NetworkView(viewsBox, name, classes, askAgain));
  viewsBox.classList.toggle("two", views.length === 2);
  askAgain();
}
modelPick.addEventListener("change", chooseModels);
comparePick.addEventListener("change", chooseModels);

async function loadModelInfo(model) {
  const info = document.getElementById("model-info");
  try {
    const response = await fetch(model ? `api/model?model=${encodeURIComponent(model)}` : "api/model");
    const about = await response.json();
    if (!response.ok) throw new Error(about.error || `HTTP ${response.status}`);
    const sameCount = about.classes.length === classes.length;
    classes = about.classes;
    if (sameCount) classes.forEach((name, index) => { bars[index].querySelector(".name").textContent = name; });
    else buildBars();
    const accuracy = about.test_accuracy == null ? "test accuracy unknown" : `${(about.test_accuracy * 100).toFixed(2)}% test accuracy`;
    const facts = [about.model, `${about.parameters.toLocaleString("en-US")} parameters`, accuracy, `trained on ${about.dataset}`];
    info.replaceChildren(...facts.flatMap((text, index) => {
      const fact = document.createElement(index === 0 ? "strong" : "span");
      fact.textContent = text;
      return index === 0 ? [fact] : ["\u00a0· ", fact]; // a line may break after a dot, never inside a fact
    }));
    info.title = about.run ? `run ${about.run}` : "";
  } catch (error) {
    info.textContent = `model information unavailable (${error.message})`;
  }
}

pad.addEventListener("pointerdown", startStroke);
pad.addEventListener("pointermove", moveStroke);
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);
pad.addEventListener("lostpointercapture", endStroke);
document.getElementById("clear").addEventListener("click", clearPad);
for (const input of [upload, camera]) {
  input.addEventListener("change", () => {
    if (input.files.length) predictFile(input.files[0]);
    input.value = "";
  });
}
// A desktop's ways in: a photo dropped anywhere on the page, or pasted from the clipboard.
document.addEventListener("dragover", (event) => {
  if (event.dataTransfer.types.includes("Files")) event.preventDefault();
});
document.addEventListener("drop", (event) => {
  const file = Array.from(event.dataTransfer.files).find((item) => item.type.startsWith("image/") || !item.type);
  if (!file) return;
  event.preventDefault();
  predictFile(file);
});
document.addEventListener("paste", (event) => {
  const file = Array.from(event.clipboardData.files).find((item) => item.type.startsWith("image/"));
  if (!file) return;
  event.preventDefault();
  predictFile(file.name ? file : new File([file], "pasted image", { type: file.type }));
});

buildBars();
clearPad();
loadModels();
