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
// `prefs` event say: its language and its times' zone are the server's.
export function pageIsCurrent(config, prefs) {
  return (
    (prefs.language || "") === config.storedLanguage && (prefs.time_zone || "") === config.timeZone
  );
}
