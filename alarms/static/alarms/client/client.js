import { Badges, markItems } from "./badge.js";
import { readConfig } from "./config.js";
import { parseJSON, warnOnce } from "./log.js";
import { isCrossOrigin } from "./net.js";
import { Notifier, permissionButton, permissionState } from "./notify.js";
import { Outbox } from "./outbox.js";
import { pageIsCurrent, storeTimeZone } from "./prefs.js";
import { IdSet, Store, TabStore } from "./storage.js";
import { Stream } from "./stream.js";
import { Channel, TAB, elect } from "./tabs.js";
import { Toasts } from "./toasts.js";
import { Words } from "./words.js";

const LEVELS = ["info", "success", "warning", "error", "critical"];
const SEEN_DELAY = 800;
const BATCH = 200;

function emit(name, detail, cancelable) {
  const event = new CustomEvent(name, { detail: detail, cancelable: !!cancelable });
  return document.dispatchEvent(event);
}

// An operator's test (the admin's "Send a test to me"): a reader payload whose
// id is a string, "test-<journal row>-<language>", so it never meets an alarm's.
function validTest(data) {
  return (
    data &&
    typeof data === "object" &&
    data.test === true &&
    typeof data.id === "string" &&
    data.id.indexOf("test-") === 0 &&
    LEVELS.indexOf(data.level) !== -1
  );
}

function validPayload(data) {
  return (
    data &&
    typeof data === "object" &&
    typeof data.id === "number" &&
    isFinite(data.id) &&
    LEVELS.indexOf(data.level) !== -1
  );
}

// The client of one page: what it knows and shows, and the parts it drives.
// Events come from the stream when this tab leads, else relayed by the
// leader over the channel; both go through handle().
// Over 300 lines because it is the one holder of the page's state (by
// design: the other modules keep none of their own); each concern it drives
// is in its own module.
class Client {
  constructor(config) {
    this.config = config;
    this.store = new Store(config.prefix);
    this.tabStore = new TabStore(config.prefix);
    this.seenIds = new IdSet(this.store, "seen");
    this.dismissedIds = new IdSet(this.store, "dismissed");
    this.seenOutbox = new Outbox(config, config.seenUrl);
    this.dismissOutbox = new Outbox(config, config.dismissUrl);
    this.words = new Words(config.labels, config.pluralRule);
    this.badges = new Badges();
    this.toasts = new Toasts(config, this.words, this.tabStore, (id) => this.dismissByUser(id));
    this.stream = new Stream(config.streamUrl, (name, text) => this.onStreamEvent(name, text));
    this.notifier = new Notifier(config, this.store, emit);
    this.known = new Map(); // id -> payload of alarms live for this user
    this.leader = false;
    // The language alarm texts are shown in on this page: the page's own at
    // first, then the one the user switched to in any tab (the page's words
    // stay in the page's language until it reloads).
    this.alarmLanguage = config.language;
    this.pending = new Map(); // id -> refresh generation, for payloads asked for again
    this.generation = 0;
    this.channel = null;
    this.election = null;
    // A form of this page was submitted: the page is on its way out, and a
    // change of preferences it made must not reload it over its answer.
    this.leaving = false;
  }

  // -- receiving events (from the stream, or relayed by the leader) ----------

  // Seen elsewhere (another page or tab of this browser): not toasted again,
  // except critical alarms, which come back until dismissed.
  isFresh(data) {
    return data.level === "critical" || !this.seenIds.has(data.id);
  }

