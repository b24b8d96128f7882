// KI-Hub: small helpers, no framework. Loaded with `defer` from this server only (CSP: script-src 'self').
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // <select class="autosubmit">: submit its form on change (the button next to it works without JS)
  for (const el of document.querySelectorAll("select.autosubmit")) {
    el.addEventListener("change", () => el.form.submit());
  }
  // <button data-confirm="...">: ask before a destructive action
  for (const el of document.querySelectorAll("[data-confirm]")) {
    el.addEventListener("click", (ev) => { if (!window.confirm(el.dataset.confirm)) ev.preventDefault(); });
  }
});
