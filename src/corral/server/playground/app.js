// corral playground: a form built from /openapi.json, predictions streamed over SSE.
// Plain JS, no dependencies, no inline code (the page's CSP allows scripts from this
// origin only). Every request goes to this origin, with the bearer token when there is
// one; bodies are JSON or multipart, never form-encoded (the server refuses those).
"use strict";

(() => {
  const TOKEN_KEY = "corral.playground.token";
  const HISTORY_KEY = "corral.playground.history";
  const HISTORY_MAX = 50;
  const KEEP_CHARS = 4000; // longer strings are cut in the stored history
  const $ = (id) => document.getElementById(id);

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    components: {},
    fields: [],
    open: false, // the schema does not list the inputs: one JSON editor for all
    output: {}, // the Output schema
    streams: false,
    loaded: false,
    health: null,
    run: null, // the prediction in progress
    history: loadHistory(),
  };

  // -- DOM helpers -----------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key in node && typeof value !== "string") node[key] = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  function banner(text) {
    $("banner").textContent = text || "";
    show($("banner"), Boolean(text));
  }

  // -- requests --------------------------------------------------------------------------

  function withAuth(headers) {
    const out = Object.assign({}, headers || {});
    if (state.token) out.Authorization = "Bearer " + state.token;
    return out;
  }

  // fetch() on this origin with the token; a 401 asks for a token and tries again.
  async function api(path, options) {
    let refused = false;
    for (;;) {
      const opts = Object.assign({ cache: "no-store", credentials: "same-origin" }, options);
      opts.headers = withAuth(options && options.headers);
      const res = await fetch(path, opts);
      if (res.status !== 401) return res;
      await askToken(refused || state.token ? "The server refused that token; try again." : "");
      refused = true;
    }
  }

  let tokenWaiters = [];

  function askToken(why) {
    const dialog = $("token-dialog");
    const error = $("token-error");
    error.textContent = why;
    show(error, Boolean(why));
    $("token-input").value = "";
    if (!dialog.open) dialog.showModal();
    $("token-input").focus();
    return new Promise((resolve) => tokenWaiters.push(resolve));
  }

  function tokenGiven(event) {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    state.token = value;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token-dialog").close();
    show($("forget-token"), true);
    const waiters = tokenWaiters;
    tokenWaiters = [];
    waiters.forEach((resolve) => resolve());
  }

  function forgetToken() {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    show($("forget-token"), false);
    location.reload();
  }

  function problemText(detail) {
    if (Array.isArray(detail)) {
      return detail.map((p) => {
        const where = locText((p.loc || []).slice(2));
        return where ? `${where}: ${p.msg}` : p.msg;
      }).join("; ");
    }
    return typeof detail === "string" ? detail : JSON.stringify(detail);
  }

  async function errorOf(res) {
    let detail = res.statusText || `HTTP ${res.status}`;
    try {
      const body = await res.json();
      if (body && body.detail !== undefined) detail = body.detail;
    } catch (_) { /* not JSON: the status text */ }
    return detail;
  }

  // -- health ----------------------------------------------------------------------------

  const HEALTH_TEXT = {
    READY: "ready", BUSY: "busy", STARTING: "starting", SETUP_FAILED: "setup failed",
    DEFUNCT: "defunct", LOCKED: "token needed",
  };

  async function pollHealth() {
    let status = "UNREACHABLE";
    let setupLogs = "";
    try {
      const res = await fetch("health-check", { cache: "no-store" });
      const body = await res.json();
      // (a server that keeps /health-check behind its token: the schema asks for it)
      status = res.status === 401 ? "LOCKED" : String(body.status);
      setupLogs = (body.setup && body.setup.logs) || "";
    } catch (_) { /* the server is gone or restarting */ }
    state.health = status;
    const badge = $("health");
    badge.dataset.status = status.toLowerCase();
    badge.textContent = HEALTH_TEXT[status] || "unreachable";
    if (status === "SETUP_FAILED") {
      banner("The model's setup failed." + (setupLogs ? "\n" + setupLogs : ""));
    } else if (status !== "STARTING" && status !== "UNREACHABLE" && !state.loaded) {
      await loadSchema();
    }
    const soon = status === "STARTING" || status === "UNREACHABLE" || !state.loaded;
    setTimeout(pollHealth, soon ? 1000 : 5000);
  }

  // -- schema -> form ----------------------------------------------------------------------

  function deref(schema) {
    let s = schema;
    for (let i = 0; s && s.$ref && i < 20; i++) {
      s = state.components[s.$ref.split("/").pop()] || {};
    }
    return s === undefined ? {} : s;
  }

  function isNull(s) {
    return deref(s).type === "null";
  }

  // One field's kind, and the schema of its value (Optional's null left out).
  function fieldOf(name, prop, required) {
    let schema = deref(prop);
    let nullable = false;
    if (schema.anyOf && schema.anyOf.some(isNull)) {
      const rest = schema.anyOf.filter((s) => !isNull(s));
      nullable = true;
      if (rest.length === 1) schema = Object.assign({}, deref(rest[0]));
    }
    const description = prop.description || schema.description || "";
    const field = {
      name, required, nullable, description, schema, prop,
      hasDefault: "default" in prop, default: prop.default,
      title: prop.title || schema.title || "",
    };
    const type = schema.type;
    if (type === "string" && schema.format === "uri") field.kind = "file";
    else if (type === "array" && deref(schema.items || {}).format === "uri") field.kind = "files";
    else if (Array.isArray(schema.enum)) field.kind = "select";
    else if (type === "boolean") field.kind = "bool";
    else if (type === "integer" || type === "number") field.kind = "number";
    else if (type === "string") field.kind = "string";
    else if (type === "array" || type === "object" || schema.anyOf) field.kind = "json";
    else field.kind = "any";
    return field;
  }

  const TYPE_LABEL = {
    file: "file", files: "files", bool: "boolean", select: "choice", json: "JSON", any: "any",
  };

  function typeLabel(field) {
    if (field.kind === "number") return field.schema.type === "integer" ? "integer" : "number";
    if (field.kind === "string") return "string";
    if (field.kind === "json") return field.schema.type === "object" ? "JSON object"
      : field.schema.type === "array" ? "JSON array" : "JSON";
    return TYPE_LABEL[field.kind];
  }

  function constraintText(field) {
    const s = field.schema;
    const bits = [];
    const num = (v) => (s.type === "number" ? pyFloat(v) : String(v));
    if (s.minimum !== undefined && s.maximum !== undefined) {
      bits.push(`from ${num(s.minimum)} to ${num(s.maximum)}`);
    } else {
      if (s.minimum !== undefined) bits.push(`at least ${num(s.minimum)}`);
      if (s.maximum !== undefined) bits.push(`at most ${num(s.maximum)}`);
    }
    if (s.exclusiveMinimum !== undefined) bits.push(`above ${num(s.exclusiveMinimum)}`);
    if (s.exclusiveMaximum !== undefined) bits.push(`below ${num(s.exclusiveMaximum)}`);
    if (s.multipleOf !== undefined) bits.push(`a multiple of ${num(s.multipleOf)}`);
    if (s.minLength !== undefined) bits.push(`at least ${s.minLength} characters`);
    if (s.maxLength !== undefined) bits.push(`at most ${s.maxLength} characters`);
    if (s.pattern !== undefined) bits.push(`matching /${s.pattern}/`);
    if (s.minItems !== undefined && s.minItems === s.maxItems) {
      bits.push(`exactly ${s.minItems} items`);
    } else {
      if (s.minItems !== undefined) bits.push(`at least ${s.minItems} items`);
      if (s.maxItems !== undefined) bits.push(`at most ${s.maxItems} items`);
    }
    return bits;
  }

  function defaultText(field) {
    if (!field.hasDefault) return null;
    const d = field.default;
    if (d === null) return "none";
    if (typeof d === "string") return d === "" ? '""' : d;
    // one line, with a space after each comma and colon (display only)
    return JSON.stringify(d, null, 1).replace(/\n\s*/g, " ").replace(/([[{]) /g, "$1")
      .replace(/ ([\]}])/g, "$1");
  }

  function control(field) {
    const id = "in-" + field.name;
    const s = field.schema;
    const common = { id, name: field.name, "aria-describedby": "err-" + field.name };
    const d = field.default;
    switch (field.kind) {
      case "file":
      case "files":
        return el("input", Object.assign({ type: "file", multiple: field.kind === "files" },
          common));
      case "select": {
        const select = el("select", common);
        if (!field.required || field.nullable) {
          select.append(el("option", { value: "", text: field.hasDefault ? "(default)" : "—" }));
        }
        s.enum.forEach((value, i) => {
          const option = el("option", { value: String(i), text: String(value) });
          if (field.hasDefault && d === value) option.selected = true;
          select.append(option);
        });
        return select;
      }
      case "bool": {
        const box = el("input", Object.assign({ type: "checkbox", role: "switch" }, common));
        box.checked = d === true;
        return el("label", { class: "switch", for: id }, box,
          el("span", { class: "switch-text", text: "enabled" }));
      }
      case "number": {
        const integer = s.type === "integer";
        const attrs = Object.assign({
          type: "number", inputmode: integer ? "numeric" : "decimal",
          step: integer ? String(s.multipleOf || 1) : "any",
        }, common);
        if (s.minimum !== undefined) attrs.min = String(s.minimum);
        if (s.maximum !== undefined) attrs.max = String(s.maximum);
        const input = el("input", attrs);
        if (typeof d === "number") input.value = String(d);
        return input;
      }
      case "string": {
        const short = (s.maxLength !== undefined && s.maxLength <= 120) || s.format
          || s.pattern !== undefined;
        const node = short ? el("input", Object.assign({ type: "text", spellcheck: "false" },
          common)) : el("textarea", Object.assign({ rows: "3" }, common));
        if (typeof d === "string") node.value = d;
        return node;
      }
      default: { // json and any
        const node = el("textarea", Object.assign({ rows: "3", class: "mono",
          spellcheck: "false" }, common));
        if (field.hasDefault && d !== null) {
          const short = JSON.stringify(d);
          node.value = field.kind === "any" && typeof d === "string" ? d
            : short.length <= 60 ? short : JSON.stringify(d, null, 2);
          node.rows = Math.min(12, Math.max(2, node.value.split("\n").length));
        }
        node.placeholder = field.kind === "any" ? "JSON, or plain text"
          : s.type === "object" ? '{"key": "value"}' : "[1, 2, 3]";
        return node;
      }
    }
  }

  function fieldNode(field) {
    const label = el("label", { class: "field-label", for: "in-" + field.name },
      el("code", { class: "field-name", text: field.name }),
      field.required ? el("span", { class: "required", title: "required", text: "*" }) : null,
      el("span", { class: "field-type", text: typeLabel(field) }));
    const hints = [];
    const dflt = defaultText(field);
    if (dflt !== null) hints.push(`Default: ${dflt}`);
    hints.push(...constraintText(field));
    return el("div", { class: "field", "data-field": field.name, "data-kind": field.kind },
      label,
      field.description ? el("p", { class: "field-desc", text: field.description }) : null,
      control(field),
      hints.length ? el("p", { class: "field-hint", text: hints.join(" · ") }) : null,
      el("p", { class: "field-error", id: "err-" + field.name, hidden: true }));
  }

  async function loadSchema() {
    let res;
    try {
      res = await api("openapi.json");
    } catch (err) {
      banner("Cannot reach the server: " + err.message);
      return;
    }
    if (!res.ok) {
      banner("Cannot read /openapi.json: " + problemText(await errorOf(res)));
      return;
    }
    const doc = await res.json();
    const schemas = (doc.components && doc.components.schemas) || {};
    state.components = schemas;
    const input = deref(schemas.Input || {});
    const output = deref(schemas.Output || {});
    state.output = output;
    state.streams = output["x-cog-array-type"] === "iterator";
    const title = (doc.info && doc.info.title) || "corral";
    $("model-title").textContent = title;
    $("model-version").textContent = doc.info && doc.info.version ? "v" + doc.info.version : "";
    document.title = `${title} · corral playground`;
    const props = input.properties || {};
    const required = new Set(input.required || []);
    state.fields = Object.entries(props).map(([name, prop]) =>
      fieldOf(name, prop, required.has(name)));
    state.open = state.fields.length === 0 && input.additionalProperties !== false;
    const box = $("fields");
    box.replaceChildren();
    if (state.open) {
      const field = {
        name: "__input", kind: "json", required: false, hasDefault: true, default: {},
        schema: { type: "object" }, description: "The model's inputs, as one JSON object " +
          "(its type hints do not describe them).", title: "input",
      };
      state.fields = [field];
      box.append(fieldNode(field));
    } else if (state.fields.length === 0) {
      box.append(el("p", { class: "muted", text: "This model takes no inputs." }));
    }
    if (!state.open) state.fields.forEach((field) => box.append(fieldNode(field)));
    state.loaded = true;
    banner("");
    $("run").disabled = false;
    $("method").textContent = state.streams ? "streams its output" : "returns one output";
  }

  // -- values and validation (the server's messages, from msgspec) -----------------------

  // Python's repr of a float, which the server's messages use.
  function pyFloat(x) {
    if (!Number.isFinite(x)) return Number.isNaN(x) ? "nan" : x > 0 ? "inf" : "-inf";
    const a = Math.abs(x);
    if (a !== 0 && (a < 1e-4 || a >= 1e16)) {
      const [mantissa, exp] = x.toExponential().split("e");
      const e = Number(exp);
      return `${mantissa}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
    }
    const text = String(x);
    return Number.isInteger(x) ? text + ".0" : text;
  }

  function pyRepr(v) {
    if (typeof v === "string") {
      const quote = v.includes("'") && !v.includes('"') ? '"' : "'";
      const body = v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/\t/g, "\\t")
        .replace(/\r/g, "\\r");
      return quote + (quote === "'" ? body.replace(/'/g, "\\'") : body) + quote;
    }
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : pyFloat(v);
    if (typeof v === "boolean") return v ? "True" : "False";
    if (v === null) return "None";
    return JSON.stringify(v);
  }

  const TYPE_NAMES = {
    integer: "int", number: "float", string: "str", boolean: "bool", array: "array",
    object: "object", null: "null",
  };

  function typeName(schema) {
    const s = deref(schema);
    if (s.anyOf) return s.anyOf.map(typeName).join(" | ");
    if (s.type) return TYPE_NAMES[s.type] || s.type;
    if (Array.isArray(s.enum)) return typeof s.enum[0] === "number" ? "int" : "str";
    return "any";
  }

  function jsonType(v) {
    if (v === null) return "null";
    if (Array.isArray(v)) return "array";
    if (typeof v === "number") return Number.isInteger(v) ? "int" : "float";
    if (typeof v === "string") return "str";
    if (typeof v === "boolean") return "bool";
    return "object";
  }

  function fits(v, schema) {
    const s = deref(schema);
    if (s.anyOf) return s.anyOf.some((b) => fits(v, b));
    switch (s.type) {
      case "integer": return typeof v === "number" && Number.isInteger(v);
      case "number": return typeof v === "number";
      case "string": return typeof v === "string";
      case "boolean": return typeof v === "boolean";
      case "array": return Array.isArray(v);
      case "object": return v !== null && typeof v === "object" && !Array.isArray(v);
      case "null": return v === null;
      default: return true;
    }
  }

  function isMultiple(v, m) {
    const r = Math.abs(v % m);
    return r === 0 || Math.abs(r - Math.abs(m)) < 1e-12 * Math.abs(m);
  }

  // The first problem with ``v`` against ``schema`` as {loc, msg}, or null; the messages
  // are msgspec's, which the server's 422s carry.
  function check(v, schema, loc) {
    const s = deref(schema);
    if (!s || s === true || typeof s !== "object") return null;
    if (s.anyOf) {
      const branch = s.anyOf.find((b) => fits(v, b));
      if (branch === undefined) {
        return { loc, msg: `Expected \`${typeName(s)}\`, got \`${jsonType(v)}\`` };
      }
      return check(v, branch, loc);
    }
    if (Array.isArray(s.enum)) {
      return s.enum.some((e) => e === v) ? null : { loc, msg: `Invalid enum value ${pyRepr(v)}` };
    }
    if (s.type && !fits(v, s)) {
      return { loc, msg: `Expected \`${typeName(s)}\`, got \`${jsonType(v)}\`` };
    }
    const bad = (msg) => ({ loc, msg });
    if (s.type === "integer" || s.type === "number") {
      const int = s.type === "integer";
      const T = int ? "`int`" : "`float`";
      const f = int ? String : pyFloat;
      if (s.minimum !== undefined && v < s.minimum) return bad(`Expected ${T} >= ${f(s.minimum)}`);
      if (s.exclusiveMinimum !== undefined && v <= s.exclusiveMinimum) {
        return bad(int ? `Expected ${T} >= ${s.exclusiveMinimum + 1}`
          : `Expected ${T} > ${f(s.exclusiveMinimum)}`);
      }
      if (s.maximum !== undefined && v > s.maximum) return bad(`Expected ${T} <= ${f(s.maximum)}`);
      if (s.exclusiveMaximum !== undefined && v >= s.exclusiveMaximum) {
        return bad(int ? `Expected ${T} <= ${s.exclusiveMaximum - 1}`
          : `Expected ${T} < ${f(s.exclusiveMaximum)}`);
      }
      if (s.multipleOf !== undefined && !isMultiple(v, s.multipleOf)) {
        return bad(`Expected ${T} that's a multiple of ${f(s.multipleOf)}`);
      }
      return null;
    }
    if (s.type === "string") {
      const n = [...v].length;
      if (s.minLength !== undefined && n < s.minLength) {
        return bad(`Expected \`str\` of length >= ${s.minLength}`);
      }
      if (s.maxLength !== undefined && n > s.maxLength) {
        return bad(`Expected \`str\` of length <= ${s.maxLength}`);
      }
      if (s.pattern !== undefined) {
        let re = null;
        try { re = new RegExp(s.pattern, "u"); } catch (_) { /* a Python-only regex */ }
        if (re && !re.test(v)) return bad(`Expected \`str\` matching regex ${pyRepr(s.pattern)}`);
      }
      return null;
    }
    if (s.type === "array") {
      if (Array.isArray(s.prefixItems) && s.items === false
          && v.length !== s.prefixItems.length) {
        return bad(`Expected \`array\` of length ${s.prefixItems.length}, got ${v.length}`);
      }
      for (let i = 0; i < v.length; i++) {
        const item = Array.isArray(s.prefixItems) && i < s.prefixItems.length
          ? s.prefixItems[i] : s.items;
        const problem = item ? check(v[i], item, [...loc, i]) : null;
        if (problem) return problem;
      }
      if (s.minItems !== undefined && v.length < s.minItems) {
        return bad(`Expected \`array\` of length >= ${s.minItems}`);
      }
      if (s.maxItems !== undefined && v.length > s.maxItems) {
        return bad(`Expected \`array\` of length <= ${s.maxItems}`);
      }
      return null;
    }
    if (s.type === "object") {
      const props = s.properties || {};
      for (const [key, value] of Object.entries(v)) {
        const sub = key in props ? props[key]
          : typeof s.additionalProperties === "object" ? s.additionalProperties : null;
        // a dict's value: the server's location names the dict only (msgspec says [...])
        const problem = sub ? check(value, sub, key in props ? [...loc, key] : loc) : null;
        if (problem) return problem;
      }
      for (const key of s.required || []) {
        if (!(key in v)) return bad(`Object missing required field \`${key}\``);
      }
    }
    return null;
  }

  function locText(loc) {
    return loc.map((p, i) => (typeof p === "number" ? `[${p}]` : i ? `.${p}` : p)).join("");
  }

  // The form's values: {values, files, problems}; each problem is {name, loc, msg}.
  function collect() {
    const values = {};
    const files = {};
    const problems = [];
    const missing = (field) => {
      if (field.required) problems.push({ name: field.name, loc: [field.name],
        msg: "required input is missing" });
    };
    for (const field of state.fields) {
      const node = $("in-" + field.name);
      let value;
      if (field.kind === "file" || field.kind === "files") {
        if (node.files.length) files[field.name] = [...node.files];
        else missing(field);
        continue;
      } else if (field.kind === "bool") {
        value = node.checked;
      } else if (field.kind === "select") {
        if (node.value === "") { missing(field); continue; }
        value = field.schema.enum[Number(node.value)];
      } else if (field.kind === "number") {
        if (node.validity.badInput) {
          problems.push({ name: field.name, loc: [field.name],
            msg: `Expected \`${typeName(field.prop)}\`, got \`str\`` });
          continue;
        }
        if (node.value.trim() === "") { missing(field); continue; }
        value = Number(node.value);
      } else if (field.kind === "string") {
        if (node.value === "") { missing(field); continue; }
        value = node.value;
      } else { // json, any
        const text = node.value.trim();
        if (text === "") { missing(field); continue; }
        try {
          value = JSON.parse(text);
        } catch (err) {
          if (field.kind === "any") value = node.value;
          else {
            problems.push({ name: field.name, loc: [field.name],
              msg: "not valid JSON: " + err.message });
            continue;
          }
        }
      }
      if (field.name === "__input") {
        if (value === null || typeof value !== "object" || Array.isArray(value)) {
          problems.push({ name: field.name, loc: [], msg: "input must be an object" });
        } else Object.assign(values, value);
        continue;
      }
      const problem = check(value, field.prop, [field.name]);
      if (problem) problems.push(Object.assign({ name: field.name }, problem));
      else values[field.name] = value;
    }
    return { values, files, problems };
  }

  function clearProblems() {
    document.querySelectorAll(".field-error").forEach((node) => {
      node.textContent = "";
      node.hidden = true;
    });
    document.querySelectorAll(".field.invalid").forEach((n) => n.classList.remove("invalid"));
  }

  // Problems as {name, loc, msg}: shown under their fields; the rest in the error box.
  function showProblems(problems) {
    const loose = [];
    for (const p of problems) {
      const node = $("err-" + p.name);
      if (!node) { loose.push(p); continue; }
      const where = p.loc.length > 1 ? ` (at ${locText(p.loc)})` : "";
      node.textContent = node.textContent ? `${node.textContent}; ${p.msg}${where}`
        : p.msg + where;
      node.hidden = false;
      node.closest(".field").classList.add("invalid");
    }
    const first = document.querySelector(".field.invalid input, .field.invalid textarea, " +
      ".field.invalid select");
    if (first) first.focus();
    return loose;
  }

  // -- multipart bodies (file inputs) ----------------------------------------------------

  function quoteName(name) {
    return name.replace(/"/g, "%22").replace(/\r/g, "%0D").replace(/\n/g, "%0A");
  }

  // The inputs as one JSON part named "input", each file as its own part; the files are
  // read by the browser as the body is sent.
  function multipart(values, files) {
    const boundary = "----corral" + randomHex(12);
    const parts = [`--${boundary}\r\nContent-Disposition: form-data; name="input"\r\n` +
      `Content-Type: application/json\r\n\r\n${JSON.stringify(values)}\r\n`];
    for (const [name, list] of Object.entries(files)) {
      for (const file of list) {
        parts.push(`--${boundary}\r\nContent-Disposition: form-data; name="${quoteName(name)}"; ` +
          `filename="${quoteName(file.name)}"\r\n` +
          `Content-Type: ${file.type || "application/octet-stream"}\r\n\r\n`, file, "\r\n");
      }
    }
    parts.push(`--${boundary}--\r\n`);
    return { body: new Blob(parts), type: `multipart/form-data; boundary=${boundary}` };
  }

  function dataUrlOf(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  function randomHex(bytes) {
    const data = crypto.getRandomValues(new Uint8Array(bytes));
    return Array.from(data, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // -- output rendering --------------------------------------------------------------------

  function isDataUrl(v) {
    return typeof v === "string" && /^data:[\w.+-]+\/[\w.+-]+[;,]/.test(v);
  }

  // A /files link of this server: absolute (from its bound address, which may name it
  // otherwise than this page's address does) or relative. Fetched from this page's origin.
  function fileUrl(v) {
    if (typeof v !== "string" || !/^(https?:\/\/[^\s/]+)?(\/[^\s]*)?\/files\/[\w-]+$/.test(v)) {
      return null;
    }
    try {
      const url = new URL(v, location.href);
      const ours = url.origin === location.origin || url.port === location.port;
      return ours ? new URL(url.pathname, location.href) : null;
    } catch (_) {
      return null;
    }
  }

  function isFileLike(v) {
    return isDataUrl(v) || fileUrl(v) !== null;
  }

  function dataUrlBlob(v) {
    const comma = v.indexOf(",");
    const meta = v.slice(5, comma);
    const type = meta.split(";")[0];
    const payload = v.slice(comma + 1);
    let bytes;
    if (meta.endsWith(";base64")) {
      const raw = atob(payload);
      bytes = new Uint8Array(raw.length);
      for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    } else {
      bytes = new TextEncoder().encode(decodeURIComponent(payload));
    }
    return new Blob([bytes], { type });
  }

  const EXTENSIONS = {
    "image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp",
    "image/svg+xml": "svg", "audio/wav": "wav", "audio/mpeg": "mp3", "video/mp4": "mp4",
    "application/json": "json", "text/plain": "txt", "application/pdf": "pdf",
  };

  function mediaNode(blobUrl, type, name, size) {
    const box = el("figure", { class: "file-output" });
    if (type.startsWith("image/")) {
      const img = el("img", { src: blobUrl, alt: name, class: "output-image" });
      // a tiny image is shown a whole number of times larger, its pixels kept sharp
      img.addEventListener("load", () => {
        const side = Math.max(img.naturalWidth, img.naturalHeight);
        if (side > 0 && side < 128) {
          img.width = img.naturalWidth * Math.floor(160 / side);
          img.classList.add("small");
        }
      });
      box.append(img);
    } else if (type.startsWith("audio/")) {
      box.append(el("audio", { src: blobUrl, controls: true }));
    } else if (type.startsWith("video/")) {
      box.append(el("video", { src: blobUrl, controls: true, class: "output-image" }));
    }
    box.append(el("figcaption", {},
      el("a", { href: blobUrl, download: name, class: "download", text: `Download ${name}` }),
      el("span", { class: "muted", text: ` ${type || "file"}${size ? ", " + humanBytes(size) : ""}` })));
    return box;
  }

  function humanBytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  }

  let fileCount = 0;

  function fileNode(v) {
    fileCount += 1;
    if (isDataUrl(v)) {
      const blob = dataUrlBlob(v);
      const name = `output-${fileCount}.${EXTENSIONS[blob.type] || "bin"}`;
      return mediaNode(URL.createObjectURL(blob), blob.type, name, blob.size);
    }
    // A /files link: fetched with the token (a plain link could not send it).
    const url = fileUrl(v);
    const box = el("figure", { class: "file-output" },
      el("span", { class: "muted", text: "Fetching " + url.pathname + "…" }));
    api(url.pathname, {}).then(async (res) => {
      if (!res.ok) throw new Error(problemText(await errorOf(res)));
      const blob = await res.blob();
      const disposition = res.headers.get("content-disposition") || "";
      const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
      const name = match ? decodeURIComponent(match[1]) : url.pathname.split("/").pop();
      box.replaceWith(mediaNode(URL.createObjectURL(blob), blob.type, name, blob.size));
    }).catch((err) => {
      box.replaceChildren(el("span", { class: "field-error", text: `${v}: ${err.message}` }));
    });
    return box;
  }

  function valueNode(v) {
    if (v === null || v === undefined) return el("p", { class: "muted", text: "(no output)" });
    if (isFileLike(v)) return fileNode(v);
    if (typeof v === "string") {
      if (/^https?:\/\//.test(v) && !/\s/.test(v)) {
        return el("p", {}, el("a", { href: v, rel: "noopener noreferrer", target: "_blank",
          text: v }));
      }
      return el("pre", { class: "text-output", text: v });
    }
    if (typeof v === "number" || typeof v === "boolean") {
      return el("pre", { class: "text-output", text: String(v) });
    }
    if (Array.isArray(v) && v.length && v.every(isFileLike)) {
      return el("div", { class: "gallery" }, v.map(fileNode));
    }
    return el("pre", { class: "json-output", text: JSON.stringify(v, null, 2) });
  }

  // Stream chunks as they come: strings are one text (tokens), anything else one item each.
  class StreamView {
    constructor(box) {
      this.box = box;
      this.text = null;
      this.textNode = null;
    }

    add(chunk) {
      if (typeof chunk === "string" && !isFileLike(chunk)) {
        if (this.textNode === null) {
          this.textNode = document.createTextNode("");
          this.box.append(el("pre", { class: "text-output" }, this.textNode));
        }
        this.textNode.appendData(chunk);
      } else {
        this.textNode = null;
        this.box.append(valueNode(chunk));
      }
    }
  }

  // -- a run -------------------------------------------------------------------------------

  function setStatus(status, text) {
    const node = $("status");
    node.dataset.status = status;
    node.textContent = text || status;
  }

  function setProgress(p) {
    const box = $("progress-box");
    const bar = $("progress");
    show(box, true);
    const total = typeof p.total === "number" && p.total > 0 ? p.total : null;
    if (total === null) {
      bar.removeAttribute("value");
      $("progress-label").textContent = `${p.phase ? p.phase + " " : ""}${p.step}`;
      return;
    }
    bar.max = total;
    bar.value = Math.min(p.step, total);
    const pct = Math.round((100 * Math.min(p.step, total)) / total);
    $("progress-label").textContent = `${p.phase ? p.phase + " · " : ""}${p.step} / ${total} (${pct}%)`;
  }

  function appendLog(text) {
    const logs = $("logs");
    const atBottom = logs.scrollHeight - logs.scrollTop - logs.clientHeight < 24;
    logs.append(document.createTextNode(text));
    if (atBottom) logs.scrollTop = logs.scrollHeight;
    const lines = logs.textContent.split("\n").filter(Boolean).length;
    $("logs-count").textContent = lines ? `(${lines} line${lines === 1 ? "" : "s"})` : "";
  }

  function seconds(ms) {
    if (ms < 10) return `${ms.toFixed(1)} ms`;
    return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
  }

  function showMetrics(metrics, timing) {
    const box = $("metrics");
    box.replaceChildren();
    const rows = [];
    if (timing.total !== undefined) rows.push(["total time", seconds(timing.total)]);
    if (timing.first !== undefined && state.streams) {
      rows.push(["first output", seconds(timing.first)]);
    }
    for (const [name, value] of Object.entries(metrics || {})) {
      rows.push([name.replace(/_/g, " "), name.endsWith("_time") && typeof value === "number"
        ? seconds(value * 1000) : typeof value === "object" ? JSON.stringify(value)
          : String(value)]);
    }
    for (const [name, value] of rows) {
      box.append(el("div", { class: "metric", "data-metric": name },
        el("dt", { text: name }), el("dd", { text: value })));
    }
    show(box, rows.length > 0);
  }

  function showError(text) {
    $("error").textContent = text;
    show($("error"), Boolean(text));
  }

  function resetOutput() {
    $("output").replaceChildren();
    $("logs").textContent = "";
    $("logs-count").textContent = "";
    showError("");
    show($("metrics"), false);
    show($("progress-box"), false);
    $("progress").value = 0;
  }

  function setRunning(running) {
    $("run").disabled = running || !state.loaded;
    $("cancel").disabled = !running;
    $("run").textContent = running ? "Running…" : "Run";
  }

  async function startRun(event) {
    event.preventDefault();
    if (state.run) return;
    clearProblems();
    const { values, files, problems } = collect();
    if (problems.length) {
      const loose = showProblems(problems);
      setStatus("invalid", "check the inputs");
      if (loose.length) showError(loose.map((p) => p.msg).join("; "));
      return;
    }
    const id = randomHex(16);
    const shown = Object.assign({}, values);
    for (const [name, list] of Object.entries(files)) {
      shown[name] = list.length === 1 ? list[0].name : list.map((f) => f.name);
    }
    const entry = { id, started: new Date().toISOString(), input: shown, status: "starting" };
    const run = { id, entry, chunks: [], t0: performance.now(), first: undefined,
      cancelled: false, abort: new AbortController() };
    state.run = run;
    state.history.unshift(entry);
    renderHistory();
    resetOutput();
    setRunning(true);
    setStatus("starting", "starting…");
    const view = new StreamView($("output"));
    let final = null;
    try {
      const { body, type } = await requestBody(values, files);
      const headers = { Accept: "text/event-stream", "Content-Type": type };
      const res = await api(`predictions/${id}`, { method: "PUT", headers, body,
        signal: run.abort.signal });
      if (!res.ok) {
        const detail = await errorOf(res);
        final = { status: "failed", error: problemText(detail) };
        if (res.status === 422 && Array.isArray(detail)) {
          const loose = showProblems(detail.map((p) => ({ name: p.loc[2], loc: p.loc.slice(2),
            msg: p.msg })));
          final.error = loose.length ? problemText(detail)
            : "The server refused some inputs (see the form).";
        }
      } else if ((res.headers.get("content-type") || "").startsWith("text/event-stream")) {
        setStatus("processing", "running…");
        entry.status = "processing";
        renderHistory();
        final = await follow(res, run, view);
      } else {
        final = await res.json(); // an earlier prediction of this id, already finished
      }
    } catch (err) {
      final = { status: run.cancelled ? "canceled" : "failed",
        error: run.cancelled ? null : "The request failed: " + err.message };
    }
    finish(run, final || { status: "failed", error: "The server closed the stream early." });
  }

  // The body of a run: JSON, or multipart when a file is picked (repeated parts of one
  // name make a list). One file for a list input goes as a data: URL in a list instead (one
  // part would be a single value, not a list of one; its name is lost on the way).
  async function requestBody(values, files) {
    const parts = {};
    for (const field of state.fields) {
      const picked = files[field.name];
      if (!picked) continue;
      if (field.kind === "files" && picked.length === 1) {
        values[field.name] = [await dataUrlOf(picked[0])];
      } else parts[field.name] = picked;
    }
    if (Object.keys(parts).length) return multipart(values, parts);
    return { body: JSON.stringify({ input: values }), type: "application/json" };
  }

  // Read the SSE stream of a run; the last record (completed or error), or null.
  async function follow(res, run, view) {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return null;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const raw = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        let name = "message";
        const data = [];
        for (const line of raw.split(/\r?\n/)) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (!data.length) continue;
        const payload = JSON.parse(data.join("\n"));
        const last = onEvent(name, payload, run, view);
        if (last) return last;
      }
    }
  }

  function onEvent(name, payload, run, view) {
    if (run.first === undefined && (name === "output" || name === "completed")) {
      run.first = performance.now() - run.t0;
    }
    switch (name) {
      case "output":
        run.chunks.push(payload);
        view.add(payload);
        return null;
      case "logs":
        appendLog(payload);
        return null;
      case "progress":
        setProgress(payload);
        return null;
      case "metric":
        return null;
      case "completed":
      case "error":
        return payload;
      default:
        return null;
    }
  }

  function finish(run, record) {
    const total = performance.now() - run.t0;
    const entry = run.entry;
    entry.status = record.status || "failed";
    entry.error = record.error || null;
    entry.metrics = record.metrics || {};
    entry.logs = typeof record.logs === "string" ? record.logs : $("logs").textContent;
    entry.timing = { total, first: run.first };
    entry.output = state.streams ? run.chunks : record.output;
    if (!state.streams && entry.status === "succeeded") {
      $("output").replaceChildren(valueNode(record.output));
    }
    if (!$("logs").textContent && entry.logs) appendLog(entry.logs);
    if (entry.status === "failed") showError(entry.error || "The prediction failed.");
    if (entry.status === "canceled" && !$("output").childNodes.length) {
      $("output").append(el("p", { class: "muted", text: "Canceled before any output." }));
    }
    if (entry.status === "succeeded" && $("progress-box").hidden === false) {
      $("progress").value = $("progress").max;
    }
    setStatus(entry.status, entry.status);
    showMetrics(entry.metrics, entry.timing);
    state.run = null;
    setRunning(false);
    saveHistory();
    renderHistory();
  }

  async function cancelRun() {
    const run = state.run;
    if (!run || run.cancelled) return;
    run.cancelled = true;
    $("cancel").disabled = true;
    setStatus("canceling", "canceling…");
    try {
      const res = await api(`predictions/${run.id}/cancel`, { method: "POST",
        headers: { "Content-Type": "application/json" }, body: "{}" });
      if (!res.ok && res.status !== 404) throw new Error(problemText(await errorOf(res)));
      if (res.status === 404) run.abort.abort(); // not begun yet: leaving cancels it
    } catch (_) {
      run.abort.abort(); // the server cancels a prediction whose stream is closed
    }
  }

  // -- history -----------------------------------------------------------------------------

  function loadHistory() {
    try {
      const list = JSON.parse(sessionStorage.getItem(HISTORY_KEY) || "[]");
      return Array.isArray(list) ? list.filter((e) => e && e.id && e.timing) : [];
    } catch (_) {
      return [];
    }
  }

  function trimmed(value) {
    if (typeof value === "string") {
      return value.length > KEEP_CHARS ? value.slice(0, KEEP_CHARS) + "… (cut)" : value;
    }
    if (Array.isArray(value)) return value.map(trimmed);
    if (value && typeof value === "object") {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, trimmed(v)]));
    }
    return value;
  }

  function saveHistory() {
    state.history = state.history.slice(0, HISTORY_MAX);
    const done = state.history.filter((e) => e.timing); // finished ones
    try {
      sessionStorage.setItem(HISTORY_KEY, JSON.stringify(trimmed(done)));
    } catch (_) { /* storage full: the history stays in this page only */ }
  }

  function summary(input) {
    const text = Object.entries(input || {}).map(([k, v]) =>
      `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(", ");
    return text.length > 80 ? text.slice(0, 79) + "…" : text || "(none)";
  }

  function renderHistory() {
    const rows = $("history-rows");
    rows.replaceChildren();
    for (const entry of state.history) {
      const time = new Date(entry.started).toLocaleTimeString();
      const took = entry.timing ? seconds(entry.timing.total) : "…";
      const view = el("button", { type: "button", class: "link-button", text: "View" });
      const reuse = el("button", { type: "button", class: "link-button", text: "Reuse inputs" });
      view.addEventListener("click", () => viewEntry(entry));
      reuse.addEventListener("click", () => reuseInputs(entry));
      rows.append(el("tr", { "data-id": entry.id, "data-status": entry.status },
        el("td", { text: time }),
        el("td", {}, el("span", { class: "status", "data-status": entry.status,
          text: entry.status })),
        el("td", { class: "mono", title: JSON.stringify(entry.input), text: summary(entry.input) }),
        el("td", { text: took }),
        el("td", { class: "row-actions" }, entry.timing ? [view, reuse] : null)));
    }
    show($("history"), state.history.length > 0);
    show($("history-empty"), state.history.length === 0);
  }

  function viewEntry(entry) {
    if (state.run) return;
    resetOutput();
    if (state.streams && Array.isArray(entry.output)) {
      const view = new StreamView($("output"));
      entry.output.forEach((chunk) => view.add(chunk));
    } else if (entry.status === "succeeded") {
      $("output").append(valueNode(entry.output));
    }
    if (entry.logs) appendLog(entry.logs);
    if (entry.error) showError(entry.error);
    setStatus(entry.status, entry.status);
    showMetrics(entry.metrics, entry.timing || {});
  }

  function reuseInputs(entry) {
    for (const field of state.fields) {
      if (!(field.name in (entry.input || {}))) continue;
      const node = $("in-" + field.name);
      const value = entry.input[field.name];
      if (field.kind === "bool") node.checked = Boolean(value);
      else if (field.kind === "select") node.value = String(field.schema.enum.indexOf(value));
      else if (field.kind === "json") node.value = JSON.stringify(value, null, 2);
      else if (field.kind === "any") node.value = typeof value === "string" ? value
        : JSON.stringify(value);
      else if (field.kind !== "file" && field.kind !== "files") node.value = String(value);
    }
    clearProblems();
  }

  function resetForm() {
    if (!state.loaded) return;
    const box = $("fields");
    box.replaceChildren(...state.fields.map(fieldNode));
    clearProblems();
  }

  // -- start -------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("form").addEventListener("submit", startRun);
    $("cancel").addEventListener("click", cancelRun);
    $("reset").addEventListener("click", resetForm);
    $("token-form").addEventListener("submit", tokenGiven);
    $("token-dialog").addEventListener("cancel", (event) => event.preventDefault());
    $("forget-token").addEventListener("click", forgetToken);
    show($("forget-token"), Boolean(state.token));
    renderHistory();
    pollHealth();
  });
})();
