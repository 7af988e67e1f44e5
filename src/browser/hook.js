// Injected into every frame before page scripts run. Reports, through the CDP binding, the
// *names* of cookies set by script (never their values) and the URLs the page reaches with
// history.pushState / replaceState. Sites cannot block it: it runs before their code.
(() => {
  const bind = globalThis.__pixelwatch;
  if (typeof bind !== 'function') return;
  const send = (o) => { try { bind(JSON.stringify(o)); } catch (e) { /* ignore */ } };
  try {
    const desc = Object.getOwnPropertyDescriptor(Document.prototype, 'cookie');
    if (desc && desc.set) {
      Object.defineProperty(Document.prototype, 'cookie', {
        configurable: true,
        enumerable: desc.enumerable,
        get() { return desc.get.call(this); },
        set(v) {
          try {
            const s = String(v);
            const eq = s.indexOf('=');
            const name = (eq >= 0 ? s.slice(0, eq) : s).trim();
            const m = /;\s*domain\s*=\s*([^;]+)/i.exec(s);
            send({ t: 'cookie', name, domain: m ? m[1].trim() : '', host: location.hostname });
          } catch (e) { /* ignore */ }
          return desc.set.call(this, v);
        },
      });
    }
  } catch (e) { /* ignore */ }
  try {
    if (globalThis.cookieStore && typeof cookieStore.set === 'function') {
      const orig = cookieStore.set.bind(cookieStore);
      cookieStore.set = function (a, b) {
        try {
          const name = typeof a === 'string' ? a : (a && a.name) || '';
          const domain = (a && typeof a === 'object' && a.domain) || '';
          send({ t: 'cookie', name, domain, host: location.hostname });
        } catch (e) { /* ignore */ }
        return orig(a, b);
      };
    }
  } catch (e) { /* ignore */ }
  try {
    if (window === window.top) {
      for (const k of ['pushState', 'replaceState']) {
        const orig = history[k];
        history[k] = function (state, title, url) {
          const r = orig.apply(this, arguments);
          try {
            if (url !== undefined && url !== null) {
              send({ t: 'route', url: new URL(String(url), location.href).href });
            }
          } catch (e) { /* ignore */ }
          return r;
        };
      }
    }
  } catch (e) { /* ignore */ }
})();
