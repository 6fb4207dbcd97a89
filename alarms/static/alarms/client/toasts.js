// The toasts: the live region, one toast per alarm, auto-hide timers and the
// "+N more" layout. Over 300 lines because these share one region's state
// (what is shown, in which order, which timers run); the icons and the link
// check at the top are the only parts that stand alone.
import { warnOnce } from "./log.js";
import { isCrossOrigin } from "./net.js";
import { formatTime } from "./prefs.js";

const AUTO_HIDE = { info: true, success: true };
const ASSERTIVE = { error: true, critical: true };

const SVG = "http://www.w3.org/2000/svg";
const ICONS = {
  info: ["M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20z", "M12 11v6", "M12 7.5v.01"],
  success: ["M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20z", "M7.5 12.5l3 3 6-6.5"],
  warning: ["M10.3 3.9L1.8 18a2 2 0 0 0 1.7 3h17a2 2 0 0 0 1.7-3L13.7 3.9a2 2 0 0 0-3.4 0z",
    "M12 9v4.5", "M12 17.5v.01"],
  error: ["M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20z", "M15 9l-6 6", "M9 9l6 6"],
  critical: ["M7.9 2h8.2L22 7.9v8.2L16.1 22H7.9L2 16.1V7.9z", "M12 7.5v5.5", "M12 16.5v.01"]
};

function icon(level) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "20");
  svg.setAttribute("height", "20");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  for (const d of ICONS[level] || ICONS.info) {
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", d);
    svg.appendChild(path);
  }
  return svg;
}

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  return node;
}

function reducedMotion() {
  return !!(window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches);
}

