import { warnOnce } from "./log.js";

// A page may use alarms served by another origin (absolute data-*-url
// attributes); that server must list this page's origin for CORS.
export function isCrossOrigin(url) {
  try {
    return new URL(url, window.location.href).origin !== window.location.origin;
  } catch (error) {
    warnOnce("url", "not a URL: " + url, error);
    return false;
  }
}

const BACKOFF_BASE = 1000;
const BACKOFF_CAP = 30000;

// Capped exponential backoff with jitter, so that clients a restart cut off
// together do not all come back together.
export function backoff(attempt) {
  const ceiling = Math.min(BACKOFF_CAP, BACKOFF_BASE * Math.pow(2, attempt));
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}
