// Desktop notifications (the Notification API): when an alarm arrives while
// no tab of this user's site is visible, the leader raises one notification
// for it, if the user allowed them (the button of the alarm centre) and the
// alarm is at or above the floor (data-desktop-from).
//
// Which tabs are visible: every tab reports its document.visibilityState over
// the channel when it changes; a visible tab repeats it every VISIBLE_BEAT,
// and a report older than VISIBLE_TTL counts for nothing (a tab that died
// without its pagehide), as the leader lease of tabs.js expires. A tab going
// away says so on pagehide.
import { warnOnce } from "./log.js";
import { IdSet } from "./storage.js";
import { TAB } from "./tabs.js";
import { safeLink } from "./toasts.js";

const LEVELS = ["info", "success", "warning", "error", "critical"];
const VISIBLE_BEAT = 1000;
const VISIBLE_TTL = 3000;

function isVisible() {
  return document.visibilityState === "visible";
}

// "granted", "denied", "default" (not asked, or the prompt was closed), or
// why the browser cannot: "unsupported", "insecure" (the API needs https).
export function permissionState() {
  if (window.isSecureContext === false) {
    return "insecure";
  }
  const api = window.Notification;
  if (typeof api !== "function" || typeof api.requestPermission !== "function") {
    return "unsupported";
  }
  return api.permission;
}

// Notification.requestPermission: a promise in current browsers, a callback in old Safari.
function requestPermission() {
  return new Promise((resolve) => {
    const answer = window.Notification.requestPermission(resolve);
    if (answer && typeof answer.then === "function") {
      answer.then(resolve, (error) => {
        warnOnce("notify-permission", "the notification permission request failed", error);
        resolve(permissionState());
      });
    }
  });
}

export class Notifier {
  constructor(config, store, emit) {
    this.setFloor(config.desktopFrom);
    this.streamUrl = config.streamUrl;
    this.emit = emit;
    // Alarms a leader of this browser has decided on (raised, or not because
    // a tab was visible or the level is below the floor): each once, whichever
    // tab leads.
    this.decided = new IdSet(store, "notified");
    this.open = new Map(); // id -> the Notification this page raised
    this.visibleTabs = new Map(); // other tab -> when it last said it is visible
    this.post = null;
    this.timer = null;
    this.onVisibility = () => this.report();
  }

  // -- which tabs are visible ---------------------------------------------------

  start(post) {
    if (this.post) {
      return;
    }
    this.post = post;
    document.addEventListener("visibilitychange", this.onVisibility);
    this.timer = window.setInterval(() => {
      if (isVisible()) {
        this.report();
      }
    }, VISIBLE_BEAT);
    this.report();
  }

  // The page goes away (pagehide): it no longer counts as visible.
  stop() {
    if (!this.post) {
      return;
    }
    this.post({ type: "visibility", tab: TAB, visible: false });
    this.post = null;
    window.clearInterval(this.timer);
    this.timer = null;
    document.removeEventListener("visibilitychange", this.onVisibility);
  }

  report() {
    if (this.post) {
      this.post({ type: "visibility", tab: TAB, visible: isVisible() });
    }
  }

  // This tab now leads: every tab says at once whether it is visible.
  lead() {
    if (this.post) {
      this.post({ type: "visibility?" });
    }
  }

  // A message of the channel; true if it was one of this module's.
  onMessage(message) {
    if (message.type === "visibility?") {
      this.report();
      return true;
    }
    if (message.type !== "visibility" || typeof message.tab !== "string") {
      return false;
    }
    if (message.visible === true) {
      this.visibleTabs.set(message.tab, Date.now());
    } else {
      this.visibleTabs.delete(message.tab);
    }
    return true;
  }

  anyVisible() {
    if (isVisible()) {
      return true;
    }
    const oldest = Date.now() - VISIBLE_TTL;
    for (const [tab, at] of this.visibleTabs) {
      if (at >= oldest) {
        return true;
      }
      this.visibleTabs.delete(tab); // stale: that tab died without a word
    }
    return false;
  }

  // -- raising and closing ------------------------------------------------------

