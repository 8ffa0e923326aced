// "Try your voice": record or drop audio, see its spectrogram, hear it, see the model's face.
//
// Everything is done here, with no library: the recording (getUserMedia + an AudioWorklet,
// try_voice_recorder.js), the conversion to a 16-bit PCM mono WAV, the spectrogram (a radix-2
// FFT) and the call of the model, which goes through the server's REST API exactly as any
// client's would: POST /v1/models/<name>:predict {"instances": [{"audio": {"b64": ...}}]}.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  // The model name is put into the page by the server (HTML-escaped); the rest of what the
  // page needs comes from /try_voice/config.json and may change with the version served.
  const MODEL = document.body.dataset.model;
  const DEFAULT_TYPICALITY_WARNING_BELOW = 0.05;
  // Recordings and converted files are sent at the model's own rate: the model resamples
  // everything to 16 kHz anyway, and the request is a third of a 48 kHz one.
  const MODEL_RATE = 16000;
  // The face is shown at least this large, enlarged by a whole factor (square pixels).
  const FACE_MIN_DISPLAY = 320;
  let config = {
    model_name: MODEL,
    predict_url: "/v1/models/" + encodeURIComponent(MODEL) + ":predict",
    version: null, min_speech_seconds: null, max_audio_seconds: null,
    max_request_bytes: null, typicality_warning_below: null,
  };

  // ------------------------------------------------------------------------------------------
  // Messages

  function showStatus(text) {
    $("status").textContent = text || "";
    $("status").hidden = !text;
  }

  // An error in plain words, and (optionally) the exact message it came from.
  function showError(text, detail) {
    $("error-text").textContent = text;
    $("error-detail").textContent = detail || "";
    $("error-detail").hidden = !detail;
    $("error").hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
  }

  // Anything that goes wrong unexpectedly is said on the page too, not only in the console.
  function reportUnexpected(error) {
    showStatus("");
    $("record").disabled = !!recording;
    showError("Something went wrong in the page: " + (error && error.message || error) +
              ". Reload the page and try again.");
    console.warn(error);
  }

  // 1.265 -> "1.27 s", 3 -> "3 s": at most `digits` decimals, no trailing zeros.
  const seconds = (x, digits = 1) => String(+x.toFixed(digits)) + " s";
  // A least amount, rounded up to hundredths (1.265 -> "1.27 s"), and what was found, rounded
  // down: "heard 1.26 s, needs 1.27 s" is never the other way round.
  const atLeast = (x) => seconds(Math.ceil(x * 100 - 1e-6) / 100, 2);
  const atMost = (x) => seconds(Math.floor(x * 100 + 1e-6) / 100, 2);

  // 0.372 -> "37%", 0.032 -> "3.2%": a decimal only where it matters.
  function percent(x) {
    const p = 100 * x;
    return String(p > 0 && p < 10 ? +p.toFixed(1) : Math.round(p)) + "%";
  }

  // ------------------------------------------------------------------------------------------
  // Configuration

  async function loadConfig() {
    try {
      const response = await fetch("/try_voice/config.json", {cache: "no-store"});
      if (!response.ok) return;
      config = Object.assign(config, await response.json());
    } catch (e) {
      return;  // the defaults above; a prediction will say what is wrong with the server
    }
    $("model-version").textContent = config.version ? " (version " + config.version + ")" : "";
    $("predict-url").textContent = "POST " + config.predict_url;
    if (config.min_speech_seconds) {
      let text = "Speak for 3 to 10 seconds, then press Stop: say anything (read a sentence, " +
                 "count to twenty). The model needs at least " +
                 atLeast(config.min_speech_seconds) + " of speech once the silence is " +
                 "removed";
      if (config.max_audio_seconds) text += ", and takes at most " +
                                            seconds(config.max_audio_seconds, 0) + " of audio";
      $("speech-hint").textContent = text + ".";
    }
  }

  // ------------------------------------------------------------------------------------------
  // WAV

  // Float samples in [-1, 1] (mono) -> the bytes of a 16-bit PCM mono WAV file.
  function encodeWav(samples, rate) {
    const bytes = new ArrayBuffer(44 + 2 * samples.length);
    const view = new DataView(bytes);
    const text = (offset, s) => { for (let i = 0; i < s.length; i++) view.setUint8(offset + i, s.charCodeAt(i)); };
    text(0, "RIFF");
    view.setUint32(4, 36 + 2 * samples.length, true);
    text(8, "WAVE");
    text(12, "fmt ");
    view.setUint32(16, 16, true);         // size of the fmt chunk
    view.setUint16(20, 1, true);          // PCM
    view.setUint16(22, 1, true);          // mono
    view.setUint32(24, rate, true);
    view.setUint32(28, rate * 2, true);   // bytes per second
    view.setUint16(32, 2, true);          // bytes per frame
    view.setUint16(34, 16, true);         // bits per sample
    text(36, "data");
    view.setUint32(40, 2 * samples.length, true);
    for (let i = 0; i < samples.length; i++) {
      const x = Math.max(-1, Math.min(1, samples[i]));
      view.setInt16(44 + 2 * i, x < 0 ? Math.round(x * 32768) : Math.round(x * 32767), true);
    }
    return new Uint8Array(bytes);
  }

  function isWav(bytes) {
    const tag = (offset) => String.fromCharCode(...bytes.subarray(offset, offset + 4));
    return bytes.length >= 12 && tag(0) === "RIFF" && tag(8) === "WAVE";
  }

  function toBase64(bytes) {
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(text);
  }

  function mixToMono(buffer) {
    if (buffer.numberOfChannels === 1) return buffer.getChannelData(0);
    const mono = new Float32Array(buffer.length);
    for (let c = 0; c < buffer.numberOfChannels; c++) {
      const channel = buffer.getChannelData(c);
      for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / buffer.numberOfChannels;
    }
    return mono;
  }

  // Any audio the browser can decode -> mono samples at the model's rate (the browser's own
  // resampler). Throws when the browser cannot decode it.
  async function decodeAtModelRate(arrayBuffer) {
    const context = new OfflineAudioContext(1, 1, MODEL_RATE);
    return mixToMono(await context.decodeAudioData(arrayBuffer));
  }

  async function resample(samples, rate, target) {
    if (rate === target || samples.length === 0) return samples;
    const context = new OfflineAudioContext(1, Math.ceil(samples.length * target / rate), target);
    const buffer = context.createBuffer(1, samples.length, rate);
    buffer.copyToChannel(samples, 0);
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(context.destination);
    source.start();
    return (await context.startRendering()).getChannelData(0);
  }

  // ------------------------------------------------------------------------------------------
  // Spectrogram

  const fftTables = new Map();

  // In-place iterative radix-2 FFT of (re, im); n = re.length is a power of two.
  function fft(re, im) {
    const n = re.length;
    let table = fftTables.get(n);
    if (!table) {
      table = {cos: new Float64Array(n / 2), sin: new Float64Array(n / 2), rev: new Uint32Array(n)};
      for (let k = 0; k < n / 2; k++) {
        table.cos[k] = Math.cos(2 * Math.PI * k / n);
        table.sin[k] = -Math.sin(2 * Math.PI * k / n);
      }
      const bits = Math.log2(n);
      for (let i = 0; i < n; i++) {
        let r = 0;
        for (let b = 0; b < bits; b++) r |= ((i >> b) & 1) << (bits - 1 - b);
        table.rev[i] = r;
      }
      fftTables.set(n, table);
    }
    for (let i = 0; i < n; i++) {
      const j = table.rev[i];
      if (j > i) {
        [re[i], re[j]] = [re[j], re[i]];
        [im[i], im[j]] = [im[j], im[i]];
      }
    }
    for (let size = 2; size <= n; size *= 2) {
      const half = size / 2, step = n / size;
      for (let start = 0; start < n; start += size) {
        for (let k = 0; k < half; k++) {
          const wr = table.cos[k * step], wi = table.sin[k * step];
          const a = start + k, b = a + half;
          const tr = re[b] * wr - im[b] * wi, ti = re[b] * wi + im[b] * wr;
          re[b] = re[a] - tr; im[b] = im[a] - ti;
          re[a] += tr; im[a] += ti;
        }
      }
    }
  }

  // Power in dB of Hann-windowed frames of 25 ms every 10 ms (the model's own framing).
  function computeSpectrogram(samples, rate) {
    const length = Math.round(0.025 * rate), hop = Math.round(0.010 * rate);
    let n = 1;
    while (n < length) n *= 2;  // zero-padded to the FFT size
    const frames = Math.max(1, Math.floor((samples.length - length) / hop) + 1);
    const bins = n / 2 + 1;
    const window = new Float64Array(length);
    for (let i = 0; i < length; i++) window[i] = 0.5 - 0.5 * Math.cos(2 * Math.PI * i / (length - 1));
    const db = new Float32Array(frames * bins);
    const re = new Float64Array(n), im = new Float64Array(n);
    let peak = -Infinity;
    for (let f = 0; f < frames; f++) {
      re.fill(0); im.fill(0);
      for (let i = 0; i < length && f * hop + i < samples.length; i++) re[i] = samples[f * hop + i] * window[i];
      fft(re, im);
      for (let k = 0; k < bins; k++) {
        const value = 10 * Math.log10(re[k] * re[k] + im[k] * im[k] + 1e-12);
        db[f * bins + k] = value;
        if (value > peak) peak = value;
      }
    }
    return {db, frames, bins, binHz: rate / n, hopSeconds: hop / rate, peak,
            seconds: samples.length / rate, rate};
  }

  // Black - purple - orange - pale yellow: dark is quiet, bright is loud.
  const COLOUR_STOPS = [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                        [245, 125, 21], [250, 193, 39], [252, 255, 164]];
  const COLOURS = (() => {
    const table = new Uint8Array(256 * 3);
    for (let i = 0; i < 256; i++) {
      const x = i / 255 * (COLOUR_STOPS.length - 1), k = Math.min(Math.floor(x), COLOUR_STOPS.length - 2);
      for (let c = 0; c < 3; c++) {
        table[3 * i + c] = Math.round(COLOUR_STOPS[k][c] + (x - k) * (COLOUR_STOPS[k + 1][c] - COLOUR_STOPS[k][c]));
      }
    }
    return table;
  })();

  // Axis ticks: a step of 1, 2 or 5 times a power of ten giving at most `most` intervals.
  function tickStep(range, most) {
    for (let power = 0.01; ; power *= 10) {
      for (const m of [1, 2, 5]) if (range / (m * power) <= most) return m * power;
    }
  }

  const MARGIN = {left: 52, right: 12, top: 10, bottom: 40};
  const RANGE_DB = 80;
  const TOP_HZ = 8000;

  // Sizes the canvas to its CSS box at the screen's pixel density; -> (context, width, height)
  // in CSS pixels, the context scaled to them.
  function prepareCanvas(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 640, height = canvas.clientHeight || 280;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const context = canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, width, height);
    return {context, width, height, ratio};
  }

  function drawSpectrogram(canvas, spec) {
    const {context, width, height, ratio} = prepareCanvas(canvas);
    const plotW = width - MARGIN.left - MARGIN.right, plotH = height - MARGIN.top - MARGIN.bottom;
    const pixW = Math.max(1, Math.round(plotW * ratio)), pixH = Math.max(1, Math.round(plotH * ratio));
    const topHz = Math.min(TOP_HZ, spec.rate / 2);
    const image = context.createImageData(pixW, pixH);
    const floor = spec.peak - RANGE_DB;
    // Each pixel shows the loudest (frame, bin) it covers: short sounds and single harmonics
    // stay visible when squeezed, and no bins are skipped (which draws false stripes).
    const binFrom = new Int32Array(pixH), binTo = new Int32Array(pixH);
    for (let y = 0; y < pixH; y++) {
      const high = (1 - y / pixH) * topHz / spec.binHz, low = (1 - (y + 1) / pixH) * topHz / spec.binHz;
      binFrom[y] = Math.min(spec.bins - 1, Math.round(low));
      binTo[y] = Math.min(spec.bins, Math.max(binFrom[y] + 1, Math.round(high)));
    }
    for (let x = 0; x < pixW; x++) {
      const f0 = Math.floor(x * spec.frames / pixW);
      const f1 = Math.max(f0 + 1, Math.floor((x + 1) * spec.frames / pixW));
      for (let y = 0; y < pixH; y++) {
        let value = -Infinity;
        for (let f = f0; f < f1; f++) {
          for (let k = binFrom[y]; k < binTo[y]; k++) value = Math.max(value, spec.db[f * spec.bins + k]);
        }
        const level = Math.max(0, Math.min(255, Math.round(255 * (value - floor) / RANGE_DB)));
        const at = 4 * (y * pixW + x);
        image.data[at] = COLOURS[3 * level];
        image.data[at + 1] = COLOURS[3 * level + 1];
        image.data[at + 2] = COLOURS[3 * level + 2];
        image.data[at + 3] = 255;
      }
    }
    context.putImageData(image, Math.round(MARGIN.left * ratio), Math.round(MARGIN.top * ratio));

    // Axes.
    context.strokeStyle = "#666";
    context.fillStyle = "#333";
    context.lineWidth = 1;
    context.font = "12px system-ui, sans-serif";
    context.strokeRect(MARGIN.left - 0.5, MARGIN.top - 0.5, plotW + 1, plotH + 1);
    const timeStep = tickStep(spec.seconds, Math.max(2, Math.floor(plotW / 70)));
    context.textAlign = "center";
    context.textBaseline = "top";
    for (let t = 0; t <= spec.seconds + 1e-9; t += timeStep) {
      const x = MARGIN.left + plotW * t / spec.seconds;
      context.beginPath();
      context.moveTo(x, MARGIN.top + plotH);
      context.lineTo(x, MARGIN.top + plotH + 4);
      context.stroke();
      context.fillText(String(+t.toFixed(2)), x, MARGIN.top + plotH + 6);
    }
    context.fillText("time (s)", MARGIN.left + plotW / 2, MARGIN.top + plotH + 22);
    const freqStep = tickStep(topHz / 1000, Math.max(2, Math.floor(plotH / 28)));
    context.textAlign = "right";
    context.textBaseline = "middle";
    for (let k = 0; k <= topHz / 1000 + 1e-9; k += freqStep) {
      const y = MARGIN.top + plotH * (1 - k * 1000 / topHz);
      context.beginPath();
      context.moveTo(MARGIN.left - 4, y);
      context.lineTo(MARGIN.left, y);
      context.stroke();
      context.fillText(String(+k.toFixed(1)), MARGIN.left - 6, y);
    }
    context.save();
    context.translate(14, MARGIN.top + plotH / 2);
    context.rotate(-Math.PI / 2);
    context.textAlign = "center";
    context.fillText("frequency (kHz)", 0, 0);
    context.restore();
  }

  function drawCanvasMessage(canvas, text) {
    const {context, width, height} = prepareCanvas(canvas);
    context.fillStyle = "#eee";
    context.fillRect(0, 0, width, height);
    context.fillStyle = "#555";
    context.font = "14px system-ui, sans-serif";
    context.textAlign = "center";
    context.textBaseline = "middle";
    context.fillText(text, width / 2, height / 2);
  }

  // ------------------------------------------------------------------------------------------
  // The model's answer

  // A 4xx/5xx answer {"error": ...} -> what it means, in plain words.
  function explain(status, message) {
    const detail = (message || "").replace(/^audio\[0\]:\s*/, "");
    let m;
    if ((m = /too short: ([\d.]+) s of speech.*?at least ([\d.]+) s/.exec(detail))) {
      return "Too little speech: once the silence was removed, the model heard only " +
             atMost(+m[1]) + " of speech, and it needs at least " + atLeast(+m[2]) +
             ". Try again with a few more seconds of speech (3 to 10 seconds is good).";
    }
    if (/no speech found/.test(detail)) {
      return "No speech was found: the audio is silent or too quiet. Check that the right " +
             "microphone is chosen and not muted, and speak closer to it.";
    }
    if ((m = /the audio is ([\d.]+) s long; the maximum is ([\d.]+) s/.exec(detail))) {
      return "Too long: the audio lasts " + seconds(+m[1]) + " and this model takes at most " +
             seconds(+m[2], 0) + ". Use a shorter clip.";
    }
    if (/unsupported sample rate/.test(detail)) {
      return "The model does not take audio at this sample rate. Convert the file (for " +
             "example to 16 kHz) or record with the microphone instead.";
    }
    if (/not a WAV file|cannot be decoded|could not be (read|decoded)|not an audio/i.test(detail)) {
      return "The server could not read this file as audio. Use a WAV file, or record with " +
             "the microphone.";
    }
    if (status === 413) return "The audio is too large for the server to take in one request. Use a shorter clip.";
    if (status === 503) return "The server is busy with other requests. Try again in a moment.";
    if (status === 404) {
      return "The model is not being served yet (no version of it is loaded). Wait a moment " +
             "and try again; the server's log says more.";
    }
    if (status >= 500) return "The server failed while drawing the face: a problem of the server, not of your audio.";
    return "The model could not use this audio.";
  }

  // Shows the PNG; resolves once it is decoded and laid out (false if it cannot be decoded).
  function showFace(pngBase64) {
    const image = $("face");
    let done;
    const shown = new Promise((resolve) => { done = resolve; });
    image.onerror = () => done(false);
    image.onload = () => {
      const size = image.naturalWidth, tall = image.naturalHeight;
      const scale = Math.max(1, Math.ceil(FACE_MIN_DISPLAY / Math.max(size, tall)));
      image.width = size * scale;
      image.height = tall * scale;
      image.classList.toggle("upscaled", scale > 1);
      const caption = $("face-caption");
      caption.textContent = "The model's picture is " + size + " \u00d7 " + tall + " pixels" +
        (scale > 1 ? "; shown " + scale + " times larger (" + size * scale + " px), with " +
                     "square pixels, not smoothed. " : ". ");
      const link = document.createElement("a");
      link.href = image.src;
      link.download = "face.png";
      link.textContent = "Save the picture";
      caption.append(link);
      $("face-waiting").hidden = true;
      $("face-figure").hidden = false;
      done(true);
    };
    image.src = "data:image/png;base64," + pngBase64;
    return shown;
  }

  function showTypicality(value) {
    const box = $("typicality");
    const typicality = Array.isArray(value) ? value[0] : value;
    if (typeof typicality !== "number" || !Number.isFinite(typicality)) {
      box.hidden = true;  // an export without the output: nothing to say
      return;
    }
    const threshold = typeof config.typicality_warning_below === "number"
      ? config.typicality_warning_below : DEFAULT_TYPICALITY_WARNING_BELOW;
    $("typicality-value").textContent = percent(typicality);
    $("typicality-share").textContent = percent(typicality);
    const warning = $("typicality-warning");
    const low = typicality < threshold;
    warning.hidden = !low;
    box.classList.toggle("low", low);
    if (low) {
      warning.textContent = "\u26a0 Unlike the voices this model was trained on (typicality " +
        "below " + percent(threshold) + "): the face is drawn far from anything the model " +
        "learned, so it says little about this voice.";
    }
    box.hidden = false;
  }

  function faceWaiting(text) {
    $("face-figure").hidden = true;
    $("typicality").hidden = true;
    $("face-waiting").textContent = text;
    $("face-waiting").hidden = false;
  }

  let requestCount = 0;

  async function askModel(wav) {
    const request = ++requestCount;  // a later recording supersedes this one's answer
    faceWaiting("The model is drawing\u2026");
    showStatus("Asking the model for a face\u2026");
    let response, answer = null;
    try {
      response = await fetch(config.predict_url, {
        method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({instances: [{audio: {b64: toBase64(wav)}}]}),
      });
      try { answer = await response.json(); } catch (e) { answer = null; }
    } catch (e) {
      if (request !== requestCount) return;
      showStatus("");
      faceWaiting("No face: the server could not be reached.");
      showError("The server could not be reached. Is export/serve.py still running?", String(e));
      return;
    }
    if (request !== requestCount) return;
    showStatus("");
    if (!response.ok) {
      const message = answer && typeof answer.error === "string" ? answer.error : "";
      faceWaiting("No face: see the message above.");
      showError(explain(response.status, message),
                "The server said (HTTP " + response.status + "): " + (message || response.statusText));
      return;
    }
    const prediction = answer && answer.predictions && answer.predictions[0];
    const png = prediction && prediction.image_png_bytes && prediction.image_png_bytes.b64;
    if (!png) {
      faceWaiting("No face in the answer.");
      showError("The server answered without a face (its answer has no image_png_bytes).");
      return;
    }
    if (!(await showFace(png))) {
      faceWaiting("No face: the picture could not be decoded.");
      showError("The server's picture could not be decoded as a PNG.");
      return;
    }
    await loadConfig();  // the version that answered may be new, with a threshold of its own
    if (request !== requestCount) return;
    showTypicality(prediction.voice_typicality);
    // The face (and a typicality warning) may be below the fold: bring the panel into view.
    $("face-panel").scrollIntoView({behavior: "smooth", block: "nearest"});
  }

  // ------------------------------------------------------------------------------------------
  // One piece of audio: show it, then ask the model

  let playbackUrl = null;

  // wav: the bytes sent; samples/rate: what is shown (null when the browser cannot decode it).
  function useAudio({wav, samples, rate, what}) {
    clearError();
    $("results").hidden = false;
    if (playbackUrl) URL.revokeObjectURL(playbackUrl);
    playbackUrl = URL.createObjectURL(new Blob([wav], {type: "audio/wav"}));
    $("playback").src = playbackUrl;
    const kilobytes = Math.round(wav.length / 1024);
    const duration = samples ? ", " + seconds(samples.length / rate, 2) : "";
    $("audio-info").textContent = what + duration + "; " + kilobytes + " KB sent to the model.";
    const canvas = $("spectrogram");
    if (samples && samples.length) {
      drawSpectrogram(canvas, computeSpectrogram(samples, rate));
    } else {
      drawCanvasMessage(canvas, samples ? "The audio is empty."
                                        : "Your browser cannot decode this file: no spectrogram.");
    }
    return askModel(wav);
  }

  // ------------------------------------------------------------------------------------------
  // Files

  async function useFile(file) {
    if (!file) return;
    clearError();
    if (!file.size) {
      showError("The file " + file.name + " is empty.");
      return;
    }
    if (config.max_request_bytes && file.size * 4 / 3 > config.max_request_bytes) {
      showError("The file " + file.name + " is too large (" + Math.round(file.size / 1048576) +
                " MB): this server takes requests up to " +
                Math.round(config.max_request_bytes / 1048576) + " MB. Use a shorter clip.");
      return;
    }
    showStatus("Reading " + file.name + "\u2026");
    const bytes = new Uint8Array(await file.arrayBuffer());
    let samples = null;
    try {
      samples = await decodeAtModelRate(bytes.slice().buffer);  // decoding consumes its buffer
    } catch (e) {
      samples = null;
    }
    let wav = bytes, what = file.name;
    if (isWav(bytes)) {
      what += " (WAV, sent as it is)";
    } else if (samples) {
      // Not a WAV: the decoded audio as a WAV, what the model takes.
      wav = encodeWav(samples, MODEL_RATE);
      what += " (converted in the page to a 16 kHz 16-bit WAV)";
    } else {
      what += " (your browser cannot decode it; sent as it is for the server to convert)";
    }
    await useAudio({wav, samples, rate: MODEL_RATE, what});
  }

  $("file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    event.target.value = "";  // choosing the same file again is a new choice
    useFile(file).catch(reportUnexpected);
  });

  // A file dropped anywhere on the page (not only on the zone) is taken, never opened by the
  // browser in place of the page.
  let dragDepth = 0;
  window.addEventListener("dragenter", (event) => {
    event.preventDefault();
    dragDepth++;
    $("drop").classList.add("over");
  });
  window.addEventListener("dragleave", () => {
    if (--dragDepth <= 0) { dragDepth = 0; $("drop").classList.remove("over"); }
  });
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    dragDepth = 0;
    $("drop").classList.remove("over");
    const files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) useFile(files[0]).catch(reportUnexpected);
  });

  // ------------------------------------------------------------------------------------------
  // Microphone

  let recording = null;

  function microphoneError(error) {
    switch (error && error.name) {
      case "NotAllowedError":
      case "SecurityError":
        return "The browser did not allow the page to use the microphone. Allow it (the " +
               "icon in the address bar) and press Record again, or drop a file instead.";
      case "NotFoundError":
      case "OverconstrainedError":
        return "No microphone was found. Connect one and press Record again, or drop a file.";
      case "NotReadableError":
      case "AbortError":
        return "The microphone could not be opened: another program may be using it.";
      default:
        return "The microphone could not be opened.";
    }
  }

  async function startRecording() {
    clearError();
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showError("The microphone is not available on this page: browsers allow it only on " +
                "https:// pages and on http://127.0.0.1 or http://localhost. Open the page " +
                "there (an SSH tunnel to the server works), or drop a file instead.");
      return;
    }
    if (!window.AudioWorkletNode) {
      showError("This browser cannot record here (it has no AudioWorklet). Drop a file instead.");
      return;
    }
    $("record").disabled = true;
    let stream = null, context = null;
    try {
      // Raw audio: echo cancellation and noise suppression reshape the voice.
      stream = await navigator.mediaDevices.getUserMedia({audio: {
        channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: true}});
      context = new AudioContext();
      await context.audioWorklet.addModule("/try_voice_recorder.js");
      const source = context.createMediaStreamSource(stream);
      const node = new AudioWorkletNode(context, "sf2f-recorder",
                                        {numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1]});
      const state = {stream, context, source, node, blocks: [], frames: 0,
                     rate: context.sampleRate, started: performance.now(), finished: null};
      node.port.onmessage = (event) => {
        const {done, samples} = event.data;
        state.blocks.push(samples);
        state.frames += samples.length;
        if (done) state.finished(); else showLevel(samples);
      };
      source.connect(node);
      // The node outputs silence; connected to the output, it is sure to be run by every browser.
      node.connect(context.destination);
      await context.resume();
      recording = state;
      state.ticker = setInterval(() => tick(state), 100);
      $("level").hidden = false;
      $("stop").disabled = false;
      $("stop").focus();
      tick(state);
    } catch (error) {
      if (stream) stream.getTracks().forEach((track) => track.stop());
      if (context) context.close();
      $("record").disabled = false;
      showError(microphoneError(error), error && (error.name + ": " + error.message));
    }
  }

  function tick(state) {
    const elapsed = (performance.now() - state.started) / 1000;
    $("timer").textContent = "Recording: " + elapsed.toFixed(1) + " s";
    if (config.max_audio_seconds && elapsed >= config.max_audio_seconds - 0.5) {
      stopRecording().catch(reportUnexpected);  // the longest audio the model takes
    }
  }

  function showLevel(samples) {
    let sum = 0;
    for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
    const dbfs = 10 * Math.log10(sum / samples.length + 1e-12);
    // -60 dBFS (silence) .. 0 dBFS (full scale)
    $("level-bar").style.width = Math.max(0, Math.min(100, (dbfs + 60) / 60 * 100)) + "%";
  }

  async function stopRecording() {
    const state = recording;
    if (!state) return;
    recording = null;
    clearInterval(state.ticker);
    $("stop").disabled = true;
    // What the recorder still holds, then the end (or, should the audio thread have stopped
    // answering, what has arrived within a second).
    await new Promise((resolve) => {
      state.finished = resolve;
      state.node.port.postMessage("flush");
      setTimeout(resolve, 1000);
    });
    state.finished = () => {};
    state.source.disconnect();
    state.node.disconnect();
    state.stream.getTracks().forEach((track) => track.stop());
    await state.context.close();
    $("level-bar").style.width = "0";
    $("level").hidden = true;
    $("record").disabled = false;
    const recorded = new Float32Array(state.frames);
    let offset = 0;
    for (const block of state.blocks) { recorded.set(block, offset); offset += block.length; }
    $("timer").textContent = "Recorded " + seconds(recorded.length / state.rate);
    const samples = await resample(recorded, state.rate, MODEL_RATE);
    await useAudio({wav: encodeWav(samples, MODEL_RATE), samples, rate: MODEL_RATE,
                    what: "Your recording (16 kHz 16-bit WAV)"});
  }

  $("record").addEventListener("click", () => startRecording().catch(reportUnexpected));
  $("stop").addEventListener("click", () => stopRecording().catch(reportUnexpected));

  loadConfig();
})();
