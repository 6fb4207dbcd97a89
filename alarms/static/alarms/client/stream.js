import { warnOnce } from "./log.js";
import { backoff, isCrossOrigin } from "./net.js";

// "test": an operator's test of an alarm, for their own pages only (client.js).
// "prefs": the user's preferences changed; the server ends the stream after it.
const EVENTS = ["alarm", "retract", "dismiss", "test", "prefs"];

// The one EventSource of this browser, held by the leading tab. It resumes
// after the last event it saw (Last-Event-ID, or ?last_event_id= when it
// reopens by itself) and reconnects with backoff, never giving up.
export class Stream {
  constructor(url, onEvent) {
    this.url = url;
    this.onEvent = onEvent; // (name, data text), after lastEventId is updated
    this.leading = false;
    this.language = "";
    this.lastEventId = "";
    this.source = null;
    this.opened = false;
    this.attempt = 0;
    this.reopenTimer = null;
  }

  get streaming() {
    return !!this.source && this.opened;
  }

  // This tab leads now: a tab that has seen events resumes after the last
  // one; a fresh page asks for everything the user should still see.
  start() {
    this.leading = true;
    this.attempt = 0;
    this.open(!!this.lastEventId);
  }

  stop() {
    this.leading = false;
    this.close();
  }

  // The network is back: do not wait for the backoff.
  online() {
    if (this.leading && !this.opened) {
      this.attempt = 0;
      this.open(true);
    }
  }

  href(resume) {
    const url = new URL(this.url, window.location.href);
    if (this.language) {
      url.searchParams.set("lang", this.language);
    }
    if (resume && this.lastEventId) {
      url.searchParams.set("last_event_id", this.lastEventId);
    }
    return url.toString();
  }

  open(resume) {
    this.close();
    if (!this.leading) {
      return;
    }
    const url = this.href(resume);
    // Across origins the session cookie is sent only when asked for.
    const es = isCrossOrigin(url)
      ? new EventSource(url, { withCredentials: true })
      : new EventSource(url);
    this.source = es;
    this.opened = false;
    es.onopen = () => {
      if (es !== this.source) {
        return;
      }
      this.opened = true;
      this.attempt = 0;
    };
    es.onerror = () => {
      if (es !== this.source) {
        return;
      }
      if (es.readyState === EventSource.CLOSED || !this.opened) {
        // The browser gave up (a non-200 answer) or cannot reach the server:
        // reconnect ourselves, later each time, and never stop.
        warnOnce("stream", "the alarm stream failed; reconnecting with backoff");
        this.scheduleReopen();
      } else {
        // The server ended a healthy stream: EventSource reconnects by itself
        // with Last-Event-ID; if that fails we land in the branch above.
        this.opened = false;
      }
    };
    for (const name of EVENTS) {
      es.addEventListener(name, (e) => {
        if (es !== this.source) {
          return;
        }
        if (e.lastEventId) {
          this.lastEventId = e.lastEventId;
        }
        this.onEvent(name, e.data);
      });
    }
  }

  close() {
    if (this.reopenTimer !== null) {
      window.clearTimeout(this.reopenTimer);
      this.reopenTimer = null;
    }
    if (this.source) {
      this.source.close();
      this.source = null;
    }
    this.opened = false;
  }

  scheduleReopen() {
    if (this.source) {
      this.source.close();
      this.source = null;
    }
    if (this.reopenTimer !== null || !this.leading) {
      return;
    }
    const delay = backoff(this.attempt);
    this.attempt += 1;
    this.reopenTimer = window.setTimeout(() => {
      this.reopenTimer = null;
      if (this.leading) {
        this.open(true);
      }
    }, delay);
  }
}
