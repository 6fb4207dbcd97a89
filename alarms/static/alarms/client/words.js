import { warnOnce } from "./log.js";

// The client's words, in the page's language, as the {% alarms_toasts %} tag
// sends them: plain strings, and words with plural forms as a list of forms
// in the catalogue's order, with the catalogue's Plural-Forms rule.
export class Words {
  constructor(labels, pluralRule) {
    this.labels = labels;
    this.source = pluralRule || "n != 1";
    this.rule = null;
  }

  label(name, fallback) {
    const value = this.labels[name];
    return typeof value === "string" && value ? value : fallback;
  }

  plural(name, count, fallback) {
    const forms = this.labels[name];
    if (!Array.isArray(forms) || !forms.length) {
      return fallback;
    }
    let form = forms[this.pluralIndex(count)];
    // A form no whole count below a thousand selects (Czech's for fractions)
    // comes as null: the last form is the general one.
    if (typeof form !== "string" || !form) {
      form = forms[forms.length - 1];
    }
    return typeof form === "string" && form ? form : fallback;
  }

  pluralIndex(count) {
    if (this.rule === null) {
      try {
        this.rule = compilePlural(this.source);
      } catch (error) {
        warnOnce("plural-rule", "cannot read the plural rule " + this.source, error);
        this.rule = compilePlural("n != 1");
      }
    }
    return this.rule(count);
  }
}

// Gettext's Plural-Forms expression (C syntax: "n==0 ? 0 : n==1 ? 1 : ...",
// Arabic has six forms) read by a small parser into a function of n. Not
// eval or new Function: a strict Content-Security-Policy forbids both.
const BINARY = [["||"], ["&&"], ["==", "!="], ["<", ">", "<=", ">="], ["+", "-"], ["*", "/", "%"]];

export function compilePlural(source) {
  const tokens = String(source).match(/\d+|n|&&|\|\||[<>!=]=|[-+*\/%()?:<>!]|\S/g) || [];
  let at = 0;
  const peek = () => tokens[at];
  function take(wanted) {
    const token = tokens[at++];
    if (wanted !== undefined && token !== wanted) {
      throw new Error("bad plural rule");
    }
    return token;
  }
  function operand() {
    const token = take();
    if (token === "n") {
      return (n) => n;
    }
    if (/^\d+$/.test(token || "")) {
      const value = parseInt(token, 10);
      return () => value;
    }
    if (token === "!") {
      const inner = operand();
      return (n) => (inner(n) ? 0 : 1);
    }
    if (token === "(") {
      const grouped = conditional();
      take(")");
      return grouped;
    }
    throw new Error("bad plural rule");
  }
  function binary(level) {
    if (level === BINARY.length) {
      return operand();
    }
    let left = binary(level + 1);
    while (BINARY[level].indexOf(peek()) !== -1) {
      left = combine(take(), left, binary(level + 1));
    }
    return left;
  }
  function conditional() {
    const test = binary(0);
    if (peek() !== "?") {
      return test;
    }
    take("?");
    const yes = conditional();
    take(":");
    const no = conditional();
    return (n) => (test(n) ? yes(n) : no(n));
  }
  const rule = conditional();
  if (at !== tokens.length) {
    throw new Error("bad plural rule");
  }
  return (n) => {
    const index = rule(Math.abs(Math.floor(n)));
    return isFinite(index) ? index : 0;
  };
}

// C semantics on whole numbers: comparisons give 1 or 0, division truncates.
function combine(op, a, b) {
  return (n) => {
    const x = a(n);
    const y = b(n);
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
