/* Visual rule builder of the segment admin (vanilla JS, no build step).
 *
 * It edits the same JSON the API accepts: nested groups (all / any / not) of conditions, each offering
 * the fields, operators and value inputs of the catalogue the server renders from rule_catalogue().
 * The JSON textarea stays the source of truth for the form and is kept in sync both ways, so power
 * users can paste or type a rule. As the rule changes, a debounced call to the preview view shows how
 * many profiles match, a sample of them, and the server's validation errors against their nodes.
 */
(function () {
  "use strict";

  const DEBOUNCE_MS = 400;

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children || []) if (child) node.appendChild(child);
    return node;
  }

  // Screen readers get the input's role as its name ("field", "op", "value"…): rows have no labels.
  function labelled(attrs) {
    return Object.assign({ "aria-label": attrs && attrs["data-role"] ? attrs["data-role"].replace("-", " ") : undefined }, attrs);
  }

  function select(options, current, onchange, attrs) {
    const node = el("select", Object.assign({ class: "pz-input", onchange: (e) => onchange(e.target.value) }, labelled(attrs)));
    for (const [value, label] of options) {
      const option = el("option", { value: value, text: label });
      if (String(value) === String(current)) option.selected = true;
      node.appendChild(option);
    }
    return node;
  }

  function input(value, onchange, attrs) {
    return el("input", Object.assign({
      class: "pz-input", type: "text", value: value === undefined || value === null ? "" : String(value),
      oninput: (e) => onchange(e.target.value),
    }, labelled(attrs)));
  }

  /* Typed values from text inputs: numbers for numeric fields, and for traits (any type) numbers,
   * booleans or strings as typed. An empty input is left empty, for validation to point at. */
  function parseScalar(text, valueType) {
    const raw = text.trim();
    if (raw === "") return undefined;
    if (valueType === "string") return text;
    if (valueType === "any") {
      if (raw === "true") return true;
      if (raw === "false") return false;
    }
    const number = Number(raw);
    if (raw !== "" && !Number.isNaN(number) && /^-?[0-9.eE+-]+$/.test(raw)) return number;
    return valueType === "any" ? text : raw;
  }

  function shown(value) {
    return value === undefined || value === null ? "" : String(value);
  }

  class Builder {
    constructor(root) {
      this.root = root;
      this.catalogue = JSON.parse(root.dataset.catalogue);
      this.hints = JSON.parse(root.dataset.hints || "{}");
      this.previewUrl = root.dataset.previewUrl;
      this.textarea = document.getElementById(root.dataset.textarea);
      this.tree = root.querySelector("[data-builder-tree]");
      this.status = root.querySelector("[data-builder-status]");
      this.count = root.querySelector("[data-preview-count]");
      this.sample = root.querySelector("[data-preview-sample]");
      this.jsonNote = root.querySelector("[data-json-note]");
      this.timer = null;
      this.request = 0;
      this.errors = JSON.parse(root.dataset.errors || "[]");
      this.rule = this.parseText(this.textarea.value) || { all: [] };
      this.textarea.addEventListener("input", () => this.fromText());
      this.render();
      this.schedulePreview(0);
    }

    parseText(text) {
      if (!text.trim()) return { all: [] };
      try {
        const value = JSON.parse(text);
        if (this.jsonNote) this.jsonNote.textContent = "";
        return value;
      } catch (err) {
        if (this.jsonNote) this.jsonNote.textContent = "The JSON does not parse yet: " + err.message;
        return null;
      }
    }

    fromText() {
      const rule = this.parseText(this.textarea.value);
      if (rule === null) return;
      this.rule = rule;
      this.errors = [];
      this.render();
      this.schedulePreview(DEBOUNCE_MS);
    }

    /* The tree is edited in place; typing only syncs the JSON and the preview (re-rendering would
     * take the focus away), choosing in a select re-renders, as the inputs on offer may change. */
    changed(quiet) {
      this.textarea.value = JSON.stringify(this.rule, null, 2);
      if (this.jsonNote) this.jsonNote.textContent = "";
      if (!quiet) this.render();
      this.schedulePreview(DEBOUNCE_MS);
    }

    /* --- the tree ------------------------------------------------------------------------------- */

    render() {
      this.tree.replaceChildren(this.renderNode(this.rule, "$", null));
      this.showErrors();
    }

    renderNode(node, path, remove) {
      if (node && typeof node === "object" && !Array.isArray(node)) {
        if (Array.isArray(node.all) || Array.isArray(node.any) || "not" in node) {
          return this.renderGroup(node, path, remove);
        }
        if ("kind" in node) return this.renderCondition(node, path, remove);
      }
      // Something the builder cannot show (the JSON view can): say so at its place, keep it as is.
      return el("div", { class: "pz-node pz-unknown", "data-path": path }, [
        el("code", { text: JSON.stringify(node) }),
        remove ? el("button", { type: "button", class: "pz-remove", text: "remove", onclick: remove }) : null,
      ]);
    }

    renderGroup(node, path, remove) {
      const mode = Array.isArray(node.all) ? "all" : Array.isArray(node.any) ? "any" : "not";
      const children = () => {
        if (mode !== "not") return node[mode];
        return node.not && typeof node.not === "object" ? [node.not] : [];
      };
      const setMode = (next) => {
        const kids = children().slice();
        delete node.all;
        delete node.any;
        delete node.not;
        if (next === "not") node.not = kids.length === 1 ? kids[0] : { all: kids };
        else node[next] = kids;
        this.changed();
      };
      const add = (child) => {
        if (mode !== "not") node[mode].push(child);
        else if (!node.not || (Array.isArray(node.not.all) && !node.not.all.length)) node.not = child;
        else if (Array.isArray(node.not.all)) node.not.all.push(child);
        else node.not = { all: [node.not, child] };
        this.changed();
      };
      const header = el("div", { class: "pz-group-head" }, [
        select(Object.entries(this.catalogue.groups), mode, setMode, { "data-role": "group-mode" }),
        el("span", { class: "pz-muted", text: mode === "not" ? "(profiles for which this does not hold)" : "" }),
        el("span", { class: "pz-spacer" }),
        el("button", {
          type: "button", class: "pz-add", "data-role": "add-condition", text: "+ condition",
          onclick: () => add({ kind: "profile", field: "event_count", op: "gte", value: 1 }),
        }),
        el("button", {
          type: "button", class: "pz-add", "data-role": "add-group", text: "+ group",
          onclick: () => add({ any: [] }),
        }),
        remove ? el("button", { type: "button", class: "pz-remove", text: "remove group", onclick: remove }) : null,
      ]);
      const list = el("div", { class: "pz-children" });
      children().forEach((child, index) => {
        const childPath = mode === "not" ? path + ".not" : path + "." + mode + "[" + index + "]";
        const removeChild = () => {
          if (mode === "not") node.not = { all: [] };
          else node[mode].splice(index, 1);
          this.changed();
        };
        list.appendChild(this.renderNode(child, childPath, removeChild));
      });
      if (!children().length) list.appendChild(el("div", { class: "pz-muted", text: "Empty group: add a condition." }));
      return el("div", { class: "pz-node pz-group", "data-path": path }, [header, list]);
    }

    conditionSpec(node) {
      const kind = this.catalogue.kinds[node.kind] || {};
      if (node.kind === "trait") return { valueType: kind.value_type, operators: kind.operators };
      if (node.kind === "profile" || node.kind === "context") {
        const field = (kind.fields || {})[node.field];
        return field ? { valueType: field.value_type, operators: field.operators } : null;
      }
      if (node.kind === "event") {
        const measure = kind.measures[node.measure || "count"];
        return measure ? { valueType: measure.value_type, operators: measure.operators, window: measure.window } : null;
      }
      if (node.kind === "score") {
        const field = kind.fields[node.field || "value"];
        return field ? { valueType: field.value_type, operators: field.operators } : null;
      }
      return null; // consent, segment: no operator
    }

    defaultCondition(kind) {
      const spec = this.catalogue.kinds[kind];
      if (kind === "trait") return { kind, name: "", op: "eq", value: "" };
      if (kind === "profile" || kind === "context") {
        const [field, info] = Object.entries(spec.fields)[0];
        return { kind, field, op: info.operators[0] };
      }
      if (kind === "event") return { kind, event: "", measure: "count", within: 30, op: "gte", value: 1 };
      if (kind === "consent") return { kind, purpose: "personalization", state: "granted" };
      if (kind === "segment") return { kind, segment: "" };
      if (kind === "score") return { kind, name: "churn_risk", field: "value", op: "gte", value: 0.5 };
      return { kind };
    }

    renderCondition(node, path, remove) {
      // quiet: typed into a text input (keep the focus); otherwise re-render.
      const update = (patch, quiet) => {
        for (const [key, value] of Object.entries(patch)) {
          if (value === undefined) delete node[key];
          else node[key] = value;
        }
        this.changed(quiet);
      };
      const typed = (key, convert) => (v) => update({ [key]: convert ? convert(v) : v }, true);
      const setKind = (kind) => {
        for (const key of Object.keys(node)) delete node[key];
        Object.assign(node, this.defaultCondition(kind));
        this.changed();
      };
      const kinds = Object.entries(this.catalogue.kinds).map(([k, v]) => [k, v.label]);
      const row = el("div", { class: "pz-row" }, [select(kinds, node.kind, setKind, { "data-role": "kind" })]);
      const kind = this.catalogue.kinds[node.kind] || {};
      const list = (name) => (this.hints[name] ? "pz-hints-" + name : undefined);

      if (node.kind === "trait") {
        row.appendChild(input(node.name, typed("name"), { placeholder: "trait, e.g. plan", "data-role": "name" }));
      } else if (node.kind === "profile" || node.kind === "context") {
        const fields = Object.entries(kind.fields).map(([k, v]) => [k, v.label]);
        row.appendChild(select(fields, node.field, (field) => {
          const info = kind.fields[field];
          const op = info.operators.includes(node.op) ? node.op : info.operators[0];
          update({ field, op, value: undefined });
        }, { "data-role": "field" }));
      } else if (node.kind === "event") {
        row.appendChild(input(node.event, typed("event"), {
          placeholder: "event type, e.g. add_to_cart", list: list("events"), "data-role": "event",
        }));
        const measures = Object.entries(kind.measures).map(([k, v]) => [k, v.label]);
        row.appendChild(select(measures, node.measure || "count", (measure) => {
          const info = kind.measures[measure];
          update({
            measure, property: undefined, within: info.window ? node.within : undefined,
            op: info.operators.includes(node.op) ? node.op : info.operators[0],
          });
        }, { "data-role": "measure" }));
        if ((node.measure || "count") === "sum") {
          row.appendChild(input(node.property, typed("property", (v) => v || undefined), {
            placeholder: "property (default: value)", "data-role": "property",
          }));
        }
        const spec = this.conditionSpec(node);
        if (spec && spec.window) {
          row.appendChild(el("span", { class: "pz-muted", text: "within" }));
          row.appendChild(input(node.within, typed("within", (v) => (v.trim() ? Number(v) : undefined)), {
            placeholder: "ever", size: 5, "data-role": "within",
          }));
          row.appendChild(el("span", { class: "pz-muted", text: "days" }));
        }
      } else if (node.kind === "consent") {
        row.appendChild(input(node.purpose, typed("purpose"), {
          placeholder: "purpose", list: list("purposes"), "data-role": "purpose",
        }));
        row.appendChild(select(kind.params.state.choices.map((c) => [c, c]), node.state, (state) => update({ state }), {
          "data-role": "state",
        }));
      } else if (node.kind === "segment") {
        row.appendChild(input(node.segment, typed("segment"), {
          placeholder: "segment key", list: list("segments"), "data-role": "segment",
        }));
      } else if (node.kind === "score") {
        row.appendChild(input(node.name, typed("name"), { placeholder: "score", list: list("scores"), "data-role": "name" }));
        row.appendChild(select([["value", "value"], ["label", "label"]], node.field || "value", (field) => {
          const info = kind.fields[field];
          // Cluster names are labels (rfm_segment), churn risk is a value: follow the obvious switch.
          const name = { label: { churn_risk: "rfm_segment" }, value: { rfm_segment: "churn_risk" } }[field][node.name];
          update({
            field, name: name || node.name, op: info.operators.includes(node.op) ? node.op : info.operators[0],
            value: undefined,
          });
        }, { "data-role": "field" }));
      }

      const spec = this.conditionSpec(node);
      if (spec) {
        const operators = spec.operators.map((op) => [op, (this.catalogue.operators[op] || {}).label || op]);
        row.appendChild(select(operators, node.op, (op) => {
          const before = (this.catalogue.operators[node.op] || {}).value;
          const after = (this.catalogue.operators[op] || {}).value;
          update({ op, value: before === after ? node.value : undefined });
        }, { "data-role": "op" }));
        for (const part of this.valueInputs(node, spec, (patch) => update(patch, true))) row.appendChild(part);
      }
      row.appendChild(el("span", { class: "pz-spacer" }));
      if (remove) row.appendChild(el("button", { type: "button", class: "pz-remove", text: "remove", onclick: remove }));
      return el("div", { class: "pz-node pz-condition", "data-path": path }, [row]);
    }

    valueInputs(node, spec, update) {
      const shape = (this.catalogue.operators[node.op] || {}).value;
      const type = spec.valueType === "days" || spec.valueType === "integer" ? "number" : spec.valueType;
      const hints = node.kind === "score" && node.field === "label" ? "pz-hints-labels" : undefined;
      if (shape === "none") return [];
      if (shape === "list") {
        const text = Array.isArray(node.value) ? node.value.map(shown).join(", ") : shown(node.value);
        return [input(text, (v) => {
          const items = v.split(",").map((s) => parseScalar(s, type)).filter((s) => s !== undefined);
          update({ value: items });
        }, { placeholder: "comma-separated values", "data-role": "value" })];
      }
      if (shape === "pair") {
        const pair = Array.isArray(node.value) ? node.value.slice(0, 2) : [undefined, undefined];
        const set = (i) => (v) => {
          const next = [pair[0], pair[1]];
          next[i] = parseScalar(v, type);
          update({ value: next.map((x) => (x === undefined ? null : x)) });
        };
        return [
          input(shown(pair[0]), set(0), { placeholder: "low", size: 6, "data-role": "value-low" }),
          el("span", { class: "pz-muted", text: "and" }),
          input(shown(pair[1]), set(1), { placeholder: "high", size: 6, "data-role": "value-high" }),
        ];
      }
      return [input(shown(node.value), (v) => update({ value: parseScalar(v, shape === "text" ? "string" : type) }), {
        placeholder: "value", list: hints, "data-role": "value",
      })];
    }

    /* --- validation errors and the preview ------------------------------------------------------ */

    showErrors() {
      for (const old of this.tree.querySelectorAll(".pz-error")) old.remove();
      for (const node of this.tree.querySelectorAll(".pz-has-error")) node.classList.remove("pz-has-error");
      for (const error of this.errors) {
        const target = this.nodeFor(error.path);
        const note = el("div", { class: "pz-error", "data-error-path": error.path, text: error.path + ": " + error.message });
        if (target) {
          target.classList.add("pz-has-error");
          target.appendChild(note);
        } else {
          this.tree.appendChild(note);
        }
      }
    }

    /* The node an error path points into: the longest node path that prefixes it. */
    nodeFor(path) {
      let best = null;
      for (const node of this.tree.querySelectorAll("[data-path]")) {
        const own = node.dataset.path;
        if ((path === own || path.startsWith(own + ".") || path.startsWith(own + "[")) &&
            (!best || own.length > best.dataset.path.length)) {
          best = node;
        }
      }
      return best;
    }

    schedulePreview(delay) {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.preview(), delay);
    }

    async preview() {
      const id = ++this.request;
      this.status.textContent = "Counting…";
      this.root.dataset.state = "loading";
      let body;
      try {
        const response = await fetch(this.previewUrl, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRFToken": this.csrf() },
          body: JSON.stringify({ rule: this.rule }),
        });
        body = await response.json();
      } catch (err) {
        if (id !== this.request) return;
        this.status.textContent = "Preview unavailable: " + err.message;
        this.root.dataset.state = "failed";
        return;
      }
      if (id !== this.request) return; // a newer edit is being counted
      this.errors = body.errors || [];
      this.showErrors();
      if (this.errors.length) {
        this.count.textContent = "—";
        this.status.textContent = this.errors.length + " problem(s) in the rule";
        this.sample.replaceChildren();
        this.root.dataset.state = "invalid";
        return;
      }
      this.count.textContent = Number(body.count).toLocaleString();
      this.status.textContent = body.count === 1 ? "profile matches now" : "profiles match now";
      this.sample.replaceChildren(...(body.sample || []).map((p) =>
        el("li", {}, [el("a", { href: p.url, target: "_blank", text: p.label })])));
      this.root.dataset.state = "ready";
    }

    csrf() {
      const field = document.querySelector("input[name=csrfmiddlewaretoken]");
      if (field) return field.value;
      const match = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
      return match ? decodeURIComponent(match[1]) : "";
    }
  }

  function start() {
    for (const root of document.querySelectorAll("[data-rule-builder]")) {
      if (!root.builder) root.builder = new Builder(root);
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
