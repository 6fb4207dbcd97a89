/*
 * Live alarms: toasts fed by ONE Server-Sent Events stream per browser.
 *
 * Configured by the data-* attributes of its own <script> tag (see the
 * {% alarms_toasts %} template tag). One tab, elected with the Web Locks API
 * (or a localStorage lease where that is missing), holds the EventSource and
 * relays every event to the other tabs over BroadcastChannel. Alarm text is
 * only ever placed with textContent.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script || window.alarms) {
    return; // no configuration, or already running on this page
  }
  var ds = script.dataset;

  function toInt(value, fallback) {
    var n = parseInt(value, 10);
    return isNaN(n) ? fallback : n;
  }

  function parseJSON(text, fallback) {
    try {
      return text ? JSON.parse(text) : fallback;
    } catch (e) {
      return fallback;
    }
  }

  var config = {
    streamUrl: ds.streamUrl,
    seenUrl: ds.seenUrl,
    payloadsUrl: ds.payloadsUrl,
    dismissUrl: ds.dismissUrl,
    csrfToken: ds.csrfToken || "",
    csrfCookie: ds.csrfCookie || "",
    language: ds.language || document.documentElement.lang || "",
    authenticated: ds.authenticated === "true",
    scope: ds.scope || "anon",
    autoHide: toInt(ds.autoHide, 6000),
    maxVisible: Math.max(1, toInt(ds.maxVisible, 3)),
    region: ds.region || "alarms-region",
    labels: parseJSON(ds.labels, {}),
    pluralRule: ds.pluralRule || ""
  };
  if (!config.streamUrl) {
    return;
  }

  var LEVELS = ["info", "success", "warning", "error", "critical"];
  var AUTO_HIDE = { info: true, success: true };
  var ASSERTIVE = { error: true, critical: true };
  var PREFIX = "alarms:" + config.scope + ":";
  var TAB = Math.random().toString(36).slice(2) + Date.now().toString(36);
  var MAX_REMEMBERED = 500;
  var SEEN_DELAY = 800;
  var BACKOFF_BASE = 1000;
  var BACKOFF_CAP = 30000;

  function label(name, fallback) {
    var value = config.labels[name];
    return typeof value === "string" && value ? value : fallback;
  }

  // A word with plural forms: the tag sends the catalogue's forms in the
  // catalogue's order, and its Plural-Forms rule, which picks one for a count.
  function plural(name, count, fallback) {
    var forms = config.labels[name];
    if (!Array.isArray(forms) || !forms.length) {
      return fallback;
    }
    var form = forms[pluralIndex(count)];
    // A form no whole count below a thousand selects (Czech's for fractions)
    // comes as null: the last form is the general one.
    if (typeof form !== "string" || !form) {
      form = forms[forms.length - 1];
    }
    return typeof form === "string" && form ? form : fallback;
  }

  var pluralRule = null;

  function pluralIndex(count) {
    if (pluralRule === null) {
      try {
        pluralRule = compilePlural(config.pluralRule || "n != 1");
      } catch (e) {
        pluralRule = compilePlural("n != 1");
      }
    }
    return pluralRule(count);
  }

  // Gettext's Plural-Forms expression (C syntax: "n==0 ? 0 : n==1 ? 1 : ...",
  // Arabic has six forms) read by a small parser into a function of n. Not
  // eval or new Function: a strict Content-Security-Policy forbids both.
  var BINARY = [["||"], ["&&"], ["==", "!="], ["<", ">", "<=", ">="], ["+", "-"], ["*", "/", "%"]];

  function compilePlural(source) {
    var tokens = String(source).match(/\d+|n|&&|\|\||[<>!=]=|[-+*\/%()?:<>!]|\S/g) || [];
    var at = 0;
    function peek() {
      return tokens[at];
    }
    function take(wanted) {
      var token = tokens[at++];
      if (wanted !== undefined && token !== wanted) {
        throw new Error("bad plural rule");
      }
      return token;
    }
    function operand() {
      var token = take();
      if (token === "n") {
        return function (n) {
          return n;
        };
      }
      if (/^\d+$/.test(token || "")) {
        var value = parseInt(token, 10);
        return function () {
          return value;
        };
      }
      if (token === "!") {
        var inner = operand();
        return function (n) {
          return inner(n) ? 0 : 1;
        };
      }
      if (token === "(") {
        var grouped = conditional();
        take(")");
        return grouped;
      }
      throw new Error("bad plural rule");
    }
    function binary(level) {
      if (level === BINARY.length) {
        return operand();
      }
      var left = binary(level + 1);
      while (BINARY[level].indexOf(peek()) !== -1) {
        left = combine(take(), left, binary(level + 1));
      }
      return left;
    }
    function conditional() {
      var test = binary(0);
      if (peek() !== "?") {
        return test;
      }
      take("?");
      var yes = conditional();
      take(":");
      var no = conditional();
      return function (n) {
        return test(n) ? yes(n) : no(n);
      };
    }
    var rule = conditional();
    if (at !== tokens.length) {
      throw new Error("bad plural rule");
    }
    return function (n) {
      var index = rule(Math.abs(Math.floor(n)));
      return isFinite(index) ? index : 0;
    };
  }

  // C semantics on whole numbers: comparisons give 1 or 0, division truncates.
  function combine(op, a, b) {
    return function (n) {
      var x = a(n);
      var y = b(n);
      switch (op) {
        case "||":
          return x || y ? 1 : 0;
        case "&&":
          return x && y ? 1 : 0;
        case "==":
          return x === y ? 1 : 0;
        case "!=":
          return x !== y ? 1 : 0;
        case "<":
          return x < y ? 1 : 0;
        case ">":
          return x > y ? 1 : 0;
        case "<=":
          return x <= y ? 1 : 0;
        case ">=":
          return x >= y ? 1 : 0;
        case "+":
          return x + y;
        case "-":
          return x - y;
        case "*":
          return x * y;
        case "/":
          return y ? Math.trunc(x / y) : 0;
        default:
          return y ? x % y : 0;
      }
    };
  }

  function emit(name, detail, cancelable) {
    var event = new CustomEvent(name, { detail: detail, cancelable: !!cancelable });
    return document.dispatchEvent(event);
  }

  function reducedMotion() {
    return !!(window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches);
  }

  // -- storage (shared by every tab of this user in this browser) ------------

  var store = {
    get: function (name, fallback) {
      try {
        var raw = window.localStorage.getItem(PREFIX + name);
        return raw === null ? fallback : JSON.parse(raw);
      } catch (e) {
        return fallback;
      }
    },
    set: function (name, value) {
      try {
        window.localStorage.setItem(PREFIX + name, JSON.stringify(value));
      } catch (e) {
        /* private mode or full: the in-memory state still works */
      }
    }
  };

  // What this tab shows, kept in sessionStorage: it outlives a navigation in
  // the same tab (the language form reloads the page) and no other tab sees it.
  var tabStore = {
    key: PREFIX + "shown",
    get: function () {
      try {
        var list = parseJSON(window.sessionStorage.getItem(this.key), []);
        return Array.isArray(list) ? list : [];
      } catch (e) {
        return [];
      }
    },
    set: function (ids) {
      try {
        window.sessionStorage.setItem(this.key, JSON.stringify(ids));
      } catch (e) {
        /* without it a language switch cannot restore this tab's toasts */
      }
    }
  };

  // A bounded set of alarm ids kept in localStorage, re-read on every use so
  // that all tabs see each other's writes.
  function IdSet(name) {
    this.name = name;
    this.local = new Set(this.read());
  }
  IdSet.prototype.read = function () {
    var list = store.get(this.name, []);
    return Array.isArray(list) ? list : [];
  };
  IdSet.prototype.has = function (id) {
    return this.local.has(id) || this.read().indexOf(id) !== -1;
  };
  IdSet.prototype.add = function (id) {
    this.local.add(id);
    var list = this.read();
    if (list.indexOf(id) === -1) {
      list.push(id);
      store.set(this.name, list.slice(-MAX_REMEMBERED));
    }
  };

  var seenIds = new IdSet("seen");
  var dismissedIds = new IdSet("dismissed");

  // -- messages between tabs ------------------------------------------------

  function Channel(name, onMessage) {
    var self = this;
    if (typeof window.BroadcastChannel === "function") {
      this.bc = new window.BroadcastChannel(name);
      this.bc.onmessage = function (e) {
        onMessage(e.data);
      };
    } else {
      // Fallback: a storage event reaches every other tab of the origin.
      this.key = name + ":message";
      this.onStorage = function (e) {
        if (e.key === self.key && e.newValue) {
          var wrapped = parseJSON(e.newValue, null);
          if (wrapped) {
            onMessage(wrapped.m);
          }
        }
      };
      window.addEventListener("storage", this.onStorage);
    }
  }
  Channel.prototype.post = function (message) {
    if (this.bc) {
      this.bc.postMessage(message);
      return;
    }
    try {
      window.localStorage.setItem(this.key, JSON.stringify({ m: message, n: Math.random() }));
    } catch (e) {
      /* nothing to relay through */
    }
  };
  Channel.prototype.close = function () {
    if (this.bc) {
      this.bc.close();
    } else {
      window.removeEventListener("storage", this.onStorage);
    }
  };

  // -- leader election -------------------------------------------------------

  // Web Locks: the lock is held until this page goes away, and the next tab in
  // the queue gets it at once.
  function LockElection(name, onLead) {
    var self = this;
    this.stopped = false;
    this.release = null;
    this.abort = typeof window.AbortController === "function" ? new AbortController() : null;
    var options = this.abort ? { signal: this.abort.signal } : {};
    navigator.locks
      .request(name, options, function () {
        if (self.stopped) {
          return undefined;
        }
        return new Promise(function (resolve) {
          self.release = resolve;
          onLead();
        });
      })
      .catch(function () {
        /* aborted: this page is going away */
      });
  }
  LockElection.prototype.stop = function () {
    this.stopped = true;
    if (this.abort) {
      this.abort.abort();
    }
    if (this.release) {
      this.release();
    }
  };

  // Fallback: a lease in localStorage, renewed by the leader every 400 ms and
  // taken over when older than 1.2 s (or at once when the leader says goodbye).
  var LEASE_BEAT = 400;
  var LEASE_TTL = 1200;

  function LeaseElection(name, onLead, onLose) {
    var self = this;
    this.key = name + ":lease";
    this.leading = false;
    this.stopped = false;
    this.onLead = onLead;
    this.onLose = onLose;
    this.timer = window.setInterval(function () {
      self.tick();
    }, LEASE_BEAT);
    this.onStorage = function (e) {
      if (e.key === self.key && !e.newValue) {
        self.tick();
      }
    };
    window.addEventListener("storage", this.onStorage);
    this.tick();
  }
  LeaseElection.prototype.read = function () {
    try {
      return parseJSON(window.localStorage.getItem(this.key), null);
    } catch (e) {
      return null;
    }
  };
  LeaseElection.prototype.write = function () {
    try {
      window.localStorage.setItem(this.key, JSON.stringify({ tab: TAB, t: Date.now() }));
    } catch (e) {
      /* without storage every tab leads; still correct, only wasteful */
    }
  };
  LeaseElection.prototype.tick = function () {
    var self = this;
    if (this.stopped) {
      return;
    }
    var lease = this.read();
    var now = Date.now();
    var fresh = lease && lease.t > now - LEASE_TTL;
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
      window.setTimeout(function () {
        var mine = self.read();
        if (!self.stopped && !self.leading && mine && mine.tab === TAB) {
          self.leading = true;
          self.onLead();
        }
      }, 50);
    }
  };
  LeaseElection.prototype.stop = function () {
    this.stopped = true;
    window.clearInterval(this.timer);
    window.removeEventListener("storage", this.onStorage);
    var lease = this.read();
    if (this.leading && lease && lease.tab === TAB) {
      try {
        window.localStorage.removeItem(this.key);
      } catch (e) {
        /* it expires by itself */
      }
    }
    this.leading = false;
  };

  // -- talking to the server -------------------------------------------------

  function csrfToken() {
    if (config.csrfCookie) {
      var parts = document.cookie ? document.cookie.split(";") : [];
      for (var i = 0; i < parts.length; i++) {
        var pair = parts[i].trim();
        if (pair.indexOf(config.csrfCookie + "=") === 0) {
          return decodeURIComponent(pair.slice(config.csrfCookie.length + 1));
        }
      }
    }
    return config.csrfToken;
  }

  // A page may use alarms served by another origin (absolute data-*-url
  // attributes); that server must list this page's origin for CORS.
  function isCrossOrigin(url) {
    try {
      return new URL(url, window.location.href).origin !== window.location.origin;
    } catch (e) {
      return false;
    }
  }

  function postIds(url, ids, keepalive) {
    if (!url || !ids.length || !window.fetch) {
      return Promise.resolve(true);
    }
    var request = {
      method: "POST",
      credentials: "same-origin",
      keepalive: !!keepalive,
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify({ ids: ids.slice(0, 200) })
    };
    if (isCrossOrigin(url)) {
      // The session cookie goes along by CORS. No CSRF token: this page cannot
      // read the other origin's, and the server takes JSON from a listed origin
      // without one (the content type forces a preflight).
      request.mode = "cors";
      request.credentials = "include";
      request.headers = { "Content-Type": "application/json" };
    }
    return window
      .fetch(url, request)
      .then(function (response) {
        // 4xx will not get better by retrying.
        return response.ok || (response.status >= 400 && response.status < 500);
      })
      .catch(function () {
        return false;
      });
  }

  // Ids waiting to be POSTed; retried with backoff while the server is away.
  function Outbox(url) {
    this.url = url;
    this.ids = [];
    this.timer = null;
    this.failures = 0;
  }
  Outbox.prototype.add = function (id, delay) {
    if (this.ids.indexOf(id) === -1) {
      this.ids.push(id);
    }
    this.schedule(delay);
  };
  Outbox.prototype.schedule = function (delay) {
    var self = this;
    if (this.timer === null) {
      this.timer = window.setTimeout(function () {
        self.timer = null;
        self.flush(false);
      }, delay);
    }
  };
  Outbox.prototype.flush = function (keepalive) {
    var self = this;
    var batch = this.ids.splice(0, 200);
    if (!batch.length) {
      return;
    }
    postIds(this.url, batch, keepalive).then(function (ok) {
      if (ok) {
        self.failures = 0;
        if (self.ids.length) {
          self.schedule(0);
        }
        return;
      }
      self.failures += 1;
      self.ids = batch.concat(self.ids);
      if (self.failures <= 8) {
        self.schedule(backoff(self.failures));
      }
    });
  };

  var seenOutbox = new Outbox(config.seenUrl);
  var dismissOutbox = new Outbox(config.dismissUrl);

  function backoff(attempt) {
    var ceiling = Math.min(BACKOFF_CAP, BACKOFF_BASE * Math.pow(2, attempt));
    return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
  }

  // -- state of this page ----------------------------------------------------

  var known = new Map(); // id -> payload of alarms live for this user
  var toasts = new Map(); // id -> toast record, for those on screen
  var shownHere = new Set(); // ids toasted on this page: never twice
  var lastEventId = "";
  var leader = false;
  var source = null;
  var streamLanguage = "";
  // The language alarm texts are shown in on this page: the page's own at
  // first, then the one the user switched to in any tab (the page's words
  // stay in the page's language until it reloads).
  var alarmLanguage = config.language;
  var pending = new Map(); // id -> refresh generation, for payloads asked for again
  var generation = 0;
  var opened = false;
  var attempt = 0;
  var reopenTimer = null;
  var channel = null;
  var election = null;
  var expanded = false;
  var region = null;
  var stack = null;
  var moreButton = null;

  function validPayload(data) {
    return (
      data &&
      typeof data === "object" &&
      typeof data.id === "number" &&
      isFinite(data.id) &&
      LEVELS.indexOf(data.level) !== -1
    );
  }

  // -- receiving events (from the stream, or relayed by the leader) ------------

  function isFresh(data) {
    // Seen elsewhere (another page or tab of this browser): not toasted again,
    // except critical alarms, which come back until dismissed.
    return data.level === "critical" || !seenIds.has(data.id);
  }

  function handle(name, data, fresh) {
    if (!data || typeof data.id !== "number") {
      return;
    }
    var id = data.id;
    if (name === "alarm") {
      if (!validPayload(data) || dismissedIds.has(id)) {
        return;
      }
      var update = known.has(id) || toasts.has(id);
      known.set(id, data);
      badges.add(id);
      var wanted = emit("alarms:received", { alarm: data, update: update }, true);
      if (toasts.has(id)) {
        fillToast(toasts.get(id), data);
      } else if (wanted && fresh && !shownHere.has(id)) {
        showToast(data);
      }
    } else if (name === "retract") {
      forget(id);
      emit("alarms:retracted", { id: id });
    } else if (name === "dismiss") {
      dismissedIds.add(id);
      var present = known.has(id) || toasts.has(id);
      forget(id);
      if (present) {
        emit("alarms:dismissed", { id: id, source: "elsewhere" });
      }
    }
  }

  function forget(id) {
    pending.delete(id); // an answer on its way must not bring it back
    var had = known.delete(id);
    badges.remove(id);
    markItems(id);
    closeToast(id);
    return had;
  }

  function onStreamEvent(name, e) {
    if (e.lastEventId) {
      lastEventId = e.lastEventId;
    }
    var data = parseJSON(e.data, null);
    if (!data || typeof data.id !== "number") {
      return;
    }
    var fresh = name === "alarm" ? isFresh(data) : false;
    var firstTime = fresh && !seenIds.has(data.id) && !dismissedIds.has(data.id);
    handle(name, data, fresh);
    if (firstTime) {
      // Only the leader records "seen": localStorage reaches other tabs later
      // than BroadcastChannel does, so they could not tell it was done.
      seenIds.add(data.id);
      if (config.authenticated) {
        seenOutbox.add(data.id, SEEN_DELAY);
      }
    }
    channel.post({ type: "event", name: name, data: data, fresh: fresh, lastEventId: lastEventId });
  }

  function onChannelMessage(message) {
    if (!message || typeof message !== "object") {
      return;
    }
    switch (message.type) {
      case "event":
        if (message.lastEventId) {
          lastEventId = message.lastEventId;
        }
        handle(message.name, message.data, !!message.fresh);
        break;
      case "dismiss":
        if (typeof message.id === "number") {
          var had = known.has(message.id) || toasts.has(message.id);
          dismissedIds.add(message.id);
          forget(message.id);
          if (had) {
            emit("alarms:dismissed", { id: message.id, source: "tab" });
          }
        }
        break;
      case "hello":
        if (leader) {
          greet(message);
        }
        follow(message.language);
        break;
      case "sync":
        if (message.to === TAB) {
          if (message.lastEventId && !lastEventId) {
            lastEventId = message.lastEventId;
          }
          (message.alarms || []).forEach(function (data) {
            // Only what this page lacks: the leader's copy may be older than
            // what the stream or the server has given this page meanwhile.
            if (data && !toasts.has(data.id) && !pending.has(data.id)) {
              handle("alarm", data, true);
            }
          });
        }
        break;
      default:
        break;
    }
  }

  // A new page said hello: give it what it should show, and follow its
  // language (the newest page speaks the language the user chose last).
  function greet(message) {
    var switching = !!message.language && message.language !== streamLanguage;
    var critical = [];
    known.forEach(function (data) {
      if (data.level === "critical" && !dismissedIds.has(data.id)) {
        critical.push(data);
      }
    });
    // After a switch the leader's copies are in the old language: the
    // reopened stream sends the critical alarms again, in the new one.
    channel.post({
      type: "sync",
      to: message.tab,
      alarms: switching ? [] : critical,
      lastEventId: lastEventId
    });
    if (switching) {
      streamLanguage = message.language;
      // A fresh connect (no last id): the server re-sends what is still live,
      // in the new language, and toasts on screen are updated in place.
      openStream(false);
    }
  }

  // -- the same alarms in another language --------------------------------------

  // The user chose another language in some tab (its new page said hello):
  // show what this page shows in that language.
  function follow(language) {
    if (!language || language === alarmLanguage) {
      return;
    }
    alarmLanguage = language;
    refresh(Array.from(toasts.keys()), false);
  }

  // Asks the server for the payloads of `ids` in this page's alarm language.
  // Each page asks for what it shows itself: the stream cannot tell, since its
  // snapshot leaves out the non-critical alarms the user has seen, and no other
  // tab knows what this one shows. An alarm on screen is redrawn in place;
  // with `restore`, one the page before this in the tab showed is shown again.
  function refresh(ids, restore) {
    ids = ids.filter(function (id) {
      return typeof id === "number" && isFinite(id) && !dismissedIds.has(id);
    });
    if (!ids.length || !config.payloadsUrl || !window.fetch) {
      return;
    }
    generation += 1;
    var mine = generation;
    var language = alarmLanguage;
    ids.forEach(function (id) {
      pending.set(id, mine);
    });
    for (var i = 0; i < ids.length; i += 200) {
      applyPayloads(ids.slice(i, i + 200), ids, language, mine, restore);
    }
  }

  function applyPayloads(batch, order, language, mine, restore) {
    var url = new URL(config.payloadsUrl, window.location.href);
    url.searchParams.set("ids", batch.join(","));
    url.searchParams.set("lang", language);
    var cross = isCrossOrigin(url.href);
    window
      .fetch(url.toString(), {
        mode: cross ? "cors" : "same-origin",
        credentials: cross ? "include" : "same-origin"
      })
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .catch(function () {
        return null; // these stay in the language they were in
      })
      .then(function (body) {
        var list = body && Array.isArray(body.alarms) ? body.alarms.filter(validPayload) : [];
        // Oldest first, as they were shown, so that the newest ends on top.
        list.sort(function (a, b) {
          return order.indexOf(a.id) - order.indexOf(b.id);
        });
        list.forEach(function (data) {
          // Dropped meanwhile (dismissed, retracted) or asked for again since.
          if (pending.get(data.id) === mine && language === alarmLanguage) {
            handle("alarm", data, restore);
          }
        });
        batch.forEach(function (id) {
          if (pending.get(id) === mine) {
            pending.delete(id);
          }
        });
      });
  }

  // -- the stream (leader only) ------------------------------------------------

  function streamUrl(resume) {
    var url = new URL(config.streamUrl, window.location.href);
    if (streamLanguage) {
      url.searchParams.set("lang", streamLanguage);
    }
    if (resume && lastEventId) {
      url.searchParams.set("last_event_id", lastEventId);
    }
    return url.toString();
  }

  function openStream(resume) {
    closeStream();
    if (!leader) {
      return;
    }
    var url = streamUrl(resume);
    // Across origins the session cookie is sent only when asked for.
    var es = isCrossOrigin(url)
      ? new EventSource(url, { withCredentials: true })
      : new EventSource(url);
    source = es;
    opened = false;
    es.onopen = function () {
      if (es !== source) {
        return;
      }
      opened = true;
      attempt = 0;
    };
    es.onerror = function () {
      if (es !== source) {
        return;
      }
      if (es.readyState === EventSource.CLOSED || !opened) {
        // The browser gave up (a non-200 answer) or cannot reach the server:
        // reconnect ourselves, later each time, and never stop.
        scheduleReopen();
      } else {
        // The server ended a healthy stream: EventSource reconnects by itself
        // with Last-Event-ID; if that fails we land in the branch above.
        opened = false;
      }
    };
    ["alarm", "retract", "dismiss"].forEach(function (name) {
      es.addEventListener(name, function (e) {
        if (es === source) {
          onStreamEvent(name, e);
        }
      });
    });
  }

  function closeStream() {
    if (reopenTimer !== null) {
      window.clearTimeout(reopenTimer);
      reopenTimer = null;
    }
    if (source) {
      source.close();
      source = null;
    }
    opened = false;
  }

  function scheduleReopen() {
    if (source) {
      source.close();
      source = null;
    }
    if (reopenTimer !== null || !leader) {
      return;
    }
    var delay = backoff(attempt);
    attempt += 1;
    reopenTimer = window.setTimeout(function () {
      reopenTimer = null;
      if (leader) {
        openStream(true);
      }
    }, delay);
  }

  function lead() {
    leader = true;
    attempt = 0;
    streamLanguage = store.get("language", "") || config.language;
    follow(streamLanguage);
    // A tab that has seen events resumes after the last one; a fresh page asks
    // for everything the user should still see.
    openStream(!!lastEventId);
  }

  function stepDown() {
    leader = false;
    closeStream();
  }

  // -- toasts ---------------------------------------------------------------

  var SVG = "http://www.w3.org/2000/svg";
  var ICONS = {
    info: ["M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20z", "M12 11v6", "M12 7.5v.01"],
    success: ["M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20z", "M7.5 12.5l3 3 6-6.5"],
    warning: ["M10.3 3.9L1.8 18a2 2 0 0 0 1.7 3h17a2 2 0 0 0 1.7-3L13.7 3.9a2 2 0 0 0-3.4 0z",
      "M12 9v4.5", "M12 17.5v.01"],
    error: ["M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20z", "M15 9l-6 6", "M9 9l6 6"],
    critical: ["M7.9 2h8.2L22 7.9v8.2L16.1 22H7.9L2 16.1V7.9z", "M12 7.5v5.5", "M12 16.5v.01"]
  };

  function icon(level) {
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "20");
    svg.setAttribute("height", "20");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    (ICONS[level] || ICONS.info).forEach(function (d) {
      var path = document.createElementNS(SVG, "path");
      path.setAttribute("d", d);
      svg.appendChild(path);
    });
    return svg;
  }

  function el(tag, className) {
    var node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    return node;
  }

  // http(s) addresses and paths of the alarm server's site only: never javascript:, data:...
  function safeLink(url) {
    if (typeof url !== "string" || !url || /[\u0000-\u0020\\]/.test(url)) {
      return null;
    }
    if (url.charAt(0) === "/") {
      if (url.charAt(1) === "/") {
        return null;
      }
      // A path of the alarm server's site, which may be another origin than this page.
      return isCrossOrigin(config.streamUrl)
        ? new URL(url, new URL(config.streamUrl, window.location.href)).href
        : url;
    }
    try {
      var parsed = new URL(url);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch (e) {
      return null;
    }
  }

  function ensureRegion() {
    if (region && region.isConnected) {
      return;
    }
    region = document.getElementById(config.region);
    if (!region) {
      region = el("div", "alarms-region");
      region.id = config.region;
      region.setAttribute("aria-label", label("region", "Alarms"));
      document.body.appendChild(region);
    }
    stack = region.querySelector(".alarms-stack");
    if (!stack) {
      stack = el("div", "alarms-stack");
      region.appendChild(stack);
    }
    moreButton = region.querySelector(".alarms-more");
    if (!moreButton) {
      moreButton = el("button", "alarms-more");
      moreButton.type = "button";
      moreButton.hidden = true;
      region.appendChild(moreButton);
    }
    moreButton.addEventListener("click", function () {
      expanded = !expanded;
      layout();
    });
  }

  function showToast(data) {
    ensureRegion();
    var node = el("div", "alarms-toast");
    node.tabIndex = 0;
    node.setAttribute("aria-atomic", "true");
    var iconBox = el("span", "alarms-icon");
    iconBox.setAttribute("role", "img");
    var body = el("div", "alarms-body");
    var title = el("p", "alarms-title");
    var message = el("p", "alarms-message");
    var link = el("a", "alarms-link");
    var close = el("button", "alarms-close");
    close.type = "button";
    close.setAttribute("aria-label", label("dismiss", "Dismiss"));
    close.setAttribute("title", label("dismiss", "Dismiss"));
    close.setAttribute("lang", config.language);
    close.appendChild(document.createTextNode("\u00d7"));
    var progress = el("span", "alarms-progress");
    progress.setAttribute("aria-hidden", "true");
    body.appendChild(title);
    body.appendChild(message);
    body.appendChild(link);
    node.appendChild(iconBox);
    node.appendChild(body);
    node.appendChild(close);
    node.appendChild(progress);

    var toast = {
      id: data.id,
      node: node,
      icon: iconBox,
      title: title,
      message: message,
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
    fillToast(toast, data);

    close.addEventListener("click", function () {
      dismissByUser(toast.id);
    });
    node.addEventListener("keydown", function (e) {
      if (e.key === "Escape" || e.key === "Esc") {
        e.preventDefault();
        dismissByUser(toast.id);
      }
    });
    node.addEventListener("mouseenter", function () {
      toast.hovered = true;
      layout();
    });
    node.addEventListener("mouseleave", function () {
      toast.hovered = false;
      layout();
    });
    node.addEventListener("focusin", function () {
      toast.focused = true;
      layout();
    });
    node.addEventListener("focusout", function (e) {
      if (!node.contains(e.relatedTarget)) {
        toast.focused = false;
        layout();
      }
    });

    toasts.set(data.id, toast);
    tabStore.set(Array.from(toasts.keys()));
    shownHere.add(data.id);
    stack.insertBefore(node, stack.firstChild); // newest on top
    seenIds.local.add(data.id); // the leader stores and reports it
    layout();
  }

  // Also used for an edited alarm, or the same alarm in a new language.
  function fillToast(toast, data) {
    var node = toast.node;
    var level = data.level;
    node.className = "alarms-toast alarms-toast--" + level;
    node.setAttribute("data-alarm-id", String(data.id));
    node.setAttribute("data-level", level);
    node.setAttribute("lang", data.language || "");
    node.setAttribute("dir", data.dir === "rtl" ? "rtl" : "ltr");
    node.setAttribute("role", ASSERTIVE[level] ? "alert" : "status");
    node.setAttribute("aria-live", ASSERTIVE[level] ? "assertive" : "polite");
    toast.icon.textContent = "";
    toast.icon.appendChild(icon(level));
    toast.icon.setAttribute("aria-label", label(level, level));
    toast.icon.setAttribute("lang", config.language);
    toast.title.textContent = data.title || "";
    toast.message.textContent = data.message || "";
    var href = safeLink(data.url);
    if (href) {
      toast.link.setAttribute("href", href);
      toast.link.textContent = label("open", "Open");
      toast.link.setAttribute("lang", config.language);
      toast.link.hidden = false;
    } else {
      toast.link.removeAttribute("href");
      toast.link.textContent = "";
      toast.link.hidden = true;
    }
    if (toast.level !== level) {
      toast.level = level;
      stopTimer(toast);
      toast.total = AUTO_HIDE[level] ? config.autoHide : 0;
      toast.remaining = toast.total;
      node.classList.toggle("alarms-toast--auto", toast.total > 0);
    }
  }

  function visible(toast) {
    return !toast.node.classList.contains("alarms-toast--overflow") && !document.hidden;
  }

  function startTimer(toast) {
    if (toast.timer !== null || toast.total <= 0 || toast.closing) {
      return;
    }
    toast.startedAt = Date.now();
    toast.timer = window.setTimeout(function () {
      toast.timer = null;
      closeToast(toast.id); // hidden, not dismissed: it stays in the alarm centre
    }, toast.remaining);
    var bar = toast.progress;
    bar.style.transition = "none";
    bar.style.transform = "scaleX(" + toast.remaining / toast.total + ")";
    void bar.offsetWidth; // apply the start value before the transition
    bar.style.transition = "transform " + toast.remaining + "ms linear";
    bar.style.transform = "scaleX(0)";
    toast.node.classList.remove("alarms-toast--paused");
  }

  function stopTimer(toast) {
    if (toast.timer === null) {
      return;
    }
    window.clearTimeout(toast.timer);
    toast.timer = null;
    toast.remaining = Math.max(0, toast.remaining - (Date.now() - toast.startedAt));
    var bar = toast.progress;
    bar.style.transition = "none";
    bar.style.transform = "scaleX(" + (toast.total ? toast.remaining / toast.total : 0) + ")";
    toast.node.classList.add("alarms-toast--paused");
  }

  function layout() {
    if (!stack) {
      return;
    }
    var nodes = Array.prototype.slice.call(stack.children);
    var live = nodes.filter(function (node) {
      return !node.classList.contains("alarms-toast--leaving");
    });
    var hiddenCount = 0;
    live.forEach(function (node, index) {
      var over = !expanded && index >= config.maxVisible;
      node.classList.toggle("alarms-toast--overflow", over);
      if (over) {
        hiddenCount += 1;
      }
    });
    toasts.forEach(function (toast) {
      if (visible(toast) && !toast.hovered && !toast.focused) {
        startTimer(toast);
      } else {
        stopTimer(toast);
      }
    });
    if (!moreButton) {
      return;
    }
    if (expanded && live.length > config.maxVisible) {
      moreButton.textContent = label("fewer", "Show fewer");
      moreButton.hidden = false;
      moreButton.setAttribute("aria-expanded", "true");
    } else if (hiddenCount > 0) {
      moreButton.textContent = plural("more", hiddenCount, "+%(count)s more").replace(
        "%(count)s",
        String(hiddenCount)
      );
      moreButton.hidden = false;
      moreButton.setAttribute("aria-expanded", "false");
    } else {
      expanded = false;
      moreButton.hidden = true;
    }
  }

  function closeToast(id) {
    var toast = toasts.get(id);
    if (!toast) {
      return;
    }
    toasts.delete(id);
    tabStore.set(Array.from(toasts.keys()));
    stopTimer(toast);
    toast.closing = true;
    var node = toast.node;
    var hadFocus = node.contains(document.activeElement);
    var next = node.nextElementSibling || node.previousElementSibling;
    if (reducedMotion() || node.classList.contains("alarms-toast--overflow") || document.hidden) {
      node.remove();
    } else {
      node.classList.add("alarms-toast--leaving");
      var done = function () {
        node.remove();
      };
      node.addEventListener("animationend", done, { once: true });
      window.setTimeout(done, 400);
    }
    layout();
    if (hadFocus) {
      // Keep keyboard users in the stack rather than dropping them to <body>.
      var target = next && next.querySelector(".alarms-close");
      if (target && !next.classList.contains("alarms-toast--leaving")) {
        target.focus();
      }
    }
  }

  function dismissByUser(id) {
    dismissedIds.add(id);
    forget(id);
    channel.post({ type: "dismiss", id: id });
    if (config.authenticated) {
      dismissOutbox.add(id, 0);
    }
    emit("alarms:dismissed", { id: id, source: "user" });
  }

  // -- the unread badge and the alarm centre ---------------------------------

  var badges = {
    ids: null,
    init: function () {
      var nodes = document.querySelectorAll("[data-alarms-badge]");
      if (!nodes.length) {
        return;
      }
      var ids = new Set();
      Array.prototype.forEach.call(nodes, function (node) {
        (node.getAttribute("data-ids") || "").split(",").forEach(function (raw) {
          var id = parseInt(raw, 10);
          if (!isNaN(id) && !dismissedIds.has(id)) {
            ids.add(id);
          }
        });
      });
      this.ids = ids;
      this.render();
    },
    add: function (id) {
      if (this.ids && !this.ids.has(id)) {
        this.ids.add(id);
        this.render();
      }
    },
    remove: function (id) {
      if (this.ids && this.ids.delete(id)) {
        this.render();
      }
    },
    render: function () {
      var count = this.ids.size;
      var text = count > 99 ? "99+" : String(count);
      var nodes = document.querySelectorAll("[data-alarms-badge]");
      Array.prototype.forEach.call(nodes, function (node) {
        var counter = node.querySelector(".alarms-badge-count");
        if (counter) {
          counter.textContent = text;
        }
        node.setAttribute("data-count", String(count));
        node.classList.toggle("alarms-badge--empty", count === 0);
      });
    }
  };

  // Items of the alarm centre follow dismissals made in other tabs.
  function markItems(id) {
    var nodes = document.querySelectorAll('[data-alarms-item="' + id + '"]');
    Array.prototype.forEach.call(nodes, function (node) {
      node.classList.add("alarms-item--done");
    });
  }

  // -- lifecycle ------------------------------------------------------------

  function start() {
    if (channel) {
      return;
    }
    channel = new Channel(PREFIX + "channel", onChannelMessage);
    store.set("language", config.language);
    var lockName = PREFIX + "leader";
    if (navigator.locks && typeof navigator.locks.request === "function") {
      election = new LockElection(lockName, lead);
    } else {
      election = new LeaseElection(lockName, lead, stepDown);
    }
    channel.post({ type: "hello", tab: TAB, language: config.language });
  }

  function stop() {
    seenOutbox.flush(true);
    dismissOutbox.flush(true);
    stepDown();
    if (election) {
      election.stop();
      election = null;
    }
    if (channel) {
      channel.close();
      channel = null;
    }
  }

  document.addEventListener("visibilitychange", function () {
    layout();
  });
  window.addEventListener("pagehide", stop);
  window.addEventListener("pageshow", function (e) {
    if (e.persisted) {
      start(); // back from the back/forward cache
    }
  });
  window.addEventListener("online", function () {
    if (leader && !opened) {
      attempt = 0;
      openStream(true);
    }
  });

  window.alarms = {
    version: "1",
    dismiss: function (id) {
      dismissByUser(Number(id));
    },
    state: function () {
      return {
        leader: leader,
        streaming: !!source && opened,
        language: leader ? streamLanguage : alarmLanguage,
        lastEventId: lastEventId,
        shown: Array.from(toasts.keys())
      };
    }
  };

  function init() {
    // The language this user's pages spoke until now (start() sets this page's).
    var previous = store.get("language", "");
    ensureRegion();
    badges.init();
    start();
    if (previous && previous !== config.language) {
      // This page replaces one of this tab in another language (the language
      // form reloads the page): show again what that page showed, in this
      // page's language, seen or not.
      refresh(tabStore.get(), true);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
