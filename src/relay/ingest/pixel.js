/* pixelwatch-relay first-party conversion script. Talks only to the relay that served it.
 * Captures ?ttclid= and ?fbclid= from the landing URL into first-party cookies (the Meta one in
 * Meta's fbc format, fb.1.<ms>.<fbclid>), records consent through the relay, and sends
 * conversion events with navigator.sendBeacon. The page URL is sent without its query string or
 * fragment; the relay replaces it with a generic category URL anyway, and drops any click id that
 * does not have its platform's format. */
(function (w, d) {
  var s = d.currentScript;
  var base = s && s.src ? new URL(s.src).origin : '';
  var CLICK = '_pw_ttclid', FBC = '_pw_fbc', CONSENT = '_pw_consent';
  function get(n) {
    var m = d.cookie.match('(?:^|; )' + n + '=([^;]*)');
    return m ? decodeURIComponent(m[1]) : undefined;
  }
  function set(n, v, days) {
    d.cookie = n + '=' + encodeURIComponent(v) + '; Max-Age=' + days * 86400 + '; Path=/; SameSite=Lax' +
      (location.protocol === 'https:' ? '; Secure' : '');
  }
  try {
    var q = new URL(location.href).searchParams;
    var t = q.get('ttclid'), f = q.get('fbclid');
    if (t && /^E[._]C[._]P[._][A-Za-z0-9_+\/=-]{16,500}$/.test(t)) set(CLICK, t, 30);
    if (f && /^[A-Za-z0-9_-]{16,500}$/.test(f)) set(FBC, 'fb.1.' + Date.now() + '.' + f, 90);
  } catch (e) { /* old browser: no click id */ }
  function newId() {
    return w.crypto && crypto.randomUUID ? crypto.randomUUID()
      : Date.now().toString(36) + '-' + Math.random().toString(36).slice(2);
  }
  w.pixelwatch = {
    track: function (event, opts) {
      opts = opts || {};
      var body = {
        event: event,
        event_id: opts.event_id || newId(),
        event_time: Math.floor(Date.now() / 1000),
        url: location.origin + location.pathname,
        ttclid: get(CLICK),
        fbc: get(FBC),
        consent_token: get(CONSENT)
      };
      if (opts.value != null) { body.value = opts.value; body.currency = opts.currency; }
      var data = JSON.stringify(body);
      /* text/plain keeps the beacon a CORS "simple request" (no preflight). */
      if (navigator.sendBeacon && navigator.sendBeacon(base + '/v1/events', new Blob([data], { type: 'text/plain' }))) {
        return true;
      }
      fetch(base + '/v1/events', { method: 'POST', body: data, keepalive: true, headers: { 'Content-Type': 'text/plain' } });
      return true;
    },
    consent: function (granted, policyVersion) {
      return fetch(base + '/v1/consent', {
        method: 'POST',
        headers: { 'Content-Type': 'text/plain' },
        body: JSON.stringify({
          consent_token: get(CONSENT), granted: !!granted, purposes: ['advertising'],
          source: 'banner', policy_version: policyVersion
        })
      }).then(function (r) { return r.json(); }).then(function (j) {
        if (j.consent_token) set(CONSENT, j.consent_token, 395);
        return j;
      });
    }
  };
})(window, document);