  // True for an alarm this page shows or would toast (not cancelled).
  handle(name, data, fresh) {
    if (name === "test") {
      // Shown once per page, never stored, never reported as seen or dismissed.
      if (validTest(data) && !this.toasts.shownHere.has(data.id)) {
        this.toasts.show(data);
      }
      return;
    }
    if (!data || typeof data.id !== "number") {
      return false;
    }
    const id = data.id;
    if (name === "alarm") {
      if (!validPayload(data) || this.dismissedIds.has(id)) {
        return false;
      }
      const update = this.known.has(id) || this.toasts.has(id);
      this.known.set(id, data);
      this.badges.add(id);
      const wanted = emit("alarms:received", { alarm: data, update: update }, true);
      if (this.toasts.has(id)) {
        this.toasts.update(data);
      } else if (wanted && fresh && !this.toasts.shownHere.has(id)) {
        this.toasts.show(data);
        this.seenIds.local.add(id); // the leader stores and reports it
      }
      return wanted;
    } else if (name === "retract") {
      this.forget(id);
      emit("alarms:retracted", { id: id });
    } else if (name === "dismiss") {
      this.dismissedIds.add(id);
      const present = this.known.has(id) || this.toasts.has(id);
      this.forget(id);
      if (present) {
        emit("alarms:dismissed", { id: id, source: "elsewhere" });
      }
    }
    return false;
  }

  forget(id) {
    this.pending.delete(id); // an answer on its way must not bring it back
    this.known.delete(id);
    this.badges.remove(id);
    markItems(id);
    this.toasts.close(id);
    this.notifier.close(id);
  }

  onStreamEvent(name, text) {
    const data = parseJSON(text, null, "an event of the stream");
    if (name === "test") {
      this.handle(name, data, true);
      this.channel.post({ type: "event", name: name, data: data, fresh: true });
      return;
    }
    if (name === "prefs") {
      this.channel.post({ type: "prefs", data: data });
      this.preferencesChanged(data);
      return;
    }
    if (!data || typeof data.id !== "number") {
      return;
    }
    const fresh = name === "alarm" ? this.isFresh(data) : false;
    const firstTime = fresh && !this.seenIds.has(data.id) && !this.dismissedIds.has(data.id);
    const wanted = this.handle(name, data, fresh);
    if (wanted && fresh) {
      this.notifier.consider(data);
    }
    if (firstTime) {
      // Only the leader records "seen": localStorage reaches other tabs later
      // than BroadcastChannel does, so they could not tell it was done.
      this.seenIds.add(data.id);
      if (this.config.authenticated) {
        this.seenOutbox.add(data.id, SEEN_DELAY, data.language);
      }
    }
    this.channel.post({
      type: "event",
      name: name,
      data: data,
      fresh: fresh,
      lastEventId: this.stream.lastEventId
    });
  }

  onChannelMessage(message) {
    if (!message || typeof message !== "object") {
      return;
    }
    switch (message.type) {
      case "event":
        if (message.lastEventId) {
          this.stream.lastEventId = message.lastEventId;
        }
        this.handle(message.name, message.data, !!message.fresh);
        break;
      case "dismiss":
        if (typeof message.id === "number") {
          const had = this.known.has(message.id) || this.toasts.has(message.id);
          this.dismissedIds.add(message.id);
          this.forget(message.id);
          if (had) {
            emit("alarms:dismissed", { id: message.id, source: "tab" });
          }
        }
        break;
      case "prefs":
        this.preferencesChanged(message.data);
        break;
      case "hello":
        if (this.newerPreferences(message.preferences)) {
          // Rendered after a change this page missed (its prefs event went to a
          // leader that was leaving): as if the event had come.
          this.preferencesChanged(message.preferences);
          break;
        }
        if (this.leader) {
          this.greet(message);
        }
        this.follow(message.language);
        break;
      case "sync":
        if (message.to === TAB) {
          if (message.lastEventId && !this.stream.lastEventId) {
            this.stream.lastEventId = message.lastEventId;
          }
          for (const data of message.alarms || []) {
            // Only what this page lacks: the leader's copy may be older than
            // what the stream or the server has given this page meanwhile.
            if (data && !this.toasts.has(data.id) && !this.pending.has(data.id)) {
              this.handle("alarm", data, true);
            }
          }
        }
        break;
      default:
        this.notifier.onMessage(message);
        break;
    }
  }

  // A new page said hello: give it what it should show, and follow its
  // language (the newest page speaks the language the user chose last).
  greet(message) {
    const switching = !!message.language && message.language !== this.stream.language;
    const critical = [];
    for (const data of this.known.values()) {
      if (data.level === "critical" && !this.dismissedIds.has(data.id)) {
        critical.push(data);
      }
    }
    // After a switch the leader's copies are in the old language: the
    // reopened stream sends the critical alarms again, in the new one.
    this.channel.post({
      type: "sync",
      to: message.tab,
      alarms: switching ? [] : critical,
      lastEventId: this.stream.lastEventId
    });
    if (switching) {
      this.stream.language = message.language;
      // A fresh connect (no last id): the server re-sends what is still live,
      // in the new language, and toasts on screen are updated in place.
      this.stream.open(false);
    }
  }

