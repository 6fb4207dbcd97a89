import { parseJSON, warnOnce } from "./log.js";

const MAX_REMEMBERED = 500;

// localStorage under this user's prefix, shared by every tab of this user in
// this browser. Without it (private mode, full, blocked) the in-memory state
// still works; only what tabs share is lost.
export class Store {
  constructor(prefix) {
    this.prefix = prefix;
  }

  get(name, fallback) {
    let raw;
    try {
      raw = window.localStorage.getItem(this.prefix + name);
    } catch (error) {
      warnOnce("storage-read", "localStorage cannot be read", error);
      return fallback;
    }
    return raw === null ? fallback : parseJSON(raw, fallback, "localStorage " + name);
  }

  set(name, value) {
    try {
      window.localStorage.setItem(this.prefix + name, JSON.stringify(value));
    } catch (error) {
      warnOnce("storage-write", "localStorage cannot be written", error);
    }
  }
}

// What this tab shows, kept in sessionStorage: it outlives a navigation in
// the same tab (the language form reloads the page) and no other tab sees it.
export class TabStore {
  constructor(prefix) {
    this.key = prefix + "shown";
  }

  get() {
    let raw;
    try {
      raw = window.sessionStorage.getItem(this.key);
    } catch (error) {
      warnOnce("tab-storage-read", "sessionStorage cannot be read", error);
      return [];
    }
    const list = parseJSON(raw, [], "sessionStorage shown");
    return Array.isArray(list) ? list : [];
  }

  set(ids) {
    try {
      window.sessionStorage.setItem(this.key, JSON.stringify(ids));
    } catch (error) {
      // Without it a language switch cannot restore this tab's toasts.
      warnOnce("tab-storage-write", "sessionStorage cannot be written", error);
    }
  }

  // The language of this tab's last page ("" for none yet), and this page's.
  language() {
    try {
      return window.sessionStorage.getItem(this.key + ":language") || "";
    } catch (error) {
      return "";
    }
  }

  setLanguage(language) {
    try {
      window.sessionStorage.setItem(this.key + ":language", language);
    } catch (error) {
      warnOnce("tab-storage-write", "sessionStorage cannot be written", error);
    }
  }

  // The next page of this tab is to show again what this one shows (it is
  // reloaded for preferences changed elsewhere).
  markRestore() {
    try {
      window.sessionStorage.setItem(this.key + ":restore", "1");
    } catch (error) {
      warnOnce("tab-storage-write", "sessionStorage cannot be written", error);
    }
  }

  // Whether markRestore() was called by the page before; forgets it.
  takeRestore() {
    try {
      const marked = window.sessionStorage.getItem(this.key + ":restore") === "1";
      window.sessionStorage.removeItem(this.key + ":restore");
      return marked;
    } catch (error) {
      return false;
    }
  }
}

// A bounded set of alarm ids kept in localStorage, re-read on every use so
// that all tabs see each other's writes.
export class IdSet {
  constructor(store, name) {
    this.store = store;
    this.name = name;
    this.local = new Set(this.read());
  }

  read() {
    const list = this.store.get(this.name, []);
    return Array.isArray(list) ? list : [];
  }

  has(id) {
    return this.local.has(id) || this.read().indexOf(id) !== -1;
  }

  add(id) {
    this.local.add(id);
    const list = this.read();
    if (list.indexOf(id) === -1) {
      list.push(id);
      this.store.set(this.name, list.slice(-MAX_REMEMBERED));
    }
  }
}
