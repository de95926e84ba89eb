// Runops web app: the live parts of the server-rendered pages. Loaded from this origin
// only (the Content-Security-Policy allows no inline script). Text from the server is
// inserted with textContent, never parsed as HTML — except the task rows, which are
// HTML the server rendered and escaped.
(function () {
  "use strict";

  // The live log keeps only its tail in the page, so a huge log never slows the tab;
  // the full log is the download link. (The server renders the last 64 KiB too.)
  var LOG_KEEP_CHARS = 64 * 1024;
  // New log text is shown at most this often: each showing lays the tail out again, and
  // a 100 MB log arriving at full speed would otherwise keep the page busy doing so.
  var LOG_SHOW_MS = 100;
  // How often an open task list asks for its rows again.
  var LIST_REFRESH_MS = 3000;
  // After a failed request, wait this long before trying again.
  var RETRY_MS = 3000;

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  // What arrived since the last showing, shown together every LOG_SHOW_MS; never more
  // than the tail the page keeps (what waits is compacted to that tail too).
  function logView(pre) {
    var pending = [];
    var pendingChars = 0;
    var shownChars = pre.textContent.length;
    var scheduled = false;

    function noteTrimmed() {
      var note = document.getElementById("log-trimmed");
      if (note) { note.hidden = false; }
    }

    function flush() {
      scheduled = false;
      var text = pending.join("");
      pending = [];
      pendingChars = 0;
      if (!text) { return; }
      var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      if (text.length >= LOG_KEEP_CHARS) {
        pre.textContent = text.slice(text.length - LOG_KEEP_CHARS);
        shownChars = LOG_KEEP_CHARS;
        noteTrimmed();
      } else {
        pre.append(text);
        shownChars += text.length;
        if (shownChars > 2 * LOG_KEEP_CHARS) {
          var all = pre.textContent;
          pre.textContent = all.slice(all.length - LOG_KEEP_CHARS);
          shownChars = LOG_KEEP_CHARS;
          noteTrimmed();
        }
      }
      if (atBottom) { pre.scrollTop = pre.scrollHeight; }
    }

    return {
      add: function (text) {
        if (!text) { return; }
        pending.push(text);
        pendingChars += text.length;
        if (pendingChars > 2 * LOG_KEEP_CHARS) {
          var all = pending.join("");
          pending = [all.slice(all.length - LOG_KEEP_CHARS)];
          pendingChars = LOG_KEEP_CHARS;
        }
        if (!scheduled) {
          scheduled = true;
          setTimeout(flush, LOG_SHOW_MS);
        }
      },
      flush: flush
    };
  }

  // Streams /tasks/ID/log?offset=N and shows what arrives, until the task ends.
  async function followLog(pre) {
    var base = pre.dataset.follow;
    var offset = Number(new URL(base, location.href).searchParams.get("offset") || 0);
    var path = new URL(base, location.href).pathname;
    var view = logView(pre);
    for (;;) {
      try {
        var res = await fetch(path + "?offset=" + offset, { credentials: "same-origin" });
        if (!res.ok || res.redirected || !res.body) { await sleep(RETRY_MS); continue; }
        var reader = res.body.getReader();
        var decoder = new TextDecoder();
        for (;;) {
          var part = await reader.read();
          if (part.done) { break; }
          offset += part.value.byteLength;
          pre.dataset.received = String(offset);
          view.add(decoder.decode(part.value, { stream: true }));
        }
        view.add(decoder.decode());
        view.flush();
        pre.dataset.ended = "true";
        return;
      } catch (e) {
        await sleep(RETRY_MS);
      }
    }
  }

  // Long-polls /tasks/ID/watch?status=S and reloads the page when the status changes.
  async function watchStatus(el) {
    var url = el.dataset.watch;
    var was = new URL(url, location.href).searchParams.get("status");
    for (;;) {
      try {
        var res = await fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } });
        if (!res.ok || res.redirected) { await sleep(RETRY_MS); continue; }
        var body = await res.json();
        if (body.status !== was) { location.reload(); return; }
      } catch (e) {
        await sleep(RETRY_MS);
      }
    }
  }

  // Refreshes the rows of a list while the page is visible.
  function refreshRows(tbody) {
    var last = null;
    setInterval(async function () {
      if (document.hidden) { return; }
      try {
        var res = await fetch(tbody.dataset.refresh, { credentials: "same-origin" });
        if (!res.ok || res.redirected) { return; }
        var html = await res.text();
        if (html !== last) { last = html; tbody.innerHTML = html; }
      } catch (e) { /* the next tick tries again */ }
    }, LIST_REFRESH_MS);
  }

  // Tab inserts a tab in the script editor; Escape then Tab leaves the field (so the
  // keyboard is never trapped).
  function tabsIn(area) {
    var escaped = false;
    area.addEventListener("keydown", function (ev) {
      if (ev.key === "Escape") { escaped = true; return; }
      if (ev.key !== "Tab" || ev.shiftKey || ev.ctrlKey || ev.altKey || ev.metaKey || escaped) {
        escaped = false;
        return;
      }
      ev.preventDefault();
      area.setRangeText("\t", area.selectionStart, area.selectionEnd, "end");
    });
  }

  function copyButton(btn) {
    btn.addEventListener("click", async function () {
      try {
        await navigator.clipboard.writeText(btn.dataset.copy);
        btn.textContent = "Copied";
      } catch (e) {
        btn.textContent = "Select the text and copy it";
      }
    });
  }

  function start() {
    document.querySelectorAll("pre[data-follow]").forEach(followLog);
    document.querySelectorAll("[data-watch]").forEach(watchStatus);
    document.querySelectorAll("tbody[data-refresh]").forEach(refreshRows);
    document.querySelectorAll("textarea[data-tabs]").forEach(tabsIn);
    document.querySelectorAll("button[data-copy]").forEach(copyButton);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