  // -- the user's preferences changed (on any device) ---------------------------

  // The server ended the stream after this event: a page in another language
  // or time zone than the user's now loads again (its toasts come back in the
  // new language, see init()); any other reconnects at once, without a last
  // event id, so that alarms a lowered mute floor lets through are sent.
  preferencesChanged(prefs) {
    if (!prefs || typeof prefs !== "object") {
      return;
    }
    // A new desktop floor needs no reload: the notifier takes it now.
    this.notifier.setFloor(prefs.desktop_from);
    const reload = !pageIsCurrent(this.config, prefs);
    const wanted = emit("alarms:preferences", { preferences: prefs, reload: reload }, true);
    if (reload && wanted && !this.leaving) {
      this.tabStore.markRestore();
      window.location.reload();
    } else if (this.leader) {
      this.stream.open(false);
    }
  }

  // Whether another page's stored preferences are newer than this page's, and
  // not what this page shows.
  newerPreferences(prefs) {
    return (
      !!prefs &&
      typeof prefs === "object" &&
      typeof prefs.version === "number" &&
      prefs.version > this.config.preferencesVersion &&
      !pageIsCurrent(this.config, prefs)
    );
  }

  // -- the same alarms in another language -------------------------------------

  // The user chose another language in some tab (its new page said hello):
  // show what this page shows in that language.
  follow(language) {
    if (!language || language === this.alarmLanguage) {
      return;
    }
    this.alarmLanguage = language;
    this.refresh(this.toasts.ids(), false);
  }

  // Asks the server for the payloads of `ids` in this page's alarm language.
  // Each page asks for what it shows itself: the stream cannot tell, since its
  // snapshot leaves out the non-critical alarms the user has seen, and no other
  // tab knows what this one shows. An alarm on screen is redrawn in place;
  // with `restore`, one the page before this in the tab showed is shown again.
  refresh(ids, restore) {
    ids = ids.filter((id) => typeof id === "number" && isFinite(id) && !this.dismissedIds.has(id));
    if (!ids.length || !this.config.payloadsUrl || !window.fetch) {
      return;
    }
    this.generation += 1;
    const mine = this.generation;
    const language = this.alarmLanguage;
    for (const id of ids) {
      this.pending.set(id, mine);
    }
    for (let i = 0; i < ids.length; i += BATCH) {
      this.applyPayloads(ids.slice(i, i + BATCH), ids, language, mine, restore);
    }
  }

  applyPayloads(batch, order, language, mine, restore) {
    const url = new URL(this.config.payloadsUrl, window.location.href);
    url.searchParams.set("ids", batch.join(","));
    url.searchParams.set("lang", language);
    const cross = isCrossOrigin(url.href);
    window
      .fetch(url.toString(), {
        mode: cross ? "cors" : "same-origin",
        credentials: cross ? "include" : "same-origin"
      })
      .then((response) => {
        if (response.ok) {
          return response.json();
        }
        warnOnce("payloads", "the alarms' texts could not be loaded: " + response.status);
        return null;
      })
      .catch((error) => {
        // These stay in the language they were in.
        warnOnce("payloads", "the alarms' texts could not be loaded", error);
        return null;
      })
      .then((body) => {
        const list = body && Array.isArray(body.alarms) ? body.alarms.filter(validPayload) : [];
        // Oldest first, as they were shown, so that the newest ends on top.
        list.sort((a, b) => order.indexOf(a.id) - order.indexOf(b.id));
        for (const data of list) {
          // Dropped meanwhile (dismissed, retracted) or asked for again since.
          if (this.pending.get(data.id) === mine && language === this.alarmLanguage) {
            this.handle("alarm", data, restore);
          }
        }
        for (const id of batch) {
          if (this.pending.get(id) === mine) {
            this.pending.delete(id);
          }
        }
      });
  }

