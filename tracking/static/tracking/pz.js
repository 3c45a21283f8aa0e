/*
 * pz.js: collects a site's events into the personalization platform. ES5, no dependencies.
 *
 * The embed code defines a queue stub `pz(...)`; this script replays the queue, then takes over:
 *   pz('init', writeKey, {host, cookieDays, autoPage})
 *   pz('page', properties?)              -> page_view
 *   pz('track', eventType, properties?)
 *   pz('identify', userId, traits?)
 *   pz('reset')                          -> new anonymous id, forget the user id
 *   pz('flush')
 *   pz(function () { ... })              -> runs once the script has loaded
 *   pz.anonymousId()
 *
 * The anonymous id is a first-party cookie of the page's own site (pz_aid; localStorage when
 * cookies are blocked). Events are batched and posted as text/plain (a CORS simple request);
 * failed batches are retried with backoff, which is safe because the server dedupes by message_id.
 */
(function (w, d) {
  'use strict';
  if (w.pz && w.pz.loaded) return;

  var VERSION = '1';
  var BATCH_SIZE = 20;
  var FLUSH_MS = 1000;
  var MAX_BACKOFF_MS = 60000;
  var MAX_QUEUE = 1000;
  var IDLE_MS = 30000;
  var KEEPALIVE_MAX_BYTES = 60000;
  var AID = 'pz_aid';
  var UID = 'pz_uid';
  var ACTIVITY = ['mousemove', 'keydown', 'scroll', 'touchstart', 'click'];

  var nav = w.navigator;
  var loc = w.location;
  var config = { writeKey: '', host: scriptHost(), cookieDays: 395, autoPage: false };
  var queue = [];
  var timer = null;
  var inflight = false;
  var failures = 0;
  var hiding = false;
  var anonId = null;
  var userId = storage(UID);
  var listening = false;
  var historyPatched = false;
  var lastPath = loc.pathname + loc.search;
  // Engagement: ms counted so far, and when the visitor was last active on the visible page.
  var engagedMs = 0;
  var lastActive = d.visibilityState === 'hidden' ? null : now();

  function now() {
    return new Date().getTime();
  }

  function scriptHost() {
    var s = d.currentScript;
    var m = s && s.src && s.src.match(/^(https?:\/\/[^/]+)/);
    return m ? m[1] : '';
  }

  function uuid() {
    var c = w.crypto || w.msCrypto;
    if (c && typeof c.randomUUID === 'function') return c.randomUUID();
    var b = [];
    var i;
    if (c && c.getRandomValues) {
      b = c.getRandomValues(new Uint8Array(16));
    } else {
      for (i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var s = '';
    for (i = 0; i < 16; i++) {
      s += (b[i] + 0x100).toString(16).slice(1);
      if (i === 3 || i === 5 || i === 7 || i === 9) s += '-';
    }
    return s;
  }

  // localStorage get (no value), set, or remove (value null); storage may be blocked entirely.
  function storage(key, value) {
    try {
      var s = w.localStorage;
      if (value === undefined) return s.getItem(key);
      if (value === null) s.removeItem(key);
      else s.setItem(key, value);
    } catch (e) {}
    return null;
  }

  function cookie(name) {
    try {
      var m = d.cookie.match(new RegExp('(?:^|;\\s*)' + name + '=([^;]*)'));
      return m ? decodeURIComponent(m[1]) : null;
    } catch (e) {
      return null;
    }
  }

  // Host-only cookie of the page's own site: no Domain attribute, never the platform's host.
  function setCookie(name, value, days) {
    try {
      d.cookie =
        name + '=' + encodeURIComponent(value) + '; path=/; max-age=' + Math.round(days * 86400) +
        '; SameSite=Lax' + (loc.protocol === 'https:' ? '; Secure' : '');
    } catch (e) {}
    return cookie(name) === value;
  }

  function keepAnonymousId() {
    if (setCookie(AID, anonId, config.cookieDays)) storage(AID, null);
    else storage(AID, anonId);
  }

  function anonymousId() {
    if (!anonId) {
      anonId = cookie(AID) || storage(AID) || uuid();
      keepAnonymousId();
    }
    return anonId;
  }

  function timeZone() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone;
    } catch (e) {
      return undefined;
    }
  }

  function campaign() {
    var names = { utm_source: 'source', utm_medium: 'medium', utm_campaign: 'name', utm_term: 'term', utm_content: 'content' };
    var found = null;
    var pairs = loc.search.replace(/^\?/, '').split('&');
    for (var i = 0; i < pairs.length; i++) {
      var eq = pairs[i].indexOf('=');
      var key = eq < 0 ? pairs[i] : pairs[i].slice(0, eq);
      if (!names.hasOwnProperty(key) || eq < 0) continue;
      try {
        found = found || {};
        found[names[key]] = decodeURIComponent(pairs[i].slice(eq + 1).replace(/\+/g, ' '));
      } catch (e) {}
    }
    return found;
  }

  function context() {
    var ctx = {
      page: { url: loc.href, path: loc.pathname, referrer: d.referrer, title: d.title, search: loc.search },
      screen: { width: w.screen && w.screen.width, height: w.screen && w.screen.height },
      locale: nav.language,
      timezone: timeZone(),
      userAgent: nav.userAgent,
      library: { name: 'pz.js', version: VERSION }
    };
    var c = campaign();
    if (c) ctx.campaign = c;
    return ctx;
  }

  function enqueue(type, properties, traits) {
    var event = {
      type: type,
      anonymous_id: anonymousId(),
      message_id: uuid(),
      timestamp: new Date().toISOString(),
      properties: properties && typeof properties === 'object' ? properties : {},
      context: context()
    };
    if (userId) event.user_id = userId;
    if (traits) event.traits = traits;
    queue.push(event);
    if (queue.length > MAX_QUEUE) queue.splice(0, queue.length - MAX_QUEUE);
    if (queue.length >= BATCH_SIZE) flush();
    else schedule(FLUSH_MS);
  }

  function schedule(ms) {
    if (timer || !queue.length) return;
    timer = setTimeout(function () {
      timer = null;
      flush();
    }, ms);
  }

  function flush() {
    if (timer) {
      clearTimeout(timer);
      timer = null;
    }
    if (!config.writeKey) return;
    if (hiding) {
      // The page may be going away: hand everything to the browser now.
      while (queue.length) send(queue.splice(0, BATCH_SIZE));
    } else if (!inflight && queue.length) {
      send(queue.splice(0, BATCH_SIZE));
    }
  }

  function endpoint() {
    return config.host + '/api/v1/events?k=' + encodeURIComponent(config.writeKey);
  }

  // The one place a batch leaves the page (consent gating belongs here).
  function send(batch) {
    var body = JSON.stringify({ events: batch, sent_at: new Date().toISOString() });
    if (hiding && nav.sendBeacon) {
      try {
        if (nav.sendBeacon(endpoint(), new Blob([body], { type: 'text/plain;charset=UTF-8' }))) return;
      } catch (e) {}
    }
    inflight = true;
    post(endpoint(), body, function (status) {
      inflight = false;
      if (status === 0 || status === 429 || status >= 500) {
        // Not stored (or not known to be): keep the events, first in line, and try again later.
        queue = batch.concat(queue).slice(0, MAX_QUEUE);
        failures++;
        var backoff = Math.min(MAX_BACKOFF_MS, FLUSH_MS * Math.pow(2, failures));
        schedule(backoff / 2 + Math.random() * (backoff / 2));
        return;
      }
      // Stored, or refused for good (4xx): either way these are done.
      failures = 0;
      if (queue.length >= BATCH_SIZE) flush();
      else schedule(FLUSH_MS);
    });
  }

  // POST text/plain; calls done(status), with 0 when the request failed on the network.
  function post(url, body, done) {
    if (w.fetch) {
      var options = {
        method: 'POST',
        body: body,
        keepalive: body.length < KEEPALIVE_MAX_BYTES,
        headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
        credentials: 'omit',
        mode: 'cors'
      };
      try {
        w.fetch(url, options).then(
          function (r) { done(r.status); },
          function () { done(0); }
        );
      } catch (e) {
        done(0);
      }
      return;
    }
    var xhr = new XMLHttpRequest();
    xhr.open('POST', url, true);
    xhr.setRequestHeader('Content-Type', 'text/plain;charset=UTF-8');
    xhr.onreadystatechange = function () {
      if (xhr.readyState === 4) done(xhr.status);
    };
    xhr.send(body);
  }

  function engagementCount(t) {
    if (lastActive !== null) engagedMs += Math.min(t - lastActive, IDLE_MS);
  }

  function onActivity() {
    if (lastActive === null || d.visibilityState === 'hidden') return;
    var t = now();
    engagementCount(t);
    lastActive = t;
  }

  function engagementReport(url) {
    engagementCount(now());
    lastActive = d.visibilityState === 'hidden' ? null : now();
    var ms = Math.round(engagedMs);
    engagedMs = 0;
    if (ms > 0) enqueue('page_engagement', { engaged_ms: ms, url: url });
  }

  function onHide() {
    if (hiding) return;
    engagementReport(loc.href);
    lastActive = null;
    hiding = true;
    flush();
  }

  function onShow() {
    hiding = false;
    if (lastActive === null) lastActive = now();
    schedule(FLUSH_MS);
  }

  function on(target, type, fn) {
    if (target.addEventListener) target.addEventListener(type, fn, { capture: true, passive: true });
  }

  function listen() {
    if (listening) return;
    listening = true;
    for (var i = 0; i < ACTIVITY.length; i++) on(d, ACTIVITY[i], onActivity);
    on(d, 'visibilitychange', function () {
      if (d.visibilityState === 'hidden') onHide();
      else onShow();
    });
    on(w, 'pagehide', onHide);
    on(w, 'pageshow', function () {
      if (d.visibilityState !== 'hidden') onShow();
    });
    on(w, 'online', function () {
      failures = 0;
      flush();
    });
  }

  // SPA navigation: a page_view whenever the path or query changes (history API or back/forward).
  function watchHistory() {
    if (historyPatched || !w.history || !w.history.pushState) return;
    historyPatched = true;
    var previousUrl = loc.href;
    function changed() {
      setTimeout(function () {
        var path = loc.pathname + loc.search;
        if (!config.autoPage || path === lastPath) return;
        engagementReport(previousUrl);
        lastPath = path;
        previousUrl = loc.href;
        enqueue('page_view', {});
      }, 0);
    }
    function wrap(name) {
      var original = w.history[name];
      w.history[name] = function () {
        var result = original.apply(this, arguments);
        changed();
        return result;
      };
    }
    wrap('pushState');
    wrap('replaceState');
    on(w, 'popstate', changed);
  }

  var commands = {
    init: function (writeKey, options) {
      options = options || {};
      config.writeKey = String(writeKey || '');
      if (options.host) config.host = String(options.host).replace(/\/+$/, '');
      if (options.cookieDays > 0) config.cookieDays = options.cookieDays;
      config.autoPage = !!options.autoPage;
      anonId = null;
      anonymousId();
      listen();
      if (config.autoPage) watchHistory();
      schedule(FLUSH_MS);
    },
    page: function (properties) {
      lastPath = loc.pathname + loc.search;
      enqueue('page_view', properties);
    },
    track: function (eventType, properties) {
      if (typeof eventType === 'string' && eventType) enqueue(eventType, properties);
    },
    identify: function (id, traits) {
      if (id && typeof id === 'object') {
        traits = id;
        id = null;
      }
      if (id !== null && id !== undefined && id !== '') {
        userId = String(id);
        storage(UID, userId);
      }
      enqueue('identify', {}, traits && typeof traits === 'object' ? traits : {});
    },
    reset: function () {
      userId = null;
      storage(UID, null);
      anonId = uuid();
      keepAnonymousId();
    },
    flush: function () {
      flush();
    }
  };

  function pz(name) {
    try {
      if (typeof name === 'function') return name();
      if (commands.hasOwnProperty(name)) return commands[name].apply(null, Array.prototype.slice.call(arguments, 1));
    } catch (e) {
      if (w.console && w.console.error) w.console.error('pz:', e);
    }
  }
  pz.loaded = true;
  pz.version = VERSION;
  pz.anonymousId = anonymousId;

  var pending = (w.pz && w.pz.q) || [];
  w.pz = pz;
  for (var i = 0; i < pending.length; i++) pz.apply(null, pending[i]);
})(window, document);
