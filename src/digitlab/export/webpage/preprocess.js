"use strict";
// digitlab's preprocessing (digitlab/preprocess.py and digitlab/ink.py) for a drawing on the pad,
// step for step, so the browser feeds the model the 28×28 image Python would. Pillow's resampling
// and SciPy's filters are reproduced with their own arithmetic (double sums, float32 stores), and
// Python's round-half-to-even where Python rounds. Images are {h, w, data} in row-major order.

const digitlabPreprocess = (() => {
  const FIELD = 28, BOX = 20, CENTRE = 14.0, ZOOM = 160;
  const PEN_RANGE = [1.6, 5.0], PEN_TARGET = 2.5, BBOX_INK = 0.25;
  const MIN_CONTRAST = 16.0, NOISE_SIGMAS = 4.0, PAPER_WINDOW = 0.33, SMALL_PICTURE = 64;
  const NEAR = 0.6, LINE_LENGTH = 0.5, LINE_SLENDERNESS = 20, SAMPLE = 40000;
  const f32 = Math.fround;

  class Blank extends Error {}

  const image = (h, w, Type = Float32Array) => ({ h, w, data: new Type(h * w) });
  const roundHalfEven = (x) => {
    const floor = Math.floor(x), diff = x - floor;
    if (diff !== 0.5) return Math.round(x);
    return floor % 2 === 0 ? floor : floor + 1;
  };

  function median32(values) {
    // numpy's median of float32 values: the middle one, or the float32 mean of the middle two
    const sorted = Float32Array.from(values).sort();
    const n = sorted.length, half = n >> 1;
    return n % 2 ? sorted[half] : f32(f32(sorted[half - 1] + sorted[half]) / 2);
  }

  function median64(values) {
    const sorted = Float64Array.from(values).sort();
    const n = sorted.length, half = n >> 1;
    return n % 2 ? sorted[half] : (sorted[half - 1] + sorted[half]) / 2;
  }

  function percentile(values, q) {
    // numpy's default (linear) percentile, with its lerp that counts back from the upper value past the middle
    const sorted = Float64Array.from(values).sort();
    const index = (sorted.length - 1) * (q / 100);
    const below = Math.floor(index), above = Math.min(below + 1, sorted.length - 1), t = index - below;
    const a = sorted[below], b = sorted[above], diff = f32(b - a);
    return t >= 0.5 ? b - diff * (1 - t) : a + diff * t;
  }

  // SciPy's boundary modes: 'reflect' repeats the edge pixel (d c b a | a b c d), 'nearest' extends it.
  const reflectIndex = (i, n) => {
    const period = 2 * n;
    i = ((i % period) + period) % period;
    return i < n ? i : period - 1 - i;
  };
  const nearestIndex = (i, n) => Math.min(Math.max(i, 0), n - 1);

  function lines(img, axis) {
    // views of rows (axis 1) or columns (axis 0) as [start, stride, length] over the flat data
    const out = [];
    if (axis === 1) for (let r = 0; r < img.h; r++) out.push([r * img.w, 1, img.w]);
    else for (let c = 0; c < img.w; c++) out.push([c, img.w, img.h]);
    return out;
  }

  function uniformFilter(img, size, mode = "reflect") {
    // ndimage.uniform_filter: a running mean along axis 0, then axis 1, each pass stored as float32
    const at = mode === "reflect" ? reflectIndex : nearestIndex;
    let current = img;
    for (const axis of [0, 1]) {
      const next = image(img.h, img.w);
      const before = size >> 1, after = size - before - 1;
      const line = new Float64Array(Math.max(img.h, img.w) + size);
      for (const [start, stride, n] of lines(current, axis)) {
        for (let i = -before; i < n + after; i++) line[i + before] = current.data[start + at(i, n) * stride];
        let sum = 0;
        for (let k = 0; k < size; k++) sum += line[k];
        sum /= size;
        next.data[start] = sum;
        for (let i = 1; i < n; i++) {
          sum += (line[i + before + after] - line[i - 1]) / size;
          next.data[start + i * stride] = sum;
        }
      }
      current = next;
    }
    return current;
  }

  function rankFilter(img, size, pick, mode = "nearest") {
    // min or max over a size×size square, separably (exact for a flat square window), with a sliding
    // window that keeps its candidates in a queue: linear in the line's length whatever the size
    const at = mode === "reflect" ? reflectIndex : nearestIndex;
    let current = img;
    for (const axis of [0, 1]) {
      const next = image(img.h, img.w, current.data.constructor);
      const before = size >> 1;
      const padded = new Float64Array(Math.max(img.h, img.w) + size - 1), queue = new Int32Array(padded.length);
      for (const [start, stride, n] of lines(current, axis)) {
        const length = n + size - 1;
        for (let i = 0; i < length; i++) padded[i] = current.data[start + at(i - before, n) * stride];
        let head = 0, tail = 0;
        for (let i = 0; i < length; i++) {
          while (tail > head && pick(padded[queue[tail - 1]], padded[i]) === padded[i]) tail--;
          queue[tail++] = i;
          if (queue[head] <= i - size) head++;
          if (i >= size - 1) next.data[start + (i - size + 1) * stride] = padded[queue[head]];
        }
      }
      current = next;
    }
    return current;
  }

  function medianFilter3(img) {
    const out = image(img.h, img.w), window = new Float64Array(9);
    for (let r = 0; r < img.h; r++) {
      for (let c = 0; c < img.w; c++) {
        let k = 0;
        for (let dr = -1; dr <= 1; dr++)
          for (let dc = -1; dc <= 1; dc++)
            window[k++] = img.data[nearestIndex(r + dr, img.h) * img.w + nearestIndex(c + dc, img.w)];
        window.sort();
        out.data[r * img.w + c] = window[4];
      }
    }
    return out;
  }

  // Pillow's resampling filters (Resample.c) and its separable resize of 32-bit float images.
  const sinc = (x) => (x === 0 ? 1 : Math.sin(x * Math.PI) / (x * Math.PI));
  const FILTERS = {
    box: [0.5, (x) => (x > -0.5 && x <= 0.5 ? 1 : 0)],
    bilinear: [1, (x) => (Math.abs(x) < 1 ? 1 - Math.abs(x) : 0)],
    bicubic: [2, (x) => {
      x = Math.abs(x);
      if (x < 1) return (1.5 * x - 2.5) * x * x + 1;
      return x < 2 ? (((x - 5) * x + 8) * x - 4) * -0.5 : 0;
    }],
    lanczos: [3, (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0)],
  };

  function coefficients(inSize, outSize, filter) {
    const [support0, kernel] = FILTERS[filter];
    const scale = inSize / outSize, filterScale = Math.max(scale, 1), support = support0 * filterScale;
    const step = 1.0 / filterScale;
    const taps = [];
    for (let xx = 0; xx < outSize; xx++) {
      const centre = (xx + 0.5) * scale;
      const xmin = Math.max(Math.trunc(centre - support + 0.5), 0);
      const xmax = Math.min(Math.trunc(centre + support + 0.5), inSize);
      const weights = [];
      let total = 0;
      for (let x = xmin; x < xmax; x++) {
        const weight = kernel((x - centre + 0.5) * step);
        weights.push(weight);
        total += weight;
      }
      taps.push([xmin, weights.map((weight) => (total !== 0 ? weight / total : weight))]);
    }
    return taps;
  }

  function resize(img, outW, outH, filter) {
    if (outW === img.w && outH === img.h) return { h: img.h, w: img.w, data: Float32Array.from(img.data) };
    let current = img;
    if (outW !== img.w) {
      const taps = coefficients(img.w, outW, filter), next = image(img.h, outW);
      for (let r = 0; r < img.h; r++)
        for (let x = 0; x < outW; x++) {
          const [xmin, weights] = taps[x];
          let sum = 0;
          for (let k = 0; k < weights.length; k++) sum += current.data[r * img.w + xmin + k] * weights[k];
          next.data[r * outW + x] = sum;
        }
      current = next;
    }
    if (outH !== img.h) {
      const taps = coefficients(img.h, outH, filter), next = image(outH, outW);
      for (let y = 0; y < outH; y++) {
        const [ymin, weights] = taps[y];
        for (let c = 0; c < outW; c++) {
          let sum = 0;
          for (let k = 0; k < weights.length; k++) sum += current.data[(ymin + k) * outW + c] * weights[k];
          next.data[y * outW + c] = sum;
        }
      }
      current = next;
    }
    return current;
  }

  function reduce(img, factor) {
    // Image.reduce: the mean of each factor×factor block (the last, partial blocks over what they hold)
    const outH = Math.ceil(img.h / factor), outW = Math.ceil(img.w / factor), out = image(outH, outW);
    for (let y = 0; y < outH; y++)
      for (let x = 0; x < outW; x++) {
        let sum = 0, count = 0;
        for (let r = y * factor; r < Math.min((y + 1) * factor, img.h); r++)
          for (let c = x * factor; c < Math.min((x + 1) * factor, img.w); c++, count++) sum += img.data[r * img.w + c];
        out.data[y * outW + x] = sum / count;
      }
    return out;
  }

  function label(mask, h, w) {
    // ndimage.label with 8-connectivity; labels numbered in raster order of each piece's first pixel
    const labels = new Int32Array(h * w);
    let count = 0;
    const stack = [];
    for (let start = 0; start < h * w; start++) {
      if (!mask[start] || labels[start]) continue;
      labels[start] = ++count;
      stack.push(start);
      while (stack.length) {
        const at = stack.pop(), r = Math.floor(at / w), c = at % w;
        for (let dr = -1; dr <= 1; dr++)
          for (let dc = -1; dc <= 1; dc++) {
            const rr = r + dr, cc = c + dc, next = rr * w + cc;
            if (rr < 0 || rr >= h || cc < 0 || cc >= w || !mask[next] || labels[next]) continue;
            labels[next] = count;
            stack.push(next);
          }
      }
    }
    return { labels, count };
  }

  function findObjects(labels, count, h, w) {
    // the box [top, bottom, left, right) of each label, as ndimage.find_objects
    const boxes = Array.from({ length: count }, () => [h, 0, w, 0]);
    for (let r = 0; r < h; r++)
      for (let c = 0; c < w; c++) {
        const number = labels[r * w + c];
        if (!number) continue;
        const box = boxes[number - 1];
        box[0] = Math.min(box[0], r); box[1] = Math.max(box[1], r + 1);
        box[2] = Math.min(box[2], c); box[3] = Math.max(box[3], c + 1);
      }
    return boxes;
  }

  function distanceTransform(mask, h, w) {
    // ndimage.distance_transform_edt: exact distance from each set pixel to the nearest unset one
    const INF = 1e20, squared = new Float64Array(h * w);
    const line = (get, set, n) => {
      // Felzenszwalb and Huttenlocher's lower envelope of parabolas
      const f = new Float64Array(n), v = new Int32Array(n), z = new Float64Array(n + 1);
      for (let i = 0; i < n; i++) f[i] = get(i);
      let k = 0;
      v[0] = 0; z[0] = -INF; z[1] = INF;
      for (let q = 1; q < n; q++) {
        let s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2 * q - 2 * v[k]);
        while (s <= z[k]) {
          k--;
          s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2 * q - 2 * v[k]);
        }
        k++;
        v[k] = q; z[k] = s; z[k + 1] = INF;
      }
      k = 0;
      for (let q = 0; q < n; q++) {
        while (z[k + 1] < q) k++;
        set(q, (q - v[k]) * (q - v[k]) + f[v[k]]);
      }
    };
    for (let c = 0; c < w; c++)
      line((r) => (mask[r * w + c] ? INF : 0), (r, value) => { squared[r * w + c] = value; }, h);
    for (let r = 0; r < h; r++)
      line((c) => squared[r * w + c], (c, value) => { squared[r * w + c] = value; }, w);
    return squared.map(Math.sqrt);
  }

  function cropToBox(img, top, bottom, left, right) {
    const out = image(bottom - top, right - left, img.data.constructor);
    for (let r = top; r < bottom; r++)
      out.data.set(img.data.subarray(r * img.w + left, r * img.w + right), (r - top) * out.w);
    return out;
  }

  function maskBox(mask, h, w) {
    let top = h, bottom = 0, left = w, right = 0;
    for (let r = 0; r < h; r++)
      for (let c = 0; c < w; c++)
        if (mask[r * w + c]) {
          top = Math.min(top, r); bottom = Math.max(bottom, r + 1);
          left = Math.min(left, c); right = Math.max(right, c + 1);
        }
    return bottom > top ? [top, bottom, left, right] : null;
  }

  function border(img) {
    const frame = Math.max(1, Math.floor(Math.min(img.h, img.w) / 20)), values = [];
    for (let r = 0; r < img.h; r++)
      for (let c = 0; c < img.w; c++)
        if (r < frame || r >= img.h - frame || c < frame || c >= img.w - frame) values.push(img.data[r * img.w + c]);
    // numpy concatenates the strips, so the corners count twice
    for (let r = 0; r < img.h; r++)
      for (let c = 0; c < img.w; c++)
        if ((r < frame || r >= img.h - frame) && (c < frame || c >= img.w - frame)) values.push(img.data[r * img.w + c]);
    return values;
  }

  function sample(values) {
    // ink._sample: the paper's statistics come from about SAMPLE evenly strided pixels (every one on the pad)
    const step = Math.max(1, Math.floor(values.length / SAMPLE));
    if (step === 1) return values;
    const picked = new Float32Array(Math.ceil(values.length / step));
    for (let i = 0; i < picked.length; i++) picked[i] = values[i * step];
    return picked;
  }

  function robustStd(all) {
    const values = sample(all);
    const middle = median32(values), below = new Float32Array(values.length);
    let count = 0;
    for (let i = 0; i < values.length; i++) if (values[i] <= middle) below[count++] = middle - values[i];
    return 1.4826 * median32(below.subarray(0, count));
  }

  function dataMax(data) {
    let most = -Infinity;
    for (let i = 0; i < data.length; i++) if (data[i] > most) most = data[i];
    return most;
  }

  function dataMin(data) {
    let least = Infinity;
    for (let i = 0; i < data.length; i++) if (data[i] < least) least = data[i];
    return least;
  }

  function darkInk(gray) {
    const background = median32(border(gray)), smooth = uniformFilter(gray, 3);
    return background - dataMin(smooth.data) > dataMax(smooth.data) - background;
  }

  function paper(darkness) {
    const factor = Math.max(1, Math.floor(Math.max(darkness.h, darkness.w) / 128));
    let small = factor > 1 ? reduce(darkness, factor) : darkness;
    small = medianFilter3(small);
    const window = Math.max(3, Math.trunc(PAPER_WINDOW * Math.max(small.h, small.w)) | 1);
    let level = rankFilter(rankFilter(small, window, Math.min), window, Math.max);
    level = uniformFilter(level, 3, "nearest");
    if (factor > 1) level = resize(level, darkness.w, darkness.h, "bilinear");
    const top = dataMax(darkness.data);
    return { h: level.h, w: level.w, data: level.data.map((value) => Math.min(value, top)) };
  }

  function findInk(gray, flatten) {
    const dark = darkInk(gray);
    const darkness = { h: gray.h, w: gray.w, data: dark ? gray.data.map((value) => 255 - value) : gray.data };
    let residual;
    if (flatten && Math.min(gray.h, gray.w) > SMALL_PICTURE) {
      const level = paper(darkness);
      residual = { h: gray.h, w: gray.w, data: darkness.data.map((value, i) => value - level.data[i]) };
      if (dark) residual.data = residual.data.map((value, i) => f32(value * f32(255 / Math.max(255 - level.data[i], 16))));
      const middle = median32(sample(residual.data));
      residual.data = residual.data.map((value) => value - middle);
    } else {
      const middle = median32(border(darkness));
      residual = { h: gray.h, w: gray.w, data: darkness.data.map((value) => value - middle) };
    }
    const smooth = uniformFilter(residual, 3);
    const noise = robustStd(smooth.data);
    const innerRows = Math.floor(gray.h / 50), innerCols = Math.floor(gray.w / 50);
    const inside = (r, c) => r >= innerRows && r < gray.h - innerRows && c >= innerCols && c < gray.w - innerCols;
    let reach = -Infinity;
    for (let r = 0; r < gray.h; r++)
      for (let c = 0; c < gray.w; c++) if (inside(r, c)) reach = Math.max(reach, smooth.data[r * gray.w + c]);
    if (reach < Math.max(MIN_CONTRAST, 1.5 * NOISE_SIGMAS * noise)) throw new Blank("no ink found (blank image)");
    const strongAt = f32(Math.max(NOISE_SIGMAS * noise, 0.3 * reach));
    const weakAt = f32(Math.max(0.5 * NOISE_SIGMAS * noise, 0.12 * reach));
    const strong = new Uint8Array(gray.h * gray.w), either = new Uint8Array(gray.h * gray.w);
    for (let i = 0; i < strong.length; i++) {
      strong[i] = smooth.data[i] > strongAt && inside(Math.floor(i / gray.w), i % gray.w) ? 1 : 0;
      either[i] = strong[i] || smooth.data[i] > weakAt ? 1 : 0;
    }
    const shave = f32(2 * robustStd(residual.data));
    const values = { h: gray.h, w: gray.w, data: residual.data.map((value) => Math.max(f32(value - shave), 0)) };
    const { labels, count } = label(either, gray.h, gray.w);
    const seeded = new Uint8Array(count + 1);
    for (let i = 0; i < strong.length; i++) if (strong[i]) seeded[labels[i]] = 1;
    seeded[0] = 0;
    return { values, mask: labels.map((number) => seeded[number]) };
  }

  function transpose(mask, h, w) {
    const out = new Uint8Array(h * w);
    for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) out[c * h + r] = mask[r * w + c];
    return out;
  }

  function horizontalLines(mask, h, w) {
    const length = Math.trunc(LINE_LENGTH * w), found = new Uint8Array(h * w);
    if (length < 20) return found;
    const pool = Math.max(1, Math.floor(length / 24)), pooledW = Math.floor(w / pool), run = Math.floor(length / pool);
    const band = new Uint8Array(h * w);
    for (let r = 0; r < h; r++) {
      const pooled = new Uint8Array(pooledW);
      for (let p = 0; p < pooledW; p++)
        for (let k = 0; k < pool; k++) if (mask[r * w + p * pool + k]) pooled[p] = 1;
      // a binary opening with a 1×run line keeps exactly the runs of at least `run` pooled pixels
      for (let p = 0; p < pooledW; ) {
        if (!pooled[p]) { p++; continue; }
        let end = p;
        while (end < pooledW && pooled[end]) end++;
        if (end - p >= run) for (let q = p; q < end; q++) for (let k = 0; k < pool; k++) band[r * w + q * pool + k] = 1;
        p = end;
      }
      for (let c = pooledW * pool; c < w; c++) band[r * w + c] = pooledW ? band[r * w + pooledW * pool - 1] : 0;
      for (let c = 0; c < w; c++) band[r * w + c] &= mask[r * w + c];
    }
    const { labels, count } = label(band, h, w);
    findObjects(labels, count, h, w).forEach(([top, bottom, left, right], index) => {
      const span = right - left;
      let mass = 0;
      for (let r = top; r < bottom; r++) for (let c = left; c < right; c++) if (labels[r * w + c] === index + 1) mass++;
      const touchesSide = left <= 0.05 * w || right >= 0.95 * w;
      if (!(span >= length && span >= LINE_SLENDERNESS * (mass / span) && touchesSide)) return;
      const crossing = new Uint8Array(span);
      for (let c = left; c < right; c++) {
        const near = (top > 0 && mask[(top - 1) * w + c]) || (bottom < h && mask[bottom * w + c]);
        if (near) for (let d = -1; d <= 1; d++) if (c - left + d >= 0 && c - left + d < span) crossing[c - left + d] = 1;
      }
      for (let r = top; r < bottom; r++)
        for (let c = left; c < right; c++) if (labels[r * w + c] === index + 1 && !crossing[c - left]) found[r * w + c] = 1;
    });
    return found;
  }

  function withoutLines(mask, h, w) {
    const across = horizontalLines(mask, h, w);
    const down = transpose(horizontalLines(transpose(mask, h, w), w, h), w, h);
    return mask.map((value, i) => (value && !across[i] && !down[i] ? 1 : 0));
  }

  function strokes(ink, clean) {
    const { h, w } = ink.values;
    const mask = clean ? withoutLines(ink.mask, h, w) : ink.mask;
    const { labels, count } = label(mask, h, w);
    if (count === 0) throw new Blank("no ink found (blank image)");
    if (!clean) return mask;
    const mass = new Float64Array(count);
    for (let i = 0; i < labels.length; i++) if (labels[i]) mass[labels[i] - 1] += ink.values.data[i];
    const boxes = findObjects(labels, count, h, w);
    let main = 0;
    for (let n = 1; n < count; n++) if (mass[n] > mass[main]) main = n;
    const [mt, mb, ml, mr] = boxes[main], reach = NEAR * Math.max(mb - mt, mr - ml) + 2;
    const keep = boxes.map(([top, bottom, left, right], n) => {
      const gap = Math.max(Math.max(mt - bottom, top - mb, 0), Math.max(ml - right, left - mr, 0));
      return n === main || (mass[n] >= 0.02 * mass[main] && gap <= reach);
    });
    return labels.map((number) => (number && keep[number - 1] ? 1 : 0));
  }

  function digitCrop(ink, keep) {
    const { h, w } = ink.values;
    const [top, bottom, left, right] = maskBox(keep, h, w);
    const crop = cropToBox(ink.values, top, bottom, left, right);
    const kept = cropToBox({ h, w, data: keep }, top, bottom, left, right);
    // a 3×3 binary dilation of the kept pieces within the crop (scipy's border is unset)
    for (let r = 0; r < crop.h; r++)
      for (let c = 0; c < crop.w; c++) {
        let near = false;
        for (let dr = -1; dr <= 1 && !near; dr++)
          for (let dc = -1; dc <= 1; dc++) {
            const rr = r + dr, cc = c + dc;
            if (rr >= 0 && rr < crop.h && cc >= 0 && cc < crop.w && kept.data[rr * crop.w + cc]) near = true;
          }
        if (!near) crop.data[r * crop.w + c] = 0;
      }
    return crop;
  }

  function strokeLevel(crop) {
    const inked = crop.data.filter((value) => value > 0);
    return inked.length ? Math.max(percentile(inked, 90), 1e-6) : 1.0;
  }

  function cropToInk(mask, values) {
    const box = maskBox(mask.data, mask.h, mask.w);
    return cropToBox(values, ...box);
  }

  function fit(ink, filter) {
    const scale = BOX / Math.max(ink.h, ink.w);
    const width = Math.max(1, roundHalfEven(ink.w * scale)), height = Math.max(1, roundHalfEven(ink.h * scale));
    const out = resize(ink, width, height, filter);
    out.data = out.data.map((value) => Math.min(Math.max(value, 0), 1));
    return out;
  }

  const asFloat = (mask) => ({ h: mask.h, w: mask.w, data: Float32Array.from(mask.data) });

  function redraw(crop) {
    const level = strokeLevel(crop);
    const factor = ZOOM / Math.max(crop.h, crop.w);
    const width = Math.max(1, roundHalfEven(crop.w * factor)), height = Math.max(1, roundHalfEven(crop.h * factor));
    const zoomed = resize(crop, width, height, factor > 1 ? "bicubic" : "box");
    const cut = f32(0.5 * level);
    const whole = { h: height, w: width, data: zoomed.data.map((value) => (value > cut ? 1 : 0)) };
    if (!whole.data.some(Boolean)) throw new Blank("no ink found (blank image)");
    const tight = cropToInk(whole, { ...whole, data: Uint8Array.from(whole.data) });
    const perPixel = Math.max(tight.h, tight.w) / BOX;
    const binary = image(tight.h + 2, tight.w + 2, Uint8Array);
    for (let r = 0; r < tight.h; r++) binary.data.set(tight.data.subarray(r * tight.w, (r + 1) * tight.w), (r + 1) * binary.w + 1);
    const inside = { h: binary.h, w: binary.w, data: distanceTransform(binary.data, binary.h, binary.w) };
    const peaks = rankFilter(inside, 3, Math.max, "reflect");
    const ridge = [];
    for (let i = 0; i < binary.data.length; i++) if (binary.data[i] && inside.data[i] >= peaks.data[i]) ridge.push(inside.data[i]);
    const pen = (2 * median64(ridge)) / perPixel;
    if (PEN_RANGE[0] <= pen && pen <= PEN_RANGE[1]) {
      const soft = { h: crop.h, w: crop.w, data: crop.data.map((value) => Math.min(Math.max(f32(value / f32(level)), 0), 1)) };
      const strong = { h: soft.h, w: soft.w, data: soft.data.map((value) => (value > BBOX_INK ? 1 : 0)) };
      return fit(cropToInk(strong, soft), "lanczos");
    }
    let shaped;
    if (pen < PEN_RANGE[0]) {
      const reach = ((PEN_TARGET - pen) / 2) * perPixel;
      const outside = distanceTransform(binary.data.map((value) => 1 - value), binary.h, binary.w);
      shaped = outside.map((distance) => (distance <= reach ? 1 : 0));
    } else {
      const depth = ((pen - PEN_TARGET) / 2) * perPixel;
      const thinned = inside.data.map((distance) => (distance > depth ? 1 : 0));
      shaped = thinned.some(Boolean) ? thinned : Float64Array.from(binary.data);
    }
    const shapedMask = { h: binary.h, w: binary.w, data: Uint8Array.from(shaped) };
    return fit(cropToInk(shapedMask, asFloat(shapedMask)), "box");
  }

  function pairwiseSum(get, start, n, round) {
    // numpy's pairwise summation (8 running sums in blocks of 128), rounding each addition by `round`
    if (n < 8) {
      let sum = -0;
      for (let i = 0; i < n; i++) sum = round(sum + get(start + i));
      return sum;
    }
    if (n <= 128) {
      const r = [0, 1, 2, 3, 4, 5, 6, 7].map((j) => get(start + j));
      let i = 8;
      for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] = round(r[j] + get(start + i + j));
      let sum = round(round(round(r[0] + r[1]) + round(r[2] + r[3])) + round(round(r[4] + r[5]) + round(r[6] + r[7])));
      for (; i < n; i++) sum = round(sum + get(start + i));
      return sum;
    }
    let half = Math.floor(n / 2);
    half -= half % 8;
    return round(pairwiseSum(get, start, half, round) + pairwiseSum(get, start + half, n - half, round));
  }

  function centre(box) {
    // preprocess._centre, with numpy's float32 sums: a tie at half a pixel falls as it falls in Python
    const mass = pairwiseSum((i) => box.data[i], 0, box.h * box.w, f32);
    if (mass <= 0) throw new Blank("no ink found (blank image)");
    const rowSums = Array.from({ length: box.h }, (_, r) => pairwiseSum((c) => box.data[r * box.w + c], 0, box.w, f32));
    const colSums = Array.from({ length: box.w }, (_, c) => pairwiseSum((r) => box.data[r * box.w + c], 0, box.h, f32));
    const same = (x) => x;
    const rowMoment = pairwiseSum((r) => rowSums[r] * r, 0, box.h, same);
    const colMoment = pairwiseSum((c) => colSums[c] * c, 0, box.w, same);
    const top = roundHalfEven(CENTRE - rowMoment / mass), left = roundHalfEven(CENTRE - colMoment / mass);
    const field = image(FIELD, FIELD);
    for (let r = 0; r < box.h; r++)
      for (let c = 0; c < box.w; c++) {
        const rr = r + top, cc = c + left;
        if (rr >= 0 && rr < FIELD && cc >= 0 && cc < FIELD) field.data[rr * FIELD + cc] = box.data[r * box.w + c];
      }
    return field;
  }

  function alreadyMnist(gray) {
    // a 28×28 picture of ink on pure black centred by mass is left as it is (preprocess._already_mnist)
    if (gray.h !== FIELD || gray.w !== FIELD || dataMin(gray.data) > 0 || median32(gray.data) > 0 || dataMax(gray.data) < 128)
      return false;
    let mass = 0, rows = 0, cols = 0;
    gray.data.forEach((value, i) => { mass += value; rows += value * Math.floor(i / FIELD); cols += value * (i % FIELD); });
    return Math.abs(rows / mass - CENTRE) <= 1 && Math.abs(cols / mass - CENTRE) <= 1;
  }

  function grayOf(rgba, h, w) {
    // Pillow's RGB → L: ITU-R 601 weights in 16-bit fixed point
    const gray = image(h, w);
    for (let i = 0; i < h * w; i++)
      gray.data[i] = (rgba[4 * i] * 19595 + rgba[4 * i + 1] * 38470 + rgba[4 * i + 2] * 7471 + 0x8000) >> 16;
    return gray;
  }

  /** RGBA pixels (an opaque drawing) → Uint8Array(784), the 28×28 image digitlab's Python preprocessing makes. */
  function prepare(rgba, h, w, options = { flatten: true, clean: true, stroke: true }) {
    const gray = grayOf(rgba, h, w);
    let field;
    // only a 28×28 picture can be MNIST-like already: the pad's 280×280 drawings skip the check
    const small = h === FIELD && w === FIELD;
    const bright = small && darkInk(gray) ? { ...gray, data: gray.data.map((value) => 255 - value) } : gray;
    if (small && alreadyMnist(bright)) {
      field = { ...bright, data: bright.data.map((value) => value / 255) };
    } else {
      const ink = findInk(gray, options.flatten);
      const crop = digitCrop(ink, strokes(ink, options.clean));
      if (options.stroke) field = centre(redraw(crop));
      else {
        const level = strokeLevel(crop);
        field = centre(fit({ ...crop, data: crop.data.map((value) => f32(value / f32(level))) }, "lanczos"));
      }
    }
    return Uint8Array.from(field.data, (value) => roundHalfEven(f32(Math.min(Math.max(value, 0), 1) * 255)));
  }

  return { prepare, Blank };
})();
