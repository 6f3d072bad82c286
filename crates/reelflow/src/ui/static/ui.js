// reelflow operators' page: refreshes the grid fragment every few seconds while a run is
// queued or running and the tab is visible (304 when nothing changed), and opens panels in
// place. Everything works without this script too; it only saves reloads.
(function () {
  'use strict';
  var POLL_MS = 3000;

  function grid() { return document.getElementById('grid'); }
  function panel() { return document.getElementById('panel'); }
  function active() {
    var f = document.getElementById('grid-frag');
    return !!f && f.getAttribute('data-active') === '1';
  }
  function withFragment(url) {
    return url + (url.indexOf('?') < 0 ? '?' : '&') + 'fragment=1';
  }

  function refreshPanel() {
    var p = panel();
    var src = p && p.getAttribute('data-src');
    // Never throw away what the operator is choosing in the panel's forms.
    if (!src || p.getAttribute('data-dirty') === '1') { return; }
    fetch(withFragment(src), { credentials: 'same-origin' }).then(function (r) {
      if (r.ok) { return r.text().then(function (t) { p.innerHTML = t; }); }
    }).catch(function () {});
  }

  var busy = false;
  function poll(force) {
    var g = grid();
    if (!g || busy || document.visibilityState !== 'visible') { return; }
    if (!force && !active()) { return; }
    busy = true;
    var headers = {};
    var tag = g.getAttribute('data-etag');
    if (tag) { headers['If-None-Match'] = tag; }
    fetch(g.getAttribute('data-src'), { credentials: 'same-origin', headers: headers }).then(function (r) {
      if (r.status === 200) {
        var t = r.headers.get('ETag');
        return r.text().then(function (body) {
          g.innerHTML = body;
          if (t) { g.setAttribute('data-etag', t); }
          refreshPanel();
        });
      }
    }).catch(function () {}).then(function () { busy = false; });
  }

  function openPanel(href) {
    var p = panel();
    if (!p) { window.location.href = href; return; }
    fetch(withFragment(href), { credentials: 'same-origin' }).then(function (r) {
      return r.text().then(function (t) {
        p.innerHTML = t;
        p.setAttribute('data-src', href);
        p.removeAttribute('data-dirty');
        if (window.history && window.history.pushState) { window.history.pushState({ panel: href }, '', href); }
      });
    }).catch(function () { window.location.href = href; });
  }

  document.addEventListener('click', function (e) {
    var a = e.target && e.target.closest ? e.target.closest('a[data-panel]') : null;
    if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) { return; }
    e.preventDefault();
    openPanel(a.getAttribute('href'));
  });
  document.addEventListener('change', function (e) {
    var p = panel();
    if (p && e.target && p.contains(e.target)) { p.setAttribute('data-dirty', '1'); }
  });
  window.addEventListener('popstate', function () { window.location.reload(); });
  document.addEventListener('visibilitychange', function () {
    if (document.visibilityState === 'visible') { poll(true); }
  });
  window.setInterval(function () { poll(false); }, POLL_MS);
})();