  // -- leading: the stream ------------------------------------------------------

  lead() {
    this.leader = true;
    this.stream.language = this.store.get("language", "") || this.config.language;
    this.follow(this.stream.language);
    this.stream.start();
    this.notifier.lead();
  }

  stepDown() {
    this.leader = false;
    this.stream.stop();
  }

  dismissByUser(id) {
    if (typeof id !== "number") {
      this.toasts.close(id); // a test: closed on this page, no receipt
      return;
    }
    const shown = this.known.get(id);
    this.dismissedIds.add(id);
    this.forget(id);
    this.channel.post({ type: "dismiss", id: id });
    if (this.config.authenticated) {
      this.dismissOutbox.add(id, 0, shown && shown.language);
    }
    emit("alarms:dismissed", { id: id, source: "user" });
  }

  // -- lifecycle ----------------------------------------------------------------

  start() {
    if (this.channel) {
      return;
    }
    const prefix = this.config.prefix;
    this.channel = new Channel(prefix + "channel", (message) => this.onChannelMessage(message));
    this.notifier.start((message) => this.channel && this.channel.post(message));
    this.store.set("language", this.config.language);
    this.election = elect(
      prefix + "leader",
      () => this.lead(),
      () => this.stepDown()
    );
    this.channel.post({
      type: "hello",
      tab: TAB,
      language: this.config.language,
      preferences: {
        language: this.config.storedLanguage,
        time_zone: this.config.timeZone,
        version: this.config.preferencesVersion
      }
    });
  }

  stop() {
    this.seenOutbox.flush(true);
    this.dismissOutbox.flush(true);
    this.stepDown();
    this.notifier.stop(); // before the channel closes: this tab is not visible any more
    if (this.election) {
      this.election.stop();
      this.election = null;
    }
    if (this.channel) {
      this.channel.close();
      this.channel = null;
    }
  }

  init() {
    // The language this user's pages spoke until now (start() sets this page's),
    // and the one this tab's last page spoke: another tab may have loaded a page
    // in the new language first.
    const previous = this.store.get("language", "");
    const previousHere = this.tabStore.language();
    this.tabStore.setLanguage(this.config.language);
    this.toasts.ensureRegion();
    this.badges.init(this.dismissedIds);
    permissionButton(emit);
    this.start();
    if (this.config.authenticated) {
      storeTimeZone(this.config);
    }
    document.addEventListener("submit", (e) => {
      this.leaving = !e.defaultPrevented;
    });
    const switched = [previous, previousHere].some((l) => l && l !== this.config.language);
    if (this.tabStore.takeRestore() || switched) {
      // This page replaces one of this tab in another language (the language
      // form, or a change of preferences elsewhere, reloads the page): show
      // again what that page showed, in this page's language, seen or not.
      this.refresh(this.tabStore.get(), true);
    }
  }

  // window.alarms: see docs/client.md.
  api() {
    return {
      version: "1",
      // A test toast's id is a string ("test-..."): kept as it is.
      dismiss: (id) =>
        this.dismissByUser(typeof id === "string" && id.startsWith("test-") ? id : Number(id)),
      state: () => ({
        leader: this.leader,
        streaming: this.stream.streaming,
        language: this.leader ? this.stream.language : this.alarmLanguage,
        lastEventId: this.stream.lastEventId,
        shown: this.toasts.ids(),
        notify: {
          permission: permissionState(),
          tabVisible: this.notifier.anyVisible()
        }
      })
    };
  }
}

// Starts the client of this page from its configuration (the data-* attributes
// of the alarms script tag); once per page.
export function start(dataset) {
  const config = readConfig(dataset);
  if (!config || window.alarms) {
    return;
  }
  const client = new Client(config);
  document.addEventListener("visibilitychange", () => client.toasts.layout());
  window.addEventListener("pagehide", () => client.stop());
  window.addEventListener("pageshow", (e) => {
    if (e.persisted) {
      client.start(); // back from the back/forward cache
    }
  });
  window.addEventListener("online", () => client.stream.online());
  window.alarms = client.api();
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", () => client.init());
  } else {
    client.init();
  }
}
