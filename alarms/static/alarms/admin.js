// The alarm form's operator panel (templates/alarms/admin/alarm_change_form.html,
// alarms/operator.py): the live preview, the live reach and "Send a test to me".
// Configured from the data-* attributes of #alarms-operator. Alarm text goes
// in with textContent only.
import { chooseLanguage } from "./client/language.js";

const REACH_DELAY = 400; // ms after the last edit of the audience or the languages
const REACH_EVERY = 5000; // ms: readers come and go while the operator types

function parse(text, fallback) {
  try {
    return JSON.parse(text);
  } catch (error) {
    return fallback;
  }
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

function format(template, values) {
  return template.replace(/%\((\w+)\)s/g, (_m, name) => (name in values ? values[name] : ""));
}

class Panel {
  constructor(root) {
    this.root = root;
    this.form = root.closest("form");
    this.languages = parse(root.dataset.languages, []);
    this.defaultLanguage = root.dataset.defaultLanguage || "";
    this.words = parse(root.dataset.words, {});
    this.names = {};
    for (const language of this.languages) {
      this.names[language.code] = language.name;
    }
    this.preview = root.querySelector("[data-preview]");
    this.summary = root.querySelector("[data-reach-summary]");
    this.reachBody = root.querySelector("[data-reach-table] tbody");
    this.result = root.querySelector("[data-test-result]");
    this.reachTimer = null;
    this.reachKey = "";
    this.reachAsked = 0;
  }

  start() {
    const changed = () => {
      this.renderPreview();
      this.scheduleReach();
    };
    this.form.addEventListener("input", changed);
    this.form.addEventListener("change", changed);
    // The admin adds translation rows, and moves users and groups between the
    // two boxes of its selectors, without an input event.
    // (Not this panel's own redrawing, which would loop.)
    new MutationObserver((records) => {
      if (records.some((r) => !this.root.contains(r.target))) {
        changed();
      }
    }).observe(this.form, { childList: true, subtree: true });
    this.root.querySelector("[data-test-send]").addEventListener("click", () => this.sendTest());
    this.renderPreview();
    this.reach();
    window.setInterval(() => this.reach(true), REACH_EVERY);
  }

  // -- the form as it stands -------------------------------------------------

  field(name) {
    return this.form.elements.namedItem(name);
  }

  // {code: {title, message}} of the translation rows filled in and not deleted.
  translations() {
    const found = {};
    const total = this.field("translations-TOTAL_FORMS");
    const count = total ? parseInt(total.value, 10) || 0 : 0;
    for (let i = 0; i < count; i += 1) {
      const prefix = "translations-" + i + "-";
      const code = this.field(prefix + "language_code");
      const title = this.field(prefix + "title");
      const message = this.field(prefix + "message");
      const remove = this.field(prefix + "DELETE");
      if (!code || !code.value || !title || (remove && remove.checked)) {
        continue;
      }
      const text = { title: title.value.trim(), message: message ? message.value.trim() : "" };
      if (text.title || text.message) {
        found[code.value] = text;
      }
    }
    return found;
  }

  // The ids chosen in a many-to-many selector: every option of the admin's
  // "chosen" box, or the selected options of a plain select.
  chosen(name) {
    const box = document.getElementById("id_" + name + "_to");
    if (box) {
      return Array.from(box.options).map((o) => o.value);
    }
    const select = this.field(name);
    return select && select.options ? Array.from(select.selectedOptions).map((o) => o.value) : [];
  }

  value(name, fallback) {
    const input = this.field(name);
    return input && input.value ? input.value : fallback;
  }

  // -- preview ---------------------------------------------------------------

  renderPreview() {
    const texts = this.translations();
    const available = Object.keys(texts);
    const level = this.value("level", "info");
    this.preview.textContent = "";
    if (!available.length) {
      this.preview.appendChild(el("p", "help", this.words.none || "No translations yet."));
      return;
    }
    for (const language of this.languages) {
      const chosen = chooseLanguage(language.code, available, this.defaultLanguage);
      const text = texts[chosen];
      const part = el("div", "alarms-preview__language");
      part.setAttribute("data-preview-language", language.code);
      part.setAttribute("data-preview-chosen", chosen);
      const heading = el("h4", "alarms-preview__heading", language.name);
      part.appendChild(heading);
      if (chosen !== language.code) {
        const note = format(this.words.fallback || "", {
          language: language.name,
          fallback: this.names[chosen] || chosen
        });
        part.appendChild(el("p", "alarms-preview__fallback", note));
      }
      // The toast's own markup and classes (client/toasts.js), without its behaviour.
      const toast = el("div", "alarms-toast alarms-toast--" + level);
      const chosenInfo = this.languages.find((l) => l.code === chosen);
      toast.setAttribute("lang", chosen);
      toast.setAttribute("dir", chosenInfo && chosenInfo.dir === "rtl" ? "rtl" : "ltr");
      toast.appendChild(el("span", "alarms-icon"));
      const body = el("div", "alarms-body");
      body.appendChild(el("p", "alarms-title", text.title));
      body.appendChild(el("p", "alarms-message", text.message));
      toast.appendChild(body);
      part.appendChild(toast);
      this.preview.appendChild(part);
    }
  }

  // -- reach -----------------------------------------------------------------

  reachQuery() {
    const params = new URLSearchParams();
    params.set("audience", this.value("audience", "authenticated"));
    if (params.get("audience") === "selected") {
      for (const id of this.chosen("users")) {
        params.append("users", id);
      }
      for (const id of this.chosen("groups")) {
        params.append("groups", id);
      }
    }
    for (const code of Object.keys(this.translations()).sort()) {
      params.append("languages", code);
    }
    return params.toString();
  }

  scheduleReach() {
    if (this.reachQuery() === this.reachKey) {
      return; // the edit changed neither the audience nor the languages
    }
    window.clearTimeout(this.reachTimer);
    this.reachTimer = window.setTimeout(() => this.reach(), REACH_DELAY);
  }

  reach(again) {
    const query = this.reachQuery();
    if (again && document.hidden) {
      return;
    }
    this.reachKey = query;
    this.reachAsked += 1;
    const mine = this.reachAsked;
    window
      .fetch(this.root.dataset.reachUrl + "?" + query, { credentials: "same-origin" })
      .then((response) => response.json())
      .then((body) => {
        if (mine === this.reachAsked) {
          this.renderReach(body);
        }
      })
      .catch(() => {
        if (mine === this.reachAsked) {
          this.summary.textContent = this.words.reachFailed || "";
        }
      });
  }

  renderReach(body) {
    if (!body || !Array.isArray(body.languages)) {
      this.summary.textContent = (body && body.errors && body.errors.join(" ")) || "";
      return;
    }
    this.summary.textContent = body.summary;
    this.summary.setAttribute("data-readers", String(body.readers));
    this.summary.setAttribute("data-fallback", String(body.fallback));
    this.reachBody.textContent = "";
    for (const item of body.languages) {
      const row = el("tr", item.fallback ? "alarms-operator__fallback" : "");
      row.setAttribute("data-language", item.code);
      row.setAttribute("data-readers", String(item.readers));
      row.setAttribute("data-fallback", String(item.fallback));
      row.setAttribute("data-translation", item.translation || "");
      row.appendChild(el("th", "", item.name));
      row.lastChild.setAttribute("scope", "row");
      row.appendChild(el("td", "", String(item.readers)));
      row.appendChild(el("td", "", item.note || ""));
      this.reachBody.appendChild(row);
    }
  }

  // -- test send ---------------------------------------------------------------

  sendTest() {
    const data = new FormData(this.form);
    // The admin's selectors submit their chosen box only when the form is saved.
    for (const name of ["users", "groups"]) {
      if (document.getElementById("id_" + name + "_to")) {
        data.delete(name);
        for (const id of this.chosen(name)) {
          data.append(name, id);
        }
      }
    }
    data.set("test_language", this.root.querySelector("[data-test-language]").value);
    const token = this.field("csrfmiddlewaretoken");
    this.result.textContent = this.words.sending || "";
    this.result.removeAttribute("data-outcome");
    window
      .fetch(this.root.dataset.testUrl, {
        method: "POST",
        body: data,
        credentials: "same-origin",
        headers: token ? { "X-CSRFToken": token.value } : {}
      })
      .then((response) => response.json().then((body) => ({ ok: response.ok, body: body })))
      .then(({ ok, body }) => {
        if (ok) {
          this.result.textContent = body.message;
          this.result.setAttribute("data-outcome", "sent");
        } else {
          this.result.textContent = "";
          this.result.appendChild(el("strong", "", this.words.failed || ""));
          const list = el("ul", "errorlist");
          for (const message of body.errors || []) {
            list.appendChild(el("li", "", message));
          }
          this.result.appendChild(list);
          this.result.setAttribute("data-outcome", "refused");
        }
      })
      .catch(() => {
        this.result.textContent = this.words.offline || "";
        this.result.setAttribute("data-outcome", "failed");
      });
  }
}

const root = document.getElementById("alarms-operator");
if (root && root.closest("form")) {
  new Panel(root).start();
}
