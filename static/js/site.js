/* The demo site's only script: submit the language form when a language is picked. */
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var forms = document.querySelectorAll("form[data-autosubmit]");
    Array.prototype.forEach.call(forms, function (form) {
      var select = form.querySelector("select");
      var button = form.querySelector("button");
      if (!select || !button) {
        return;
      }
      button.classList.add("visually-hidden");
      select.addEventListener("change", function () {
        form.requestSubmit ? form.requestSubmit() : form.submit();
      });
    });
  });
})();
