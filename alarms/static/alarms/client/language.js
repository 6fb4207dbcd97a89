// Which translation of an alarm a reader gets: alarms.translation.choose_language,
// the one fallback rule, mirrored for the admin's live preview (admin.js), so
// that the preview follows every keystroke without a request.
// tests/e2e/test_operator_browser.py checks both on a table of cases.

const MAX_TAG_LENGTH = 15;
const TAG = /^[a-z]{1,8}(?:-[a-z0-9]{1,8})*$/;
// alarms.translation.ALIASES
const ALIASES = {
  iw: ["he"],
  in: ["id"],
  ji: ["yi"],
  jw: ["jv"],
  mo: ["ro"],
  no: ["nb"],
  nb: ["no"]
};

// alarms.translation.tag_variants: the tag in lowercase, then its aliases; [] if no tag.
export function tagVariants(code) {
  if (typeof code !== "string" || !code || code.length > MAX_TAG_LENGTH || !/^[\x00-\x7f]*$/.test(code)) {
    return [];
  }
  const tag = code.replace(/_/g, "-").toLowerCase();
  if (!TAG.test(tag)) {
    return [];
  }
  const dash = tag.indexOf("-");
  const primary = dash === -1 ? tag : tag.slice(0, dash);
  const rest = dash === -1 ? "" : tag.slice(dash);
  return [tag].concat((ALIASES[primary] || []).map((alias) => alias + rest));
}

// alarms.translation.choose_language: exact code, its generic language, the
// site's default (then its generic language), then the first code in order.
export function chooseLanguage(wanted, available, defaultLanguage) {
  const codes = Array.from(new Set(available.map((c) => String(c).toLowerCase()))).sort();
  if (!codes.length) {
    return null;
  }
  const variants = tagVariants(wanted);
  for (const variant of variants) {
    if (codes.indexOf(variant) !== -1) {
      return variant;
    }
  }
  for (const variant of variants) {
    const generic = variant.split("-")[0];
    if (codes.indexOf(generic) !== -1) {
      return generic;
    }
  }
  const fallback = String(defaultLanguage || "").toLowerCase();
  if (codes.indexOf(fallback) !== -1) {
    return fallback;
  }
  if (codes.indexOf(fallback.split("-")[0]) !== -1) {
    return fallback.split("-")[0];
  }
  return codes[0];
}
