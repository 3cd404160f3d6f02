// Tiergate's dashboard: the admin key. The page and its assets are open; its data is not when the gateway checks
// keys. When /dashboard/data answers 401 or 403 this asks for an admin key, keeps it in sessionStorage (gone when
// the tab closes, never in the URL) and sends it as a Bearer header. Loaded before dashboard.js, which calls it.
(function () {
  "use strict";

  const STORAGE = "tiergate.adminKey";

  function form() {
    let element = document.getElementById("auth-form");
    if (element) return element;
    element = document.createElement("form");
    element.id = "auth-form";
    element.className = "auth";
    element.hidden = true;
    const label = document.createElement("label");
    label.textContent = "Admin API key ";
    const input = document.createElement("input");
    input.type = "password";
    input.id = "auth-key";
    input.autocomplete = "off";
    input.placeholder = "tg-…";
    label.appendChild(input);
    const button = document.createElement("button");
    button.type = "submit";
    button.textContent = "Use key";
    const note = document.createElement("span");
    note.id = "auth-note";
    note.className = "muted";
    element.append(label, button, note);
    document.querySelector("header").after(element);
    return element;
  }

  window.tiergateAuth = {
    headers() {
      const key = sessionStorage.getItem(STORAGE);
      return key ? { authorization: "Bearer " + key } : {};
    },
    // The data was refused: forget the key that was refused and ask for one; `retry` runs once one is given.
    ask(body, retry) {
      sessionStorage.removeItem(STORAGE);
      const element = form();
      document.getElementById("auth-note").textContent = (body && body.error && body.error.message) || "";
      element.onsubmit = (event) => {
        event.preventDefault();
        const input = document.getElementById("auth-key");
        const key = input.value.trim();
        if (!key) return;
        sessionStorage.setItem(STORAGE, key);
        input.value = "";
        element.hidden = true;
        retry();
      };
      element.hidden = false;
    },
  };
})();
