import { warnOnce } from "./log.js";
import { backoff, isCrossOrigin } from "./net.js";

const BATCH = 200;
const MAX_FAILURES = 8;

// The token Django checks: from its cookie when the site uses one (it may
// have rotated since the page was rendered), else the one the page carries.
export function csrfToken(config) {
  if (config.csrfCookie) {
    const parts = document.cookie ? document.cookie.split(";") : [];
    for (const part of parts) {
      const pair = part.trim();
      if (pair.indexOf(config.csrfCookie + "=") === 0) {
        return decodeURIComponent(pair.slice(config.csrfCookie.length + 1));
      }
    }
  }
  return config.csrfToken;
}

// POSTs {ids, language} as JSON; resolves true when done with them (sent, or
// refused for good), false when worth another try.
function postIds(config, url, ids, language, keepalive) {
  if (!url || !ids.length || !window.fetch) {
    return Promise.resolve(true);
  }
  const body = { ids: ids.slice(0, BATCH) };
  if (language) {
    // The language the toasts were shown in: the server counts receipts per language.
    body.language = language;
  }
  const request = {
    method: "POST",
    credentials: "same-origin",
    keepalive: !!keepalive,
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(config) },
    body: JSON.stringify(body)
  };
  if (isCrossOrigin(url)) {
    // The session cookie goes along by CORS. No CSRF token: this page cannot
    // read the other origin's, and the server takes JSON from a listed origin
    // without one (the content type forces a preflight).
    request.mode = "cors";
    request.credentials = "include";
    request.headers = { "Content-Type": "application/json" };
  }
  return window.fetch(url, request).then(
    (response) => {
      if (response.ok) {
        return true;
      }
      if (response.status >= 400 && response.status < 500) {
        // Will not get better by retrying: these ids are dropped.
        warnOnce("post-refused:" + url, url + " refused " + ids.length + " ids: " + response.status);
        return true;
      }
      warnOnce("post-failed:" + url, url + " answered " + response.status + "; retrying");
      return false;
    },
    (error) => {
      warnOnce("post-failed:" + url, "cannot reach " + url + "; retrying", error);
      return false;
    }
  );
}

// Ids waiting to be POSTed (receipts: seen, dismissed), each with the language
// its toast was shown in; retried with backoff while the server is away, and
// given up after MAX_FAILURES tries in a row.
export class Outbox {
  constructor(config, url) {
    this.config = config;
    this.url = url;
    this.ids = [];
    this.languages = new Map(); // id -> language
    this.timer = null;
    this.failures = 0;
  }

  add(id, delay, language) {
    if (this.ids.indexOf(id) === -1) {
      this.ids.push(id);
      this.languages.set(id, typeof language === "string" ? language : "");
    }
    this.schedule(delay);
  }

  // The next batch: the oldest id and the others of its language, up to BATCH.
  take() {
    const language = this.languages.get(this.ids[0]) || "";
    const batch = [];
    this.ids = this.ids.filter((id) => {
      if (batch.length < BATCH && (this.languages.get(id) || "") === language) {
        batch.push(id);
        return false;
      }
      return true;
    });
    return { ids: batch, language: language };
  }

  schedule(delay) {
    if (this.timer === null) {
      this.timer = window.setTimeout(() => {
        this.timer = null;
        this.flush(false);
      }, delay);
    }
  }

  // keepalive: the page is going away, and the request must outlive it.
  flush(keepalive) {
    if (!this.ids.length) {
      return;
    }
    const taken = this.take();
    const batch = taken.ids;
    postIds(this.config, this.url, batch, taken.language, keepalive).then((ok) => {
      if (ok) {
        batch.forEach((id) => this.languages.delete(id));
        this.failures = 0;
        if (this.ids.length) {
          this.schedule(0);
        }
        return;
      }
      this.failures += 1;
      this.ids = batch.concat(this.ids);
      if (this.failures <= MAX_FAILURES) {
        this.schedule(backoff(this.failures));
      } else {
        // They stay queued: the next receipt added, or the page going away, sends them along.
        warnOnce(
          "outbox-gave-up:" + this.url,
          "gave up sending " + this.ids.length + " ids to " + this.url +
            " after " + this.failures + " tries"
        );
      }
    });
  }
}
