// Failures are reported, never swallowed, but once per kind: a page that keeps
// retrying a server that is away would otherwise fill the console.
const warned = new Set();

export function warnOnce(kind, message, error) {
  if (warned.has(kind)) {
    return;
  }
  warned.add(kind);
  if (error === undefined) {
    console.warn("alarms: " + message);
  } else {
    console.warn("alarms: " + message, error);
  }
}

// JSON that another tab, the server or an older version wrote: the fallback
// when it does not parse (the warning names `kind`).
export function parseJSON(text, fallback, kind) {
  if (!text) {
    return fallback;
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    warnOnce("json:" + kind, kind + " is not valid JSON", error);
    return fallback;
  }
}
