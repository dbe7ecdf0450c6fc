// Quarry web pages: the copy button of a new token, and the confirmation before revoking one.
// Loaded from this origin only (the pages' Content-Security-Policy allows no inline script).
"use strict";

for (const button of document.querySelectorAll("button[data-copy]")) {
  const target = document.getElementById(button.dataset.copy);
  const status = document.getElementById(button.dataset.status);
  button.hidden = false;
  button.addEventListener("click", async () => {
    const text = target.textContent.trim();
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
      if (status) status.textContent = "The token is on your clipboard.";
    } catch (error) {
      // No clipboard access (e.g. plain http on another host): select it for Ctrl+C instead.
      const range = document.createRange();
      range.selectNodeContents(target);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      if (status) status.textContent = "Press Ctrl+C (or ⌘C) to copy the selected token.";
    }
  });
}

for (const form of document.querySelectorAll("form[data-confirm]")) {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) {
      event.preventDefault();
      return;
    }
    form.elements.confirmed.value = "yes";
  });
}
