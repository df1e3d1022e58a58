// redline app: keyboard shortcuts and the revision diff. Plain JS, no build step, no inline script
// (the Content-Security-Policy allows only this file). Text is put on the page with textContent only.
"use strict";

(function () {
  const body = document.body;
  const task = body.dataset.task;
  const form = document.getElementById("task-form");
  if (!form) return;

  const action = document.getElementById("action");
  function send(what) {
    action.value = what;
    HTMLFormElement.prototype.submit.call(form);  // form.submit may be shadowed by a field
  }
  document.querySelectorAll("button[data-action]").forEach(function (button) {
    button.addEventListener("click", function (event) {
      event.preventDefault();
      send(button.dataset.action);
    });
  });

  // time on this item (the server measures the recorded time; this is only shown)
  const timer = document.getElementById("timer");
  const started = Date.now();
  setInterval(function () {
    const s = Math.floor((Date.now() - started) / 1000);
    timer.textContent = Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }, 1000);

  function typing(target) {
    return target && (target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && target.type !== "radio"));
  }

  // ranking: a focused answer card takes a number key as its rank, then focus moves on
  const cards = Array.from(document.querySelectorAll(".rankable"));
  function focusCard(i) {
    if (!cards.length) return;
    const n = (i + cards.length) % cards.length;
    cards[n].focus();
  }
  function currentCard() {
    return cards.indexOf(document.activeElement.closest ? document.activeElement.closest(".rankable") : null);
  }
  if (task === "rank" && cards.length) {
    focusCard(0);
    cards.forEach(function (card) {
      card.addEventListener("click", function () { card.focus(); });
    });
  }

  document.addEventListener("keydown", function (event) {
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      event.preventDefault();
      send("submit");
      return;
    }
    if (event.key === "Escape" && typing(event.target)) {
      event.target.blur();
      return;
    }
    if (typing(event.target) || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "s" || event.key === "S") {
      event.preventDefault();
      send("skip");
      return;
    }
    if (event.key === "f" || event.key === "F") {
      event.preventDefault();
      document.getElementById("reason").focus();
      return;
    }
    if (task === "rank") {
      const i = currentCard();
      if (event.key === "ArrowDown" || event.key === "j") { event.preventDefault(); focusCard(i + 1); return; }
      if (event.key === "ArrowUp" || event.key === "k") { event.preventDefault(); focusCard(i - 1); return; }
      const digit = parseInt(event.key, 10);
      if (digit >= 1 && digit <= cards.length && i >= 0) {
        event.preventDefault();
        document.getElementById("rank_" + cards[i].dataset.index).value = String(digit);  // the card's place in the file
        cards[i].classList.add("ranked");
        focusCard(i + 1);
      }
      return;
    }
    if (task === "pair") {
      const pick = { "1": "a", "a": "a", "A": "a", "2": "b", "b": "b", "B": "b" }[event.key];
      if (pick) {
        event.preventDefault();
        const radio = form.querySelector('input[name="choice"][value="' + pick + '"]');
        radio.checked = true;
        radio.focus();
      }
    }
  });

  // critique: a word diff of the revision against the answer, redrawn as the revision changes
  const revision = document.getElementById("revision");
  const raw = document.getElementById("answer-raw");
  const diff = document.getElementById("diff");
  if (revision && raw && diff) {
    const draw = function () { drawDiff(diff, raw.textContent, revision.value); };
    revision.addEventListener("input", draw);
    draw();
  }

  function drawDiff(target, before, after) {
    const a = before.split(/(\s+)/), b = after.split(/(\s+)/);
    // longest common subsequence over words and the spaces between them
    const n = a.length, m = b.length;
    if (n * m > 4000000) { target.textContent = "(too long to compare here)"; return; }
    const table = new Array(n + 1);
    for (let i = 0; i <= n; i++) table[i] = new Uint32Array(m + 1);
    for (let i = n - 1; i >= 0; i--)
      for (let j = m - 1; j >= 0; j--)
        table[i][j] = a[i] === b[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
    target.textContent = "";
    let i = 0, j = 0, changes = 0;
    function put(tag, text) {
      const node = document.createElement(tag);
      node.textContent = text;
      target.appendChild(node);
    }
    while (i < n || j < m) {
      if (i < n && j < m && a[i] === b[j]) { put("span", a[i]); i++; j++; }
      else if (j < m && (i === n || table[i][j + 1] >= table[i + 1][j])) { put("ins", b[j]); j++; changes++; }
      else { put("del", a[i]); i++; changes++; }
    }
    if (!changes) { target.textContent = "(no changes yet)"; }
  }
})();

// a critic's draft: "start from blank" empties the critique, puts the answer back as the revision
(function () {
  const blank = document.getElementById("blank");
  if (!blank) return;
  blank.addEventListener("click", function () {
    document.getElementById("critique").value = "";
    const revision = document.getElementById("revision");
    revision.value = document.getElementById("answer-raw").textContent;
    revision.dispatchEvent(new Event("input"));
    document.getElementById("draft_used").value = "0";
    document.getElementById("draft-note").textContent = "Starting from blank (the draft is not used).";
    document.getElementById("critique").focus();
  });
})();
