import { parseJSON } from "./log.js";

function toInt(value, fallback) {
  const n = parseInt(value, 10);
  return isNaN(n) ? fallback : n;
}

// The configuration the {% alarms_toasts %} tag renders as data-* attributes;
// null without a stream to read.
export function readConfig(ds) {
  if (!ds.streamUrl) {
    return null;
  }
  const scope = ds.scope || "anon";
  return {
    streamUrl: ds.streamUrl,
    seenUrl: ds.seenUrl,
    payloadsUrl: ds.payloadsUrl,
    dismissUrl: ds.dismissUrl,
    csrfToken: ds.csrfToken || "",
    csrfCookie: ds.csrfCookie || "",
    language: ds.language || document.documentElement.lang || "",
    authenticated: ds.authenticated === "true",
    scope: scope,
    // Names this user's state shared by the tabs of this browser.
    prefix: "alarms:" + scope + ":",
    autoHide: toInt(ds.autoHide, 6000),
    maxVisible: Math.max(1, toInt(ds.maxVisible, 3)),
    region: ds.region || "alarms-region",
    labels: parseJSON(ds.labels, {}, "data-labels") || {},
    pluralRule: ds.pluralRule || "",
    // The lowest level that raises a desktop notification (notify.js).
    desktopFrom: ds.desktopFrom || "critical",
    // A signed-in user's stored language and time zone ("" for none), and
    // where to store the zone this browser detects (only while none is).
    storedLanguage: ds.storedLanguage || "",
    timeZone: ds.timeZone || "",
    // When they were last saved (ms), to tell which of two pages is newer.
    preferencesVersion: toInt(ds.preferencesVersion, 0),
    zoneUrl: ds.zoneUrl || ""
  };
}