  // The leader got a new alarm from the stream, one the page would toast.
  // The lowest level that raises a notification: the page's data-desktop-from,
  // then each "prefs" event's desktop_from (a change on any device). Blank or
  // unknown: critical.
  setFloor(level) {
    const floor = LEVELS.indexOf(level);
    this.floor = floor === -1 ? LEVELS.indexOf("critical") : floor;
  }

  consider(data) {
    if (this.decided.has(data.id)) {
      if (this.open.has(data.id)) {
        this.raise(data, true); // the same alarm, edited or in another language
      }
      return;
    }
    this.decided.add(data.id);
    if (
      LEVELS.indexOf(data.level) < this.floor ||
      this.anyVisible() ||
      permissionState() !== "granted"
    ) {
      return;
    }
    this.raise(data, false);
  }

  raise(data, replacing) {
    const id = data.id;
    let notification;
    try {
      // The payload is in the reader's language already (the stream's).
      notification = new window.Notification(data.title || "", {
        body: data.message || "",
        tag: String(id), // the same alarm replaces its notification, never adds one
        lang: data.language || "",
        dir: data.dir === "rtl" ? "rtl" : "ltr",
        requireInteraction: data.level === "critical",
        silent: replacing
      });
    } catch (error) {
      warnOnce("notify", "a desktop notification could not be shown", error);
      return;
    }
    const href = safeLink(data.url, this.streamUrl);
    this.open.set(id, notification);
    notification.addEventListener("click", (event) => {
      event.preventDefault();
      this.click(id, href);
    });
    const forget = () => {
      if (this.open.get(id) === notification) {
        this.open.delete(id);
      }
    };
    notification.addEventListener("close", forget);
    notification.addEventListener("error", () => {
      forget();
      warnOnce("notify-error", "the browser did not show a desktop notification");
    });
    if (!replacing) {
      this.emit("alarms:notified", { alarm: data });
    }
  }

  // A click on the notification: the alarm's link in a new tab if it has one,
  // else this tab comes to the front (browsers let a page focus itself from
  // its notification's click).
  click(id, href) {
    let opened = null;
    if (href) {
      opened = window.open("", "_blank");
      if (opened) {
        opened.opener = null;
        opened.location.href = new URL(href, window.location.href).href;
      }
    }
    if (!opened) {
      window.focus();
    }
    this.close(id);
    this.emit("alarms:notification-clicked", { id: id, url: href || "" });
  }

  // The alarm was dismissed (here, in another tab, on another device) or withdrawn.
  close(id) {
    const notification = this.open.get(id);
    if (notification) {
      this.open.delete(id);
      notification.close();
    }
  }
}

// The opt-in of the alarm centre ([data-alarms-notify], alarms/notify.html):
// the permission prompt only on a click of its button. The block is hidden
// until this runs; its texts for each state are in the page, translated by
// the server (the elements with data-when="<state> ...").
export function permissionButton(emit) {
  const block = document.querySelector("[data-alarms-notify]");
  const button = block && block.querySelector("[data-alarms-notify-button]");
  if (!button) {
    return;
  }
  const render = (state) => {
    block.setAttribute("data-state", state);
    for (const node of block.querySelectorAll("[data-when]")) {
      node.hidden = node.getAttribute("data-when").split(" ").indexOf(state) === -1;
    }
    const askable = state === "default" || state === "dismissed";
    button.setAttribute("aria-disabled", askable ? "false" : "true");
  };
  let asking = false;
  button.addEventListener("click", () => {
    const state = block.getAttribute("data-state");
    if (asking || (state !== "default" && state !== "dismissed")) {
      return;
    }
    asking = true;
    requestPermission().then((answer) => {
      asking = false;
      // "default" now: the prompt was closed without an answer.
      const shown = answer === "default" ? "dismissed" : permissionState();
      render(shown);
      emit("alarms:notify-permission", { state: shown });
    });
  });
  render(permissionState());
  block.hidden = false;
  // Allowed or blocked later in the browser's site settings, or in another tab.
  if (navigator.permissions && typeof navigator.permissions.query === "function") {
    navigator.permissions.query({ name: "notifications" }).then(
      (status) => {
        status.addEventListener("change", () => render(permissionState()));
      },
      () => {
        // This browser cannot report it: the button shows the state at load.
      }
    );
  }
}
