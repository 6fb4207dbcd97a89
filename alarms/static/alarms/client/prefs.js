import { warnOnce } from "./log.js";
import { csrfToken } from "./outbox.js";

// A signed-in user's stored preferences, as this page knows them.

// The browser's time zone (an IANA name), or "" where it cannot tell.
export function browserTimeZone() {
  try {
    return (window.Intl && Intl.DateTimeFormat().resolvedOptions().timeZone) || "";
  } catch (error) {
    return "";
  }
}

// An ISO time as the page's language writes a date and time, in `zone` (an
// IANA name; "" for the browser's own); "" when it is no time.
export function formatTime(iso, language, zone) {
  const date = typeof iso === "string" ? new Date(iso) : null;
  if (!date || isNaN(date.getTime()) || !window.Intl) {
    return "";
  }
  const locale = language || undefined;
  const options = { dateStyle: "medium", timeStyle: "short" };
  try {
    const zoned = zone ? { ...options, timeZone: zone } : options;
    return new Intl.DateTimeFormat(locale, zoned).format(date);
  } catch (error) {
    // A zone this browser does not know: its own.
    warnOnce("time-zone-format", "unknown time zone " + zone, error);
    return new Intl.DateTimeFormat(locale, options).format(date);
  }
}

// Stores this browser's time zone for the user, once: the page carries the
// URL only while the user has none stored.
export function storeTimeZone(config) {
  const zone = browserTimeZone();
  if (!config.zoneUrl || !zone || !window.fetch) {
    return;
  }
  window
    .fetch(config.zoneUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(config) },
      body: JSON.stringify({ time_zone: zone })
    })
    .then(
      (response) => {
        if (!response.ok) {
          warnOnce("time-zone", "the time zone could not be stored: " + response.status);
        }
      },
      (error) => warnOnce("time-zone", "the time zone could not be stored", error)
    );
}

// Whether a page rendered with `config` shows what the preferences of a
// `prefs` event say: its language and its times' zone are the server's. A page
// rendered with no zone shows the browser's: the same as that zone stored.
export function pageIsCurrent(config, prefs) {
  const zone = prefs.time_zone || "";
  const shown = config.timeZone || browserTimeZone();
  const sameZone = zone === shown || zone === config.timeZone;
  return (prefs.language || "") === config.storedLanguage && sameZone;
}
