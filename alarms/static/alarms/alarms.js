/*
 * Live alarms: toasts fed by ONE Server-Sent Events stream per browser.
 *
 * The entry point. {% alarms_toasts %} loads it as a module script and
 * configures it with the data-* attributes of that <script> tag. The client is
 * in client/*.js (ES modules, see docs/client.md), loaded with a dynamic
 * import: this file must also parse as a classic script, for pages that load
 * it with a hand-written <script src defer> tag.
 */
(function () {
  "use strict";

  var classic = document.currentScript; // null in a module script
  if (classic) {
    // A classic script from another origin resolves a dynamic import against nothing
    // (its base URL is about:blank): load this file again as a module, whose
    // base URL is its own.
    var module = document.createElement("script");
    module.type = "module";
    module.src = classic.src;
    module.nonce = classic.nonce;
    document.head.appendChild(module);
    return;
  }
  var script = document.querySelector("script[data-stream-url]");
  if (!script || window.alarms) {
    return; // no configuration, or already running on this page
  }
  import("./client/client.js").then(
    function (client) {
      client.start(script.dataset);
    },
    function (error) {
      console.warn("alarms: the client's modules did not load", error);
    }
  );
})();
