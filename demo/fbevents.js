// Stand-in for connect.facebook.net/en_US/fbevents.js: fires image beacons to facebook.com/tr.
(function () {
  var q = (window.fbq && window.fbq.q) || [];
  var pixel = '';
  if (!/(?:^|; )_fbp=/.test(document.cookie)) { document.cookie = '_fbp=fb.1.' + Date.now() + '.' + Math.floor(Math.random() * 1e9) + '; path=/; max-age=7776000'; }
  function fire(ev, params) {
    var u = 'https://www.facebook.com/tr?id=' + pixel + '&ev=' + encodeURIComponent(ev) + '&dl=' + encodeURIComponent(location.href) + '&rl=' + encodeURIComponent(document.referrer);
    for (var k in (params || {})) u += '&cd[' + k + ']=' + encodeURIComponent(params[k]);
    new Image().src = u;
  }
  var fbq = function (cmd, a, b) { if (cmd === 'init') pixel = a; else if (cmd === 'track' || cmd === 'trackCustom') fire(a, b); };
  for (var i = 0; i < q.length; i++) fbq.apply(null, q[i]);
  window.fbq = fbq;
})();
