// Stand-in for analytics.tiktok.com/i18n/pixel/events.js: same endpoint, same payload shape.
(function () {
  var q = window.ttq || [];
  var sid = (document.cookie.match(/(?:^|; )_ttp=([^;]*)/) || [])[1];
  if (!sid) { sid = Math.random().toString(36).slice(2); document.cookie = '_ttp=' + sid + '; path=/; max-age=33696000'; }
  function send(event, props) {
    var body = JSON.stringify({ event: event, properties: props || {}, context: { page: { url: location.href, referrer: document.referrer }, user: { ttp: sid } } });
    navigator.sendBeacon('https://analytics.tiktok.com/api/v2/pixel', body);
  }
  var api = { page: function () { send('Pageview'); }, track: function (e, p) { send(e, p); } };
  for (var i = 0; i < q.length; i++) { var c = q[i]; if (api[c[0]]) api[c[0]].apply(null, c.slice(1)); }
  window.ttq = api;
  try { localStorage.setItem('tt_sessionId', sid); } catch (e) {}
})();
