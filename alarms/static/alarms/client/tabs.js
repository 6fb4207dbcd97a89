import { parseJSON, warnOnce } from "./log.js";

// This page's name among the tabs of this browser.
export const TAB = Math.random().toString(36).slice(2) + Date.now().toString(36);

// Messages to every other tab of this user: BroadcastChannel, or where that
// is missing the storage event, which reaches every other tab of the origin.
export class Channel {
  constructor(name, onMessage) {
    if (typeof window.BroadcastChannel === "function") {
      this.bc = new window.BroadcastChannel(name);
      this.bc.onmessage = (e) => onMessage(e.data);
      return;
    }
    this.bc = null;
    this.key = name + ":message";
    this.onStorage = (e) => {
      if (e.key === this.key && e.newValue) {
        const wrapped = parseJSON(e.newValue, null, "a message from another tab");
        if (wrapped) {
          onMessage(wrapped.m);
        }
      }
    };
    window.addEventListener("storage", this.onStorage);
  }

  post(message) {
    if (this.bc) {
      this.bc.postMessage(message);
      return;
    }
    try {
      window.localStorage.setItem(this.key, JSON.stringify({ m: message, n: Math.random() }));
    } catch (error) {
      warnOnce("channel", "cannot reach the other tabs (localStorage)", error);
    }
  }

  close() {
    if (this.bc) {
      this.bc.close();
    } else {
      window.removeEventListener("storage", this.onStorage);
    }
  }
}

// One tab leads (holds the stream). Web Locks where the browser has them,
// else a lease in localStorage.
export function elect(name, onLead, onLose) {
  if (navigator.locks && typeof navigator.locks.request === "function") {
    return new LockElection(name, onLead);
  }
  return new LeaseElection(name, onLead, onLose);
}

// Web Locks: the lock is held until this page goes away, and the next tab in
// the queue gets it at once.
class LockElection {
  constructor(name, onLead) {
    this.stopped = false;
    this.release = null;
    this.abort = typeof window.AbortController === "function" ? new AbortController() : null;
    const options = this.abort ? { signal: this.abort.signal } : {};
    navigator.locks
      .request(name, options, () => {
        if (this.stopped) {
          return undefined;
        }
        return new Promise((resolve) => {
          this.release = resolve;
          onLead();
        });
      })
      .catch((error) => {
        // Aborted by stop(): this page is going away.
        if (!(error && error.name === "AbortError")) {
          warnOnce("lock", "the leader lock failed", error);
        }
      });
  }

  stop() {
    this.stopped = true;
    if (this.abort) {
      this.abort.abort();
    }
    if (this.release) {
      this.release();
    }
  }
}

// Fallback: a lease in localStorage, renewed by the leader every 400 ms and
// taken over when older than 1.2 s (or at once when the leader says goodbye).
const LEASE_BEAT = 400;
const LEASE_TTL = 1200;

class LeaseElection {
  constructor(name, onLead, onLose) {
    this.key = name + ":lease";
    this.leading = false;
    this.stopped = false;
    this.onLead = onLead;
    this.onLose = onLose;
    this.timer = window.setInterval(() => this.tick(), LEASE_BEAT);
    this.onStorage = (e) => {
      if (e.key === this.key && !e.newValue) {
        this.tick();
      }
    };
    window.addEventListener("storage", this.onStorage);
    this.tick();
  }

  read() {
    let raw;
    try {
      raw = window.localStorage.getItem(this.key);
    } catch (error) {
      warnOnce("lease-read", "the leader lease cannot be read", error);
      return null;
    }
    return parseJSON(raw, null, "the leader lease");
  }

  write() {
    try {
      window.localStorage.setItem(this.key, JSON.stringify({ tab: TAB, t: Date.now() }));
    } catch (error) {
      // Every tab then leads: still correct, only wasteful.
      warnOnce("lease-write", "the leader lease cannot be written", error);
    }
  }

  tick() {
    if (this.stopped) {
      return;
    }
    const lease = this.read();
    const fresh = lease && lease.t > Date.now() - LEASE_TTL;
    if (this.leading) {
      if (fresh && lease.tab !== TAB) {
        this.leading = false; // two tabs claimed at once; the other one won
        this.onLose();
      } else {
        this.write();
      }
      return;
    }
    if (!fresh || lease.tab === TAB) {
      this.write();
      window.setTimeout(() => {
        const mine = this.read();
        if (!this.stopped && !this.leading && mine && mine.tab === TAB) {
          this.leading = true;
          this.onLead();
        }
      }, 50);
    }
  }

  stop() {
    this.stopped = true;
    window.clearInterval(this.timer);
    window.removeEventListener("storage", this.onStorage);
    const lease = this.read();
    if (this.leading && lease && lease.tab === TAB) {
      try {
        window.localStorage.removeItem(this.key);
      } catch (error) {
        // It expires by itself.
        warnOnce("lease-remove", "the leader lease cannot be removed", error);
      }
    }
    this.leading = false;
  }
}
