'use strict';
// Injected into every frame's main world before page scripts run. It observes short timers so
// the scanner can wait for tags a tag manager injects from a timer. It is built so a page cannot
// see it: the only name it adds is a global *lexical* binding with a random name (not a property
// of window, and no script can enumerate lexical bindings); setTimeout and requestIdleCallback
// become Proxies of the natives (same name, length, no prototype, not constructible), and
// Function.prototype.toString answers for them exactly as for the natives. It reports nothing by
// itself: the scanner reads it with Runtime.evaluate (no Runtime.enable, no binding).
const __PIXELWATCH_HOOK__ = (() => {
  const BOUND = __TIMER_BOUND__;   // longest timer awaited (ms)
  const WINDOW = __TIMER_WINDOW__; // timers scheduled this long after arm() are awaited
  const MAX_GEN = 2;               // a timer set inside a timer set inside a timer is not
  // Intrinsics captured before page code runs: a page that patches Map, WeakMap, Array or Math
  // methods later must not see our calls.
  const R = Reflect.apply;
  const mapSet = Map.prototype.set;
  const mapDelete = Map.prototype.delete;
  const mapForEach = Map.prototype.forEach;
  const weakGet = WeakMap.prototype.get;
  const weakSet = WeakMap.prototype.set;
  const slice = Array.prototype.slice;
  const round = Math.round;
  const max = Math.max;
  const perf = performance;
  const perfNow = Performance.prototype.now;
  const now = () => R(perfNow, perf, []);
  const nativeToString = Function.prototype.toString;
  const masks = new WeakMap();
  const fakes = new WeakMap(); // our own functions -> the native-looking source they report
  const pending = new Map(); // key -> due (ms, performance time)
  let nextKey = 1;
  let ran = 0;          // tracked callbacks that have run
  let windowStart = -1; // -1: not armed yet, everything scheduled during load counts
  let gen = 0;          // generation of the tracked callback now running (0 outside)
  let running = null;   // the tracked callback now running
  const eligible = (cb, delay) =>
    typeof cb === 'function' && delay <= BOUND && gen < MAX_GEN && cb !== running &&
    (windowStart < 0 || now() - windowStart <= WINDOW);
  // Errors thrown by a native through our handler carry our frames on top: drop them.
  const clean = (e) => {
    try {
      if (e && typeof e.stack === 'string') {
        const lines = e.stack.split('\n');
        let i = 1;
        while (i < lines.length && /<anonymous>:\d+:\d+\)?$/.test(lines[i])) i++;
        if (i > 1) e.stack = [lines[0]].concat(lines.slice(i)).join('\n');
      }
    } catch (_) { /* ignore */ }
    return e;
  };
  const track = (cb, due) => {
    const key = nextKey++;
    const myGen = gen + 1;
    R(mapSet, pending, [key, due]);
    const wrapped = function () {
      const prev = [gen, running];
      gen = myGen;
      running = cb;
      try {
        return R(cb, this, arguments);
      } finally {
        gen = prev[0];
        running = prev[1];
        R(mapDelete, pending, [key]);
        ran++;
      }
    };
    return { key, wrapped };
  };
  const disguise = (target, native, handler) => {
    const p = new Proxy(target, handler);
    R(weakSet, masks, [p, native]);
    return p;
  };
  try {
    const toStringProxy = disguise(nativeToString, nativeToString, {
      apply(target, self, args) {
        const fake = R(weakGet, fakes, [self]);
        if (typeof fake === 'string') return fake;
        try {
          return R(target, R(weakGet, masks, [self]) || self, args);
        } catch (e) {
          throw clean(e);
        }
      },
    });
    Function.prototype.toString = toStringProxy;
    // A scheduling native wrapped so that an eligible callback is tracked until it has run;
    // `dueIn(args)` says when it is due, or Infinity when it is not one we wait for.
    const tracked = (native, dueIn) => disguise(native, native, {
      apply(target, self, args) {
        const delay = dueIn(args);
        if (!eligible(args[0], delay)) {
          try { return R(target, self, args); } catch (e) { throw clean(e); }
        }
        const { key, wrapped } = track(args[0], now() + delay);
        const copy = R(slice, args, []);
        copy[0] = wrapped;
        try {
          return R(target, self, copy);
        } catch (e) {
          R(mapDelete, pending, [key]);
          throw clean(e);
        }
      },
    });
    // Only plain numbers: converting anything else would run page code twice.
    window.setTimeout = tracked(window.setTimeout, (args) => {
      const d = args[1];
      return typeof d === 'number' ? max(0, d || 0) : d === undefined ? 0 : Infinity;
    });
    // Idle callbacks' options are not read (a getter would see a second read): they run within
    // a second on a settling page, or stop holding it.
    if (typeof window.requestIdleCallback === 'function') {
      window.requestIdleCallback = tracked(window.requestIdleCallback, () => 1000);
    }
    // A new document of a headless window can read outerWidth/outerHeight as 0 for its first
    // few milliseconds (the window's size arrives after the parser starts); a real window never
    // does. Only a 0 is replaced, by the window's size.
    const geometry = [['outerWidth', __WINDOW_WIDTH__], ['outerHeight', __WINDOW_HEIGHT__]];
    for (let i = 0; i < geometry.length; i++) {
      const name = geometry[i][0];
      const fallback = geometry[i][1];
      const d = Object.getOwnPropertyDescriptor(window, name);
      if (!d || typeof d.get !== 'function') continue;
      const get = disguise(d.get, d.get, {
        apply(target, self, args) {
          let v;
          try { v = R(target, self, args); } catch (e) { throw clean(e); }
          return v === 0 && self === window ? fallback : v;
        },
      });
      Object.defineProperty(window, name, {
        get, set: d.set, enumerable: d.enumerable, configurable: d.configurable,
      });
    }
    // --consent gpc: the Global Privacy Control signal, as browsers that support it expose it.
    if (__GPC__) {
      const getter = Object.getOwnPropertyDescriptor(
        { get globalPrivacyControl() { return true; } }, 'globalPrivacyControl').get;
      R(weakSet, fakes, [getter, 'function get globalPrivacyControl() { [native code] }']);
      Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {
        get: getter, enumerable: true, configurable: true,
      });
    }
  } catch (_) { /* a frame that forbids it keeps its natives */ }
  return Object.freeze({
    // Milliseconds until each pending short timer is due (negative: overdue), and how many
    // tracked timers have run.
    pending() {
      const t = now();
      const due = [];
      let i = 0;
      R(mapForEach, pending, [(d) => { due[i++] = round(d - t); }]);
      return { due, ran };
    },
    // Starts a new window for awaited timers (after load, a click or a submit).
    arm() {
      windowStart = now();
      return true;
    },
  });
})();