// http(s) addresses and paths of the alarm server's site only: never javascript:, data:...
export function safeLink(url, streamUrl) {
  if (typeof url !== "string" || !url || /[\u0000-\u0020\\]/.test(url)) {
    return null;
  }
  if (url.charAt(0) === "/") {
    if (url.charAt(1) === "/") {
      return null;
    }
    // A path of the alarm server's site, which may be another origin than this page.
    return isCrossOrigin(streamUrl)
      ? new URL(url, new URL(streamUrl, window.location.href)).href
      : url;
  }
  try {
    const parsed = new URL(url);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch (error) {
    warnOnce("link", "an alarm's link is not a URL: " + url, error);
    return null;
  }
}

// The toasts of this page: a region (rendered by the tag, or made here), a
// stack of at most maxVisible toasts with a "+N more" button, and the timers
// that hide info and success toasts unless hovered or focused.
export class Toasts {
  constructor(config, words, tabStore, onDismiss) {
    this.config = config;
    this.words = words;
    this.tabStore = tabStore;
    this.onDismiss = onDismiss; // the user closed one: (id)
    this.toasts = new Map(); // id -> toast record, for those on screen
    this.shownHere = new Set(); // ids toasted on this page: never twice
    this.expanded = false;
    this.region = null;
    this.stack = null;
    this.moreButton = null;
    // Buttons that already toggle: the region may be found again (a host
    // script replaced or moved it) with the same button inside.
    this.wired = new WeakSet();
  }

  has(id) {
    return this.toasts.has(id);
  }

  ids() {
    return Array.from(this.toasts.keys());
  }

  ensureRegion() {
    if (this.region && this.region.isConnected) {
      return;
    }
    const label = this.words.label("region", "Alarms");
    let region = document.getElementById(this.config.region);
    if (!region) {
      region = el("div", "alarms-region");
      region.id = this.config.region;
      region.setAttribute("aria-label", label);
      document.body.appendChild(region);
    }
    this.region = region;
    this.stack = region.querySelector(".alarms-stack");
    if (!this.stack) {
      this.stack = el("div", "alarms-stack");
      region.appendChild(this.stack);
    }
    this.moreButton = region.querySelector(".alarms-more");
    if (!this.moreButton) {
      this.moreButton = el("button", "alarms-more");
      this.moreButton.type = "button";
      this.moreButton.hidden = true;
      region.appendChild(this.moreButton);
    }
    if (!this.wired.has(this.moreButton)) {
      this.wired.add(this.moreButton);
      this.moreButton.addEventListener("click", () => {
        this.expanded = !this.expanded;
        this.layout();
      });
    }
  }

  show(data) {
    this.ensureRegion();
    const words = this.words;
    const node = el("div", "alarms-toast");
    node.tabIndex = 0;
    node.setAttribute("aria-atomic", "true");
    const iconBox = el("span", "alarms-icon");
    iconBox.setAttribute("role", "img");
    const body = el("div", "alarms-body");
    const mark = el("span", "alarms-test-mark");
    mark.setAttribute("lang", this.config.language);
    const title = el("p", "alarms-title");
    const message = el("p", "alarms-message");
    const time = el("time", "alarms-time");
    const link = el("a", "alarms-link");
    const close = el("button", "alarms-close");
    close.type = "button";
    close.setAttribute("aria-label", words.label("dismiss", "Dismiss"));
    close.setAttribute("title", words.label("dismiss", "Dismiss"));
    close.setAttribute("lang", this.config.language);
    close.appendChild(document.createTextNode("\u00d7"));
    const progress = el("span", "alarms-progress");
    progress.setAttribute("aria-hidden", "true");
    body.appendChild(title);
    body.appendChild(message);
    body.appendChild(time);
    body.appendChild(link);
    node.appendChild(iconBox);
    node.appendChild(body);
    node.appendChild(close);
    node.appendChild(progress);

    const toast = {
      id: data.id,
      node: node,
      icon: iconBox,
      mark: mark,
      title: title,
      message: message,
      time: time,
      link: link,
      progress: progress,
      level: "",
      remaining: 0,
      total: 0,
      timer: null,
      startedAt: 0,
      hovered: false,
      focused: false,
      closing: false
    };
    this.fill(toast, data);

    close.addEventListener("click", () => this.onDismiss(toast.id));
    node.addEventListener("keydown", (e) => {
      if (e.key === "Escape" || e.key === "Esc") {
        e.preventDefault();
        this.onDismiss(toast.id);
      }
    });
    node.addEventListener("mouseenter", () => {
      toast.hovered = true;
      this.layout();
    });
    node.addEventListener("mouseleave", () => {
      toast.hovered = false;
      this.layout();
    });
    node.addEventListener("focusin", () => {
      toast.focused = true;
      this.layout();
    });
    node.addEventListener("focusout", (e) => {
      if (!node.contains(e.relatedTarget)) {
        toast.focused = false;
        this.layout();
      }
    });

    this.toasts.set(data.id, toast);
    this.tabStore.set(this.ids());
    this.shownHere.add(data.id);
    this.stack.insertBefore(node, this.stack.firstChild); // newest on top
    this.layout();
  }

  // An edited alarm, or the same alarm in a new language: redrawn in place.
  update(data) {
    const toast = this.toasts.get(data.id);
    if (toast) {
      this.fill(toast, data);
    }
  }

  fill(toast, data) {
    const node = toast.node;
    const level = data.level;
    const language = this.config.language;
    const words = this.words;
    node.className = "alarms-toast alarms-toast--" + level + (data.test ? " alarms-toast--test" : "");
    node.setAttribute("data-alarm-id", String(data.id));
    node.setAttribute("data-level", level);
    node.setAttribute("lang", data.language || "");
    node.setAttribute("dir", data.dir === "rtl" ? "rtl" : "ltr");
    node.setAttribute("role", ASSERTIVE[level] ? "alert" : "status");
    node.setAttribute("aria-live", ASSERTIVE[level] ? "assertive" : "polite");
    toast.icon.textContent = "";
    toast.icon.appendChild(icon(level));
    toast.icon.setAttribute("aria-label", words.label(level, level));
    toast.icon.setAttribute("lang", language);
    toast.title.textContent = data.title || "";
    if (data.test) {
      // An operator's test: marked in the page's language, before the title.
      toast.mark.textContent = words.label("test", "Test");
      toast.title.insertBefore(toast.mark, toast.title.firstChild);
    }
    toast.message.textContent = data.message || "";
    // When it was published, in the user's stored time zone (else the browser's).
    const when = formatTime(data.published_at, language, this.config.timeZone);
    toast.time.textContent = when;
    toast.time.setAttribute("datetime", when ? data.published_at : "");
    toast.time.setAttribute("lang", language);
    toast.time.hidden = !when;
    const href = safeLink(data.url, this.config.streamUrl);
    if (href) {
      toast.link.setAttribute("href", href);
      toast.link.textContent = words.label("open", "Open");
      toast.link.setAttribute("lang", language);
      toast.link.hidden = false;
    } else {
      toast.link.removeAttribute("href");
      toast.link.textContent = "";
      toast.link.hidden = true;
    }
    if (toast.level !== level) {
      toast.level = level;
      this.stopTimer(toast);
      toast.total = AUTO_HIDE[level] ? this.config.autoHide : 0;
      toast.remaining = toast.total;
      node.classList.toggle("alarms-toast--auto", toast.total > 0);
    }
  }

  visible(toast) {
    return !toast.node.classList.contains("alarms-toast--overflow") && !document.hidden;
  }

  startTimer(toast) {
    if (toast.timer !== null || toast.total <= 0 || toast.closing) {
      return;
    }
    toast.startedAt = Date.now();
    toast.timer = window.setTimeout(() => {
      toast.timer = null;
      this.close(toast.id); // hidden, not dismissed: it stays in the alarm centre
    }, toast.remaining);
    const bar = toast.progress;
    bar.style.transition = "none";
    bar.style.transform = "scaleX(" + toast.remaining / toast.total + ")";
    void bar.offsetWidth; // apply the start value before the transition
    bar.style.transition = "transform " + toast.remaining + "ms linear";
    bar.style.transform = "scaleX(0)";
    toast.node.classList.remove("alarms-toast--paused");
  }

  stopTimer(toast) {
    if (toast.timer === null) {
      return;
    }
    window.clearTimeout(toast.timer);
    toast.timer = null;
    toast.remaining = Math.max(0, toast.remaining - (Date.now() - toast.startedAt));
    const bar = toast.progress;
    bar.style.transition = "none";
    bar.style.transform = "scaleX(" + (toast.total ? toast.remaining / toast.total : 0) + ")";
    toast.node.classList.add("alarms-toast--paused");
  }

  layout() {
    if (!this.stack) {
      return;
    }
    const maxVisible = this.config.maxVisible;
    const live = Array.from(this.stack.children).filter(
      (node) => !node.classList.contains("alarms-toast--leaving")
    );
    let hiddenCount = 0;
    live.forEach((node, index) => {
      const over = !this.expanded && index >= maxVisible;
      node.classList.toggle("alarms-toast--overflow", over);
      if (over) {
        hiddenCount += 1;
      }
    });
    for (const toast of this.toasts.values()) {
      if (this.visible(toast) && !toast.hovered && !toast.focused) {
        this.startTimer(toast);
      } else {
        this.stopTimer(toast);
      }
    }
    const more = this.moreButton;
    if (!more) {
      return;
    }
    if (this.expanded && live.length > maxVisible) {
      more.textContent = this.words.label("fewer", "Show fewer");
      more.hidden = false;
      more.setAttribute("aria-expanded", "true");
    } else if (hiddenCount > 0) {
      more.textContent = this.words
        .plural("more", hiddenCount, "+%(count)s more")
        .replace("%(count)s", String(hiddenCount));
      more.hidden = false;
      more.setAttribute("aria-expanded", "false");
    } else {
      this.expanded = false;
      more.hidden = true;
    }
  }

  close(id) {
    const toast = this.toasts.get(id);
    if (!toast) {
      return;
    }
    this.toasts.delete(id);
    this.tabStore.set(this.ids());
    this.stopTimer(toast);
    toast.closing = true;
    const node = toast.node;
    const hadFocus = node.contains(document.activeElement);
    const next = node.nextElementSibling || node.previousElementSibling;
    if (reducedMotion() || node.classList.contains("alarms-toast--overflow") || document.hidden) {
      node.remove();
    } else {
      node.classList.add("alarms-toast--leaving");
      const done = () => node.remove();
      node.addEventListener("animationend", done, { once: true });
      window.setTimeout(done, 400);
    }
    this.layout();
    if (hadFocus) {
      // Keep keyboard users in the stack rather than dropping them to <body>.
      const target = next && next.querySelector(".alarms-close");
      if (target && !next.classList.contains("alarms-toast--leaving")) {
        target.focus();
      }
    }
  }
}
