/* fooocus-es browser page: plain JS over the public FooocusAPI-compatible API (no build step). */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORAGE = "fooocus-es.apiKey";

  // Fooocus's SDXL aspect ratios (engine/aspect.py ASPECT_RATIOS).
  const ASPECT_RATIOS = [
    "704*1408", "704*1344", "768*1344", "768*1280", "832*1216", "832*1152", "896*1152", "896*1088",
    "960*1088", "960*1024", "1024*1024", "1024*960", "1088*960", "1088*896", "1152*896", "1152*832",
    "1216*832", "1280*768", "1344*768", "1344*704", "1408*704", "1472*704", "1536*640", "1600*640",
    "1664*576", "1728*576",
  ];
  // Fooocus sampler and scheduler names (engine/sampler_names.py); the server rejects unsupported pairs.
  const SAMPLERS = [
    "euler", "euler_ancestral", "heun", "heunpp2", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive",
    "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "tcd", "restart", "ddim", "uni_pc", "uni_pc_bh2",
  ];
  const SCHEDULERS = [
    "normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "lcm", "turbo",
    "align_your_steps", "tcd", "edm_playground_v2.5",
  ];
  const LORA_SLOTS = 5;
  const IMAGE_FIELDS = ["uov_input_image", "inpaint_input_image", "inpaint_mask_image_upload"];

  // Fields the form shows; every other req_params field that differs from FooocusAPI's default goes to
  // the "Other fields" JSON box when a task is copied back into the form.
  const FORM_FIELDS = new Set([
    "prompt", "negative_prompt", "style_selections", "performance_selection", "aspect_ratios_selection",
    "image_number", "image_seed", "preset", "guidance_scale", "sharpness", "sampler_name", "scheduler_name",
    "base_model_name", "refiner_model_name", "vae_name", "output_format", "overwrite_step", "overwrite_width",
    "overwrite_height", "disable_seed_increment", "loras", "uov_method", "uov_input_image", "inpaint_input_image",
    "inpaint_mask_image_upload", "inpaint_additional_prompt", "outpaint_selections",
  ]);
  // Set by the server or by the page itself: never copied back.
  const DERIVED_FIELDS = new Set([
    "current_tab", "input_image_checkbox", "stream_output", "async_process", "require_base64", "webhook_url",
  ]);
  const REQUEST_DEFAULTS = {
    read_wildcards_in_order: false, refiner_switch: 0.5, disable_preview: false, disable_intermediate_results: false,
    black_out_nsfw: false, adm_scaler_positive: 1.5, adm_scaler_negative: 0.8, adm_scaler_end: 0.3, adaptive_cfg: 7.0,
    clip_skip: 2, overwrite_switch: -1, overwrite_vary_strength: -1.0, overwrite_upscale_strength: -1.0,
    mixing_image_prompt_and_vary_upscale: false, mixing_image_prompt_and_inpaint: false,
    debugging_cn_preprocessor: false, skipping_cn_preprocessor: false, canny_low_threshold: 64,
    canny_high_threshold: 128, refiner_swap_method: "joint", controlnet_softness: 0.25, freeu_enabled: false,
    freeu_b1: 1.01, freeu_b2: 1.02, freeu_s1: 0.99, freeu_s2: 0.95, debugging_inpaint_preprocessor: false,
    inpaint_disable_initial_latent: false, inpaint_engine: "v2.6", inpaint_strength: 1.0,
    inpaint_respective_field: 0.618, inpaint_advanced_masking_checkbox: false, invert_mask_checkbox: false,
    inpaint_erode_or_dilate: 0, save_final_enhanced_image_only: false, save_metadata_to_images: true,
    metadata_scheme: "fooocus", controlnet_image: [], debugging_dino: false, dino_erode_or_dilate: 0,
    debugging_enhance_masks_checkbox: false, enhance_input_image: "", enhance_checkbox: false,
    enhance_uov_method: "Disabled", enhance_uov_processing_order: "Before First Enhancement",
    enhance_uov_prompt_type: "Original Prompts", enhance_ctrls: [], generate_image_grid: false, save_name: null,
    outpaint_distance: [0, 0, 0, 0], upscale_multiple: 1.0,
  };
  // Fields whose req_params value is the performance mode's forced value; sending them again is harmless
  // but they would pin the values when the user then switches mode, so they are not copied when forced.
  const FORCED = {
    "Extreme Speed": { sampler_name: "lcm", scheduler_name: "lcm" },
    Lightning: { sampler_name: "euler", scheduler_name: "sgm_uniform" },
    "Hyper-SD": { sampler_name: "dpmpp_sde_gpu", scheduler_name: "karras" },
  };
  const FEW_STEP_COMMON = {
    sharpness: 0.0, guidance_scale: 1.0, adaptive_cfg: 1.0, refiner_model_name: "None", refiner_switch: 1.0,
    adm_scaler_positive: 1.0, adm_scaler_negative: 1.0, adm_scaler_end: 0.0,
  };

  const state = {
    apiKey: localStorage.getItem(KEY_STORAGE) || "",
    styles: [],
    chosenStyles: [],
    stylesExplicit: false,
    loraNames: [],
    images: { uov_input_image: null, inpaint_input_image: null, inpaint_mask_image_upload: null },
    maskPainted: false,
    generating: false,
    taskId: null,
    started: false,
    controller: null,
    lightboxImages: [],
    lightboxIndex: 0,
    historyPage: 0,
    historyRows: [],
    openTask: null,
    bootstrapped: false,
  };

  // ------------------------------------------------------------------ HTTP

  class ApiError extends Error {
    constructor(status, detail, field, retryAfter) {
      super(detail);
      this.status = status;
      this.detail = detail;
      this.field = field;
      this.retryAfter = retryAfter;
    }
  }

  function headers(extra) {
    const h = new Headers(extra || {});
    if (state.apiKey) h.set("X-API-KEY", state.apiKey);
    return h;
  }

  /** fetch with the key; throws ApiError (with the server's words) for any non-2xx, or on a network failure. */
  async function api(path, options = {}) {
    let response;
    try {
      response = await fetch(path, { ...options, headers: headers(options.headers) });
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      throw new ApiError(0, `Cannot reach the server (${err && err.message ? err.message : err}). Is it running?`);
    }
    if (response.ok) return response;
    let detail = `${response.status} ${response.statusText}`;
    let field = null;
    try {
      const body = await response.json();
      if (body && body.detail) detail = String(body.detail);
      if (body && body.field) field = String(body.field);
    } catch (_) {
      /* not JSON: keep the status line */
    }
    throw new ApiError(response.status, detail, field, response.headers.get("Retry-After"));
  }

  // Seeds go up to 2**63-1, past what a JS number holds exactly: keep them as strings in the page.
  const SEED_IN = /(?<!\\)"image_seed"\s*:\s*(-?\d+)/g;
  const SEED_OUT = /(?<!\\)"image_seed":"(-?\d+)"/;

  async function apiJson(path, options) {
    const response = await api(path, options);
    return JSON.parse((await response.text()).replace(SEED_IN, '"image_seed":"$1"'));
  }

  function encodeRequest(body) {
    return JSON.stringify(body).replace(SEED_OUT, '"image_seed":$1');
  }

  /** Words for an error; auth errors also open the key box. Returns the text. */
  function describe(err) {
    if (!(err instanceof ApiError)) return `Unexpected error: ${err && err.message ? err.message : err}`;
    if (err.status === 401 || err.status === 403) {
      askForKey(err.status);
      return err.status === 401
        ? "This server needs an API key: enter it in the API key box at the top."
        : "The API key was refused (403): check it in the API key box at the top.";
    }
    if (err.status === 429) {
      const wait = err.retryAfter ? ` Retry in ${err.retryAfter} s.` : "";
      return `The server's queue is full: ${err.detail}.${wait}`;
    }
    if (err.status === 0) return err.detail;
    if (err.status >= 500) return `Server error (${err.status}): ${err.detail}`;
    return err.detail;
  }

  // ------------------------------------------------------------------ notices and key

  function notice(text, kind = "error") {
    const box = $("notice");
    if (!text) {
      box.hidden = true;
      box.textContent = "";
      return;
    }
    box.dataset.kind = kind;
    box.textContent = text;
    box.hidden = false;
  }

  function askForKey(status) {
    const box = $("key-box");
    box.open = true;
    box.classList.add("needs-key");
    $("key-summary").textContent = status === 403 ? "API key (refused)" : "API key (required)";
    notice(status === 403
      ? "The API key was refused (403). Enter the right key and press Save."
      : "This server needs an API key (401). Enter it and press Save.");
    $("api-key").focus();
  }

  function refreshKeyUi() {
    $("api-key").value = state.apiKey;
    $("key-summary").textContent = state.apiKey ? "API key (set)" : "API key";
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.apiKey = $("api-key").value.trim();
    if (state.apiKey) localStorage.setItem(KEY_STORAGE, state.apiKey);
    else localStorage.removeItem(KEY_STORAGE);
    $("key-box").classList.remove("needs-key");
    refreshKeyUi();
    $("key-box").open = false;
    notice(null);
    bootstrap();
  });
  $("key-clear").addEventListener("click", () => {
    state.apiKey = "";
    localStorage.removeItem(KEY_STORAGE);
    refreshKeyUi();
  });

  // ------------------------------------------------------------------ tabs

  function showTab(name) {
    for (const tab of ["generate", "history"]) {
      const on = tab === name;
      $(`panel-${tab}`).hidden = !on;
      if (on) $(`tab-${tab}`).setAttribute("aria-current", "page");
      else $(`tab-${tab}`).removeAttribute("aria-current");
    }
    if (name === "history") loadHistory();
  }
  $("tab-generate").addEventListener("click", () => showTab("generate"));
  $("tab-history").addEventListener("click", () => showTab("history"));

  // ------------------------------------------------------------------ form widgets

  function option(select, value, label) {
    const opt = document.createElement("option");
    opt.value = value;
    opt.textContent = label === undefined ? value : label;
    select.append(opt);
    return opt;
  }

  function ensureOption(select, value) {
    if (value === null || value === undefined) return;
    value = String(value);
    if (![...select.options].some((o) => o.value === value)) option(select, value);
    select.value = value;
  }

  function ratioLabel(ratio) {
    const [w, h] = ratio.split("*").map(Number);
    const gcd = (a, b) => (b ? gcd(b, a % b) : a);
    const g = gcd(w, h);
    return `${w}×${h} | ${w / g}:${h / g}`;
  }

  function buildStaticOptions() {
    const aspect = $("aspect_ratios_selection");
    option(aspect, "", "Preset default");
    for (const ratio of ASPECT_RATIOS) option(aspect, ratio, ratioLabel(ratio));
    option(aspect, "custom", "Custom W*H…");
    for (const name of SAMPLERS) option($("sampler_name"), name);
    for (const name of SCHEDULERS) option($("scheduler_name"), name);
    buildLoraSlots();
  }

  $("aspect_ratios_selection").addEventListener("change", () => {
    const custom = $("aspect_ratios_selection").value === "custom";
    $("aspect-custom-field").hidden = !custom;
    if (custom) $("aspect_custom").focus();
  });
  $("seed-random").addEventListener("click", () => { $("image_seed").value = "-1"; });

  function buildLoraSlots() {
    const holder = $("lora-slots");
    holder.textContent = "";
    for (let i = 0; i < LORA_SLOTS; i++) {
      const row = document.createElement("div");
      row.className = "lora-row";
      row.innerHTML = `
        <label class="check"><input type="checkbox" id="lora-${i}-enabled" checked> <span class="visually-hidden">Enable LoRA ${i + 1}</span></label>
        <label class="visually-hidden" for="lora-${i}-model">LoRA ${i + 1} model</label>
        <select id="lora-${i}-model"><option value="None">LoRA ${i + 1}: none</option></select>
        <label class="visually-hidden" for="lora-${i}-weight">LoRA ${i + 1} weight</label>
        <input id="lora-${i}-weight" type="number" min="-2" max="2" step="0.05" value="1">`;
      holder.append(row);
    }
  }

  function fillLoraOptions(names) {
    state.loraNames = names;
    for (let i = 0; i < LORA_SLOTS; i++) {
      const select = $(`lora-${i}-model`);
      const current = select.value;
      select.length = 1;
      for (const name of names) option(select, name);
      ensureOption(select, current);
    }
  }

  // ---- styles: searchable multi-select

  function renderStyles() {
    const query = $("style-search").value.trim().toLowerCase();
    const list = $("style-list");
    list.textContent = "";
    const chosen = new Set(state.chosenStyles);
    const shown = state.styles.filter((name) => !query || name.toLowerCase().includes(query)).slice(0, 400);
    for (const name of shown) {
      const label = document.createElement("label");
      label.className = "check style-item";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = name;
      box.checked = chosen.has(name);
      box.addEventListener("change", () => toggleStyle(name, box.checked));
      label.append(box, " ", name);
      list.append(label);
    }
    if (!shown.length) {
      const empty = document.createElement("p");
      empty.className = "hint";
      empty.textContent = state.styles.length ? "No style matches."
        : state.bootstrapFailed ? "The style names could not be loaded." : "Loading the style names…";
      list.append(empty);
    }
    renderChosenStyles();
  }

  function renderChosenStyles() {
    const holder = $("style-chosen");
    holder.textContent = "";
    if (!state.stylesExplicit) {
      holder.innerHTML = '<span class="hint">Using the preset\'s styles.</span>';
      return;
    }
    if (!state.chosenStyles.length) {
      holder.innerHTML = '<span class="hint">No styles.</span>';
      return;
    }
    for (const name of state.chosenStyles) {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "chip";
      chip.textContent = `${name} ×`;
      chip.setAttribute("aria-label", `Remove style ${name}`);
      chip.addEventListener("click", () => { toggleStyle(name, false); renderStyles(); });
      holder.append(chip);
    }
  }

  function toggleStyle(name, on) {
    state.stylesExplicit = true;
    state.chosenStyles = state.chosenStyles.filter((s) => s !== name);
    if (on) state.chosenStyles.push(name);
    renderChosenStyles();
  }

  $("style-search").addEventListener("input", renderStyles);
  $("style-reset").addEventListener("click", () => {
    state.stylesExplicit = false;
    state.chosenStyles = [];
    renderStyles();
  });

  // ---- image inputs: file picker or drag and drop, kept as data URIs (or as a server URL after a copy)

  function readAsDataUrl(blob) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    });
  }

  async function setImage(field, src) {
    state.images[field] = src || null;
    const zone = document.querySelector(`.drop[data-image="${field}"]`);
    const clear = zone.querySelector(".drop-clear");
    clear.hidden = !src;
    if (field === "inpaint_input_image") {
      await showInpaintImage(src);
    } else {
      const img = zone.querySelector(".drop-preview");
      img.hidden = !src;
      if (src) img.src = src; else img.removeAttribute("src");
    }
    if (!src) zone.querySelector("input.file").value = "";
  }

  async function takeFile(field, file) {
    if (!file) return;
    if (!file.type.startsWith("image/")) {
      showFormError(`${file.name}: not an image file.`);
      return;
    }
    try {
      await setImage(field, await readAsDataUrl(file));
      if (field === "inpaint_mask_image_upload") clearMask();  // an uploaded mask replaces a painted one
    } catch (err) {
      showFormError(`Could not read ${file.name}: ${err && err.message ? err.message : err}`);
    }
  }

  for (const zone of document.querySelectorAll(".drop")) {
    const field = zone.dataset.image;
    const input = zone.querySelector("input.file");
    input.addEventListener("change", () => takeFile(field, input.files[0]));
    zone.querySelector(".drop-clear").addEventListener("click", () => {
      setImage(field, null);
      if (field === "inpaint_input_image") clearMask();
    });
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("dragging");
      const file = event.dataTransfer && event.dataTransfer.files[0];
      if (file) takeFile(field, file);
    });
  }

  // A file dropped next to a zone must not navigate away from the page (and lose the form).
  for (const name of ["dragover", "drop"]) {
    window.addEventListener(name, (event) => {
      if (!(event.target instanceof Element && event.target.closest(".drop"))) event.preventDefault();
    });
  }

  // ---- the inpaint mask, painted on a canvas over the image

  const maskCanvas = $("mask-canvas");
  const maskCtx = maskCanvas.getContext("2d");
  let painting = null;

  function showInpaintImage(src) {
    const img = $("inpaint-img");
    $("mask-stage").hidden = !src;
    $("mask-tools").hidden = !src;
    if (!src) {
      img.removeAttribute("src");
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      img.onload = () => {
        maskCanvas.width = img.naturalWidth;
        maskCanvas.height = img.naturalHeight;
        state.maskPainted = false;
        resolve();
      };
      img.onerror = () => resolve();
      img.src = src;
    });
  }

  function clearMask() {
    maskCtx.clearRect(0, 0, maskCanvas.width, maskCanvas.height);
    state.maskPainted = false;
  }

  function canvasPoint(event) {
    const rect = maskCanvas.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) / rect.width) * maskCanvas.width,
      y: ((event.clientY - rect.top) / rect.height) * maskCanvas.height,
      scale: maskCanvas.width / rect.width,
    };
  }

  function strokeTo(point) {
    maskCtx.globalCompositeOperation = $("brush-erase").checked ? "destination-out" : "source-over";
    maskCtx.strokeStyle = "#fff";
    maskCtx.lineCap = "round";
    maskCtx.lineJoin = "round";
    maskCtx.lineWidth = Number($("brush-size").value) * point.scale;
    maskCtx.beginPath();
    maskCtx.moveTo(painting.x, painting.y);
    maskCtx.lineTo(point.x + 0.01, point.y);
    maskCtx.stroke();
    painting = point;
    if (!$("brush-erase").checked) state.maskPainted = true;
  }

  maskCanvas.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    maskCanvas.setPointerCapture(event.pointerId);
    painting = canvasPoint(event);
    strokeTo(painting);
  });
  maskCanvas.addEventListener("pointermove", (event) => { if (painting) strokeTo(canvasPoint(event)); });
  for (const name of ["pointerup", "pointercancel"]) maskCanvas.addEventListener(name, () => { painting = null; });
  $("mask-clear").addEventListener("click", clearMask);

  function maskDataUrl() {
    const out = document.createElement("canvas");
    out.width = maskCanvas.width;
    out.height = maskCanvas.height;
    const ctx = out.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.drawImage(maskCanvas, 0, 0);
    return out.toDataURL("image/png");
  }

  /** A stored input URL (from a task's req_params) becomes a data URI, read from this same server. */
  async function imageForRequest(value) {
    if (!value || value.startsWith("data:")) return value;
    let url;
    try {
      url = new URL(value, location.href);
    } catch (_) {
      return value;
    }
    if (!url.pathname.startsWith("/inputs/") && !url.pathname.startsWith("/outputs/")) return value;
    const response = await api(url.pathname + url.search);
    return readAsDataUrl(await response.blob());
  }

  // ------------------------------------------------------------------ request from the form

  function numberOrNull(id) {
    const raw = $(id).value.trim();
    if (raw === "") return null;
    const value = Number(raw);
    return Number.isFinite(value) ? value : raw;  // the server names the field when it is not a number
  }

  async function buildRequest() {
    let body = {};
    const extra = $("extra_json").value.trim();
    if (extra) {
      let parsed;
      try {
        parsed = JSON.parse(extra);
      } catch (err) {
        throw new ApiError(400, `Other fields: not valid JSON (${err.message})`, "extra_json");
      }
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
        throw new ApiError(400, "Other fields: expected a JSON object such as {\"freeu_enabled\": true}", "extra_json");
      }
      body = { ...parsed };
    }
    const text = (id) => $(id).value;
    if (text("prompt").trim()) body.prompt = text("prompt");
    if (text("negative_prompt").trim()) body.negative_prompt = text("negative_prompt");
    if (state.stylesExplicit) body.style_selections = [...state.chosenStyles];
    if (text("performance_selection")) body.performance_selection = text("performance_selection");
    const aspect = text("aspect_ratios_selection");
    if (aspect === "custom") {
      body.aspect_ratios_selection = text("aspect_custom").trim();
    } else if (aspect) {
      body.aspect_ratios_selection = aspect;
    }
    const seed = text("image_seed").trim();
    if (seed) body.image_seed = seed;  // digits go out as a JSON integer (encodeRequest); the server names anything else
    for (const id of ["image_number", "guidance_scale", "sharpness", "overwrite_step",
      "overwrite_width", "overwrite_height"]) {
      const value = numberOrNull(id);
      if (value !== null) body[id] = value;
    }
    for (const id of ["preset", "sampler_name", "scheduler_name", "base_model_name", "refiner_model_name",
      "vae_name", "output_format"]) {
      if (text(id)) body[id] = text(id);
    }
    if ($("disable_seed_increment").checked) body.disable_seed_increment = true;

    const loras = [];
    for (let i = 0; i < LORA_SLOTS; i++) {
      const model = $(`lora-${i}-model`).value;
      if (model && model !== "None") {
        loras.push({
          enabled: $(`lora-${i}-enabled`).checked,
          model_name: model,
          weight: Number($(`lora-${i}-weight`).value || 1),
        });
      }
    }
    if (loras.length) body.loras = loras;

    const uovImage = state.images.uov_input_image;
    if (text("uov_method") !== "Disabled" || uovImage) body.uov_method = text("uov_method");
    if (uovImage) body.uov_input_image = await imageForRequest(uovImage);
    const inpaintImage = state.images.inpaint_input_image;
    if (inpaintImage) {
      body.inpaint_input_image = await imageForRequest(inpaintImage);
      if (state.images.inpaint_mask_image_upload) {
        body.inpaint_mask_image_upload = await imageForRequest(state.images.inpaint_mask_image_upload);
      } else if (state.maskPainted) {
        body.inpaint_mask_image_upload = maskDataUrl();
      }
    }
    if (text("inpaint_additional_prompt").trim()) body.inpaint_additional_prompt = text("inpaint_additional_prompt");
    const outpaint = [...document.querySelectorAll('#outpaint_selections input:checked')].map((box) => box.value);
    if (outpaint.length) body.outpaint_selections = outpaint;

    body.stream_output = true;
    delete body.async_process;
    return body;
  }

  // ------------------------------------------------------------------ form errors

  function clearFormError() {
    $("form-error").hidden = true;
    $("form-error").textContent = "";
    for (const el of document.querySelectorAll("[aria-invalid=true]")) el.removeAttribute("aria-invalid");
  }

  function showFormError(text, field) {
    const box = $("form-error");
    box.textContent = text;
    box.hidden = false;
    const target = fieldElement(field);
    if (target) {
      target.setAttribute("aria-invalid", "true");
      const details = target.closest("details");
      if (details) details.open = true;
    }
  }

  function fieldElement(field) {
    if (!field) return null;
    const lora = /^loras\[(\d+)\]\.(\w+)/.exec(field);
    if (lora) return $(`lora-${lora[1]}-${lora[2] === "model_name" ? "model" : lora[2]}`);
    const base = field.replace(/[[.].*$/, "");
    if (base === "aspect_ratios_selection" && $("aspect_ratios_selection").value === "custom") return $("aspect_custom");
    if (base === "style_selections") return $("style-search");
    return $(base);
  }

  // ------------------------------------------------------------------ generate (streamed)

  function setStatus(status, label) {
    const badge = $("task-status");
    badge.dataset.status = status;
    badge.textContent = label || status;
  }

  function setProgress(percent, message) {
    const value = Math.max(0, Math.min(100, Number(percent) || 0));
    $("progress").value = value;
    $("progress").textContent = `${value}%`;
    $("progress-text").textContent = `${value}%`;
    if (message !== undefined) $("progress-message").textContent = message;
  }

  function setGenerating(on) {
    state.generating = on;
    $("generate").disabled = on;
    $("generate").setAttribute("aria-busy", on ? "true" : "false");
    $("stop").disabled = !on;
    $("skip").disabled = !on;
    $("task-rerun").disabled = on;
  }

  $("gen-form").addEventListener("submit", (event) => {
    event.preventDefault();
    generate();
  });

  async function generate() {
    if (state.generating) return;
    clearFormError();
    notice(null);
    let body;
    try {
      body = await buildRequest();
    } catch (err) {
      showFormError(describe(err), err.field);
      return;
    }
    setGenerating(true);
    state.taskId = null;
    state.started = false;
    $("task-id").textContent = "";
    $("task-id").dataset.taskId = "";
    setStatus("submitting", "submitting");
    setProgress(0, "Sending the request…");
    $("preview-box").hidden = true;
    let final = null;
    try {
      const response = await api("/v1/engine/generate/", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: encodeRequest(body),
      });
      state.taskId = response.headers.get("X-Task-Id");
      $("task-id").textContent = state.taskId ? `task ${state.taskId.slice(0, 8)}` : "";
      $("task-id").dataset.taskId = state.taskId || "";
      $("task-id").title = state.taskId || "";
      setStatus("pending", "queued");
      setProgress(0, "Waiting in the queue…");
      final = await readStream(response);
      if (!final && state.taskId) {
        setProgress($("progress").value, "The stream ended early; following the task on the server…");
        final = await followTask(state.taskId);
      }
      if (final) showFinal(final);
    } catch (err) {
      const text = describe(err);
      setStatus("failed", "error");
      setProgress(0, state.taskId ? `Lost track of the task (see History): ${text}` : `Not started: ${text}`);
      showFormError(text, err instanceof ApiError && err.status === 400 ? err.field : null);
    } finally {
      setGenerating(false);
    }
  }

  /** Reads `data: {json}` events until the body ends; returns the last (final) message, or null. */
  async function readStream(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let last = null;
    const handle = (block) => {
      const data = block.split(/\r?\n/).filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
      if (!data) return;
      let message;
      try {
        message = JSON.parse(data);
      } catch (_) {
        return;
      }
      last = message;
      onStreamMessage(message);
    };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let split;
        while ((split = /\r?\n\r?\n/.exec(buffer))) {
          handle(buffer.slice(0, split.index));
          buffer = buffer.slice(split.index + split[0].length);
        }
      }
    } catch (err) {
      if (!state.taskId) throw new ApiError(0, `The connection was lost: ${err.message}`);
    }
    if (buffer.trim()) handle(buffer);
    return last && isFinalMessage(last) ? last : null;
  }

  function isFinalMessage(message) {
    const text = String(message.message || "");
    return text === "Finished" || text === "Stopped" || text === "Cancelled" || text.startsWith("Failed");
  }

  function onStreamMessage(message) {
    if (isFinalMessage(message)) return;
    state.started = true;
    setStatus("running", "running");
    setProgress(message.progress, message.message || "");
    if (message.preview) {
      $("preview").src = message.preview;
      $("preview-box").hidden = false;
    }
  }

  /** Polls the task record until it ends (after a dropped stream); returns a final-message-shaped object. */
  async function followTask(taskId) {
    for (;;) {
      const record = await apiJson(`/tasks/${encodeURIComponent(taskId)}`);
      if (record.finish_mills) {
        const names = { finished: "Finished", skip: "Finished", stop: "Stopped", cancelled: "Cancelled" };
        const error = record.error || {};
        return {
          progress: 100, preview: null, images: record.result || [], error: record.error,
          message: names[record.task_status] || `Failed: ${error.message || record.task_status}`,
        };
      }
      setProgress(record.progress || 0);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }

  function showFinal(final) {
    const text = String(final.message || "");
    $("preview-box").hidden = true;
    const images = final.images || [];
    if (text === "Finished") {
      setStatus("finished", "finished");
      setProgress(100, images.length ? `Finished: ${images.length} image${images.length === 1 ? "" : "s"}.` : "Finished.");
    } else if (text === "Stopped") {
      setStatus("stop", "stopped");
      setProgress(100, images.length ? "Stopped; the images done so far are below." : "Stopped.");
    } else if (text === "Cancelled") {
      setStatus("cancelled", "cancelled");
      setProgress(0, "Cancelled before it started.");
    } else {
      setStatus("failed", "failed");
      setProgress(100, text);
      showFormError(`The task failed: ${text.replace(/^Failed:\s*/, "")}`);
    }
    renderGallery(images);
  }

  function renderGallery(urls) {
    const gallery = $("gallery");
    gallery.textContent = "";
    urls.forEach((url, index) => gallery.append(thumbButton(urls, index, "Result")));
  }

  function thumbButton(urls, index, what) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "thumb";
    button.setAttribute("aria-label", `Open ${what.toLowerCase()} ${index + 1} of ${urls.length} full size`);
    const img = document.createElement("img");
    img.src = urls[index];
    img.alt = `${what} ${index + 1}`;
    img.loading = "lazy";
    button.append(img);
    button.addEventListener("click", () => openLightbox(urls, index));
    return button;
  }

  async function control(action) {
    try {
      if (action === "stop" && state.taskId && !state.started) {
        // Still queued: cancel exactly this task rather than stopping whatever is running.
        await api(`/tasks/${encodeURIComponent(state.taskId)}/cancel`, { method: "POST" });
        setProgress($("progress").value, "Cancelling…");
        return;
      }
      const answer = await apiJson(`/v1/engine/control?action=${action}`, { method: "POST" });
      setProgress($("progress").value, action === "stop" ? `Stopping… (${answer.message})` : `Skipping… (${answer.message})`);
    } catch (err) {
      showFormError(describe(err));
    }
  }
  $("stop").addEventListener("click", () => control("stop"));
  $("skip").addEventListener("click", () => control("skip"));

  // ------------------------------------------------------------------ lightbox

  function openLightbox(urls, index) {
    state.lightboxImages = urls;
    showLightboxImage(index);
    const dialog = $("lightbox");
    if (!dialog.open) dialog.showModal();
    $("lightbox-close").focus();
  }

  function showLightboxImage(index) {
    const urls = state.lightboxImages;
    state.lightboxIndex = (index + urls.length) % urls.length;
    const url = urls[state.lightboxIndex];
    $("lightbox-img").src = url;
    $("lightbox-img").alt = `Image ${state.lightboxIndex + 1} of ${urls.length}, full size`;
    $("lightbox-open").href = url;
    $("lightbox-caption").textContent = `${state.lightboxIndex + 1} / ${urls.length}`;
    $("lightbox-prev").hidden = $("lightbox-next").hidden = urls.length < 2;
  }

  $("lightbox-close").addEventListener("click", () => $("lightbox").close());
  $("lightbox-prev").addEventListener("click", () => showLightboxImage(state.lightboxIndex - 1));
  $("lightbox-next").addEventListener("click", () => showLightboxImage(state.lightboxIndex + 1));
  $("lightbox").addEventListener("click", (event) => { if (event.target === $("lightbox")) $("lightbox").close(); });
  $("lightbox").addEventListener("keydown", (event) => {
    if (event.key === "ArrowLeft") showLightboxImage(state.lightboxIndex - 1);
    if (event.key === "ArrowRight") showLightboxImage(state.lightboxIndex + 1);
  });

  // ------------------------------------------------------------------ history

  function historyPageSize() {
    return Number($("history-size").value) || 10;
  }

  function formatTime(ms) {
    return ms ? new Date(ms).toLocaleString() : "—";
  }

  async function loadHistory() {
    const errorBox = $("history-error");
    errorBox.hidden = true;
    const size = historyPageSize();
    let data;
    try {
      data = await apiJson(`/tasks?query=history&page=${state.historyPage}&page_size=${size}`);
    } catch (err) {
      errorBox.textContent = describe(err);
      errorBox.hidden = false;
      return;
    }
    state.historyRows = data.history || [];
    renderHistory(size);
  }

  function renderHistory(size) {
    const list = $("history-list");
    list.textContent = "";
    $("history-page").textContent = `Page ${state.historyPage + 1}`;
    $("history-newer").disabled = state.historyPage === 0;
    $("history-older").disabled = state.historyRows.length < size;
    if (!state.historyRows.length) {
      const empty = document.createElement("li");
      empty.className = "hint empty";
      empty.textContent = state.historyPage ? "No older tasks." : "No tasks yet.";
      list.append(empty);
      return;
    }
    for (const record of state.historyRows) list.append(historyRow(record));
  }

  function historyRow(record) {
    const item = document.createElement("li");
    item.className = "task-row";
    item.dataset.taskId = record.task_id;
    const params = record.req_params || {};
    const head = document.createElement("div");
    head.className = "task-head";
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.dataset.status = record.task_status || "unknown";
    badge.textContent = record.task_status || "unknown";
    const time = document.createElement("time");
    const when = record.finish_mills || record.start_mills || record.in_queue_mills;
    if (when) time.dateTime = new Date(when).toISOString();
    time.textContent = formatTime(when);
    const prompt = document.createElement("p");
    prompt.className = "task-prompt";
    prompt.textContent = params.prompt || "(no prompt)";
    head.append(badge, time);
    item.append(head, prompt);
    if (record.error && record.error.message) {
      const error = document.createElement("p");
      error.className = "task-error";
      error.textContent = record.error.message;
      item.append(error);
    }
    const results = record.result || [];
    if (results.length) {
      const thumbs = document.createElement("div");
      thumbs.className = "thumbs";
      results.forEach((_, index) => thumbs.append(thumbButton(results, index, "Image")));
      item.append(thumbs);
    }
    const actions = document.createElement("div");
    actions.className = "row";
    const open = document.createElement("button");
    open.type = "button";
    open.className = "secondary small task-open";
    open.textContent = "Parameters";
    open.addEventListener("click", () => openTask(record));
    const rerun = document.createElement("button");
    rerun.type = "button";
    rerun.className = "secondary small task-rerun";
    rerun.textContent = "Re-run";
    rerun.addEventListener("click", () => rerunTask(record));
    actions.append(open, rerun);
    item.append(actions);
    return item;
  }

  $("history-refresh").addEventListener("click", loadHistory);
  $("history-newer").addEventListener("click", () => { state.historyPage = Math.max(0, state.historyPage - 1); loadHistory(); });
  $("history-older").addEventListener("click", () => { state.historyPage += 1; loadHistory(); });
  $("history-size").addEventListener("change", () => { state.historyPage = 0; loadHistory(); });

  function openTask(record) {
    state.openTask = record;
    $("task-title").textContent = `Task ${record.task_id}`;
    const meta = $("task-meta");
    meta.textContent = "";
    const rows = [
      ["Status", record.task_status],
      ["Queued", formatTime(record.in_queue_mills)],
      ["Started", formatTime(record.start_mills)],
      ["Ended", formatTime(record.finish_mills)],
    ];
    if (record.error) rows.push(["Error", `${record.error.type || ""}: ${record.error.message || ""}`]);
    const dl = document.createElement("dl");
    for (const [name, value] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value || "—";
      dl.append(dt, dd);
    }
    meta.append(dl);
    const images = $("task-images");
    images.textContent = "";
    (record.result || []).forEach((_, index) => images.append(thumbButton(record.result, index, "Image")));
    const table = $("task-params");
    table.textContent = "";
    const params = record.req_params || {};
    for (const name of Object.keys(params).sort()) {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = name;
      const td = document.createElement("td");
      const value = params[name];
      td.textContent = typeof value === "string" ? value : JSON.stringify(value);
      tr.append(th, td);
      table.append(tr);
    }
    $("task-dialog").showModal();
    $("task-close").focus();
  }

  $("task-close").addEventListener("click", () => $("task-dialog").close());
  $("task-fill").addEventListener("click", () => {
    if (!state.openTask) return;
    fillForm(state.openTask.req_params || {});
    $("task-dialog").close();
    showTab("generate");
    $("prompt").focus();
  });
  $("task-rerun").addEventListener("click", () => {
    if (state.openTask) rerunTask(state.openTask);
  });

  async function rerunTask(record) {
    if (state.generating) {
      notice("A generation is still running in this page: stop it or wait for it to end, then re-run.", "info");
      return;
    }
    if ($("task-dialog").open) $("task-dialog").close();
    await fillForm(record.req_params || {});
    showTab("generate");
    generate();
  }

  function sameValue(a, b) {
    return JSON.stringify(a) === JSON.stringify(b);
  }

  /** Puts a task's req_params back into the form; fields without a widget go to the "Other fields" box. */
  async function fillForm(params) {
    resetForm();
    const set = (id, value) => {
      if (value === undefined || value === null) return;
      const el = $(id);
      if (el.tagName === "SELECT") ensureOption(el, value);
      else el.value = String(value);
    };
    set("prompt", params.prompt);
    set("negative_prompt", params.negative_prompt);
    if (Array.isArray(params.style_selections)) {
      state.stylesExplicit = true;
      state.chosenStyles = [...params.style_selections];
      renderStyles();
    }
    const performance = params.performance_selection;
    set("performance_selection", performance);
    const ratio = params.aspect_ratios_selection;
    if (ratio) {
      if (ASPECT_RATIOS.includes(ratio)) {
        $("aspect_ratios_selection").value = ratio;
      } else {
        $("aspect_ratios_selection").value = "custom";
        $("aspect_custom").value = ratio;
      }
      $("aspect-custom-field").hidden = $("aspect_ratios_selection").value !== "custom";
    }
    set("image_number", params.image_number);
    set("image_seed", params.image_seed);
    if (params.preset && params.preset !== "initial") set("preset", params.preset);
    const forced = performance && FORCED[performance] ? { ...FEW_STEP_COMMON, ...FORCED[performance] } : {};
    for (const id of ["guidance_scale", "sharpness", "sampler_name", "scheduler_name", "refiner_model_name"]) {
      if (params[id] !== undefined && !(id in forced && sameValue(forced[id], params[id]))) set(id, params[id]);
    }
    set("base_model_name", params.base_model_name);
    set("vae_name", params.vae_name);
    set("output_format", params.output_format);
    for (const id of ["overwrite_step", "overwrite_width", "overwrite_height"]) {
      if (params[id] !== undefined && params[id] !== -1) set(id, params[id]);
    }
    $("disable_seed_increment").checked = Boolean(params.disable_seed_increment);
    const loras = (params.loras || []).filter((lora) => lora && lora.model_name && lora.model_name !== "None");
    loras.slice(0, LORA_SLOTS).forEach((lora, i) => {
      ensureOption($(`lora-${i}-model`), lora.model_name);
      $(`lora-${i}-enabled`).checked = lora.enabled !== false;
      $(`lora-${i}-weight`).value = String(lora.weight ?? 1);
    });
    if (params.uov_method) set("uov_method", params.uov_method);
    set("inpaint_additional_prompt", params.inpaint_additional_prompt);
    const outpaint = new Set(params.outpaint_selections || []);
    for (const box of document.querySelectorAll("#outpaint_selections input")) box.checked = outpaint.has(box.value);
    for (const field of IMAGE_FIELDS) {
      const value = params[field];
      if (typeof value === "string" && value && value !== "None") await setImage(field, value);
    }
    if (IMAGE_FIELDS.some((field) => state.images[field]) || (params.uov_method && params.uov_method !== "Disabled")) {
      $("image-inputs").open = true;
    }
    const extra = {};
    for (const [name, value] of Object.entries(params)) {
      if (FORM_FIELDS.has(name) || DERIVED_FIELDS.has(name)) continue;
      if (name in forced && sameValue(forced[name], value)) continue;
      if (name in REQUEST_DEFAULTS && sameValue(REQUEST_DEFAULTS[name], value)) continue;
      extra[name] = value;
    }
    $("extra_json").value = Object.keys(extra).length ? JSON.stringify(extra, null, 1) : "";
    if ($("extra_json").value || $("guidance_scale").value || $("sampler_name").value || $("overwrite_step").value
      || $("base_model_name").value || loras.length) {
      $("advanced").open = true;
    }
  }

  function resetForm() {
    $("gen-form").reset();
    clearFormError();
    $("aspect-custom-field").hidden = true;
    state.stylesExplicit = false;
    state.chosenStyles = [];
    renderStyles();
    for (const field of IMAGE_FIELDS) setImage(field, null);
    clearMask();
  }
  $("form-reset").addEventListener("click", resetForm);

  // ---- delete a time range

  $("delete-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = $("delete-result");
    const startValue = $("delete-start").value;
    if (!startValue) {
      out.textContent = "Choose the start of the range.";
      $("delete-start").setAttribute("aria-invalid", "true");
      $("delete-start").focus();
      return;
    }
    $("delete-start").removeAttribute("aria-invalid");
    const start = new Date(startValue);
    const end = $("delete-end").value ? new Date($("delete-end").value) : new Date();
    if (!(start < end)) {
      out.textContent = "The start must be before the end.";
      return;
    }
    const question = `Delete every task that ended between ${start.toLocaleString()} and ${end.toLocaleString()}, `
      + "with its images? This cannot be undone.";
    if (!window.confirm(question)) {
      out.textContent = "Nothing deleted.";
      return;
    }
    const query = new URLSearchParams({
      query: "history", start_at: start.toISOString(), end_at: end.toISOString(), action: "delete",
    });
    try {
      const data = await apiJson(`/tasks?${query}`);
      const count = (data.history || []).length;
      out.textContent = `Deleted ${count} task${count === 1 ? "" : "s"}.`;
      state.historyPage = 0;
      loadHistory();
    } catch (err) {
      out.textContent = describe(err);
    }
  });

  // ------------------------------------------------------------------ start-up

  async function bootstrap() {
    const status = $("server-status");
    try {
      const [styles, models, presets, health] = await Promise.all([
        apiJson("/v1/engines/styles"),
        apiJson("/v1/engines/all-models"),
        apiJson("/v1/engines/presets"),
        apiJson("/health"),
      ]);
      state.styles = styles;
      renderStyles();
      const model = $("base_model_name");
      const keepModel = model.value;
      model.length = 1;
      for (const name of models.model_filenames || []) option(model, name);
      ensureOption(model, keepModel);
      const refiner = $("refiner_model_name");
      const keepRefiner = refiner.value;
      refiner.length = 2;
      for (const name of models.model_filenames || []) option(refiner, name);
      ensureOption(refiner, keepRefiner);
      const vae = $("vae_name");
      const keepVae = vae.value;
      vae.length = 2;
      for (const name of models.vae_filenames || []) option(vae, name);
      ensureOption(vae, keepVae);
      fillLoraOptions(models.lora_filenames || []);
      const preset = $("preset");
      const keepPreset = preset.value;
      preset.length = 0;
      option(preset, "", `Server's preset (${presets.server_preset})`);
      for (const name of presets.presets || []) if (name !== presets.server_preset) option(preset, name);
      ensureOption(preset, keepPreset);
      const missing = Object.keys(health.missing_models || {});
      status.textContent = `${health.preset} · ${health.device}${health.loaded_model ? ` · ${health.loaded_model}` : ""}`
        + ` · queue ${health.queue_depth}${missing.length ? ` · missing: ${missing.join(", ")}` : ""}`;
      state.bootstrapped = true;
      state.bootstrapFailed = false;
      $("key-box").classList.remove("needs-key");
      refreshKeyUi();
      notice(null);
    } catch (err) {
      status.textContent = "";
      state.bootstrapFailed = true;
      renderStyles();
      const text = describe(err);
      if (!(err instanceof ApiError && (err.status === 401 || err.status === 403))) notice(text);
    }
  }

  buildStaticOptions();
  refreshKeyUi();
  renderStyles();
  bootstrap();
})();
