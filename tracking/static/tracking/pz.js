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
 *   pz('consent', {analytics: false, ...}) -> records the visitor's choices (e.g. a privacy settings page)
 *   pz('showConsent')                    -> opens the consent banner again
 *   pz(function () { ... })              -> runs once the script has loaded
 *   pz.anonymousId()
 *
 * The anonymous id is a first-party cookie of the page's own site (pz_aid; localStorage when
 * cookies are blocked). Events are batched and posted as text/plain (a CORS simple request);
 * failed batches are retried with backoff, which is safe because the server dedupes by message_id.
 *
 * Consent: init fetches the visitor's consent state. Until it is known (and, in an opt-in regime,
 * until the visitor has decided) nothing leaves the page: events wait in memory, and a banner asks.
 * Refusing analytics drops the held events; the server gates collection per purpose in any case. Global Privacy Control is passed on as context.gpc.
 */
(function (w, d) {
  'use strict';
  if (w.pz && w.pz.loaded) return;

  var VERSION = '1',
    BATCH_SIZE = 20,
    FLUSH_MS = 1000,
    MAX_BACKOFF_MS = 60000,
    MAX_QUEUE = 1000,
    IDLE_MS = 30000,
    KEEPALIVE_MAX_BYTES = 60000,
    AID = 'pz_aid',
    UID = 'pz_uid',
    TEXT = 'text/plain;charset=UTF-8',
    ACTIVITY = ['mousemove', 'keydown', 'scroll', 'touchstart', 'click'],
    nav = w.navigator,
    loc = w.location,
    config = { writeKey: '', host: scriptHost(), cookieDays: 395, autoPage: false },
    queue = [],
    timer = null,
    inflight = false,
    failures = 0,
    hiding = false,
    anonId = null,
    userId = storage(UID),
    listening = false,
    historyPatched = false,
    lastPath = loc.pathname + loc.search,
    // Engagement: ms counted so far, and when the visitor was last active on the visible page.
    engagedMs = 0,
    lastActive = hidden() ? null : now(),
    // Consent: the server's view of this visitor (null: not known yet), a decision not yet recorded,
    // the retry timer and count of the consent requests, and whether the banner was asked for.
    consent,
    want,
    retry,
    ask,
    tries = 0,
    gpc = nav.globalPrivacyControl === true;

  function hidden() {
    return d.visibilityState === 'hidden';
  }

  function now() {
    return new Date().getTime();
  }

  function scriptHost() {
    var s = d.currentScript,
      m = s && s.src && s.src.match(/^(https?:\/\/[^/]+)/);
    return m ? m[1] : '';
  }

  function uuid() {
    var c = w.crypto || w.msCrypto;
    if (c && typeof c.randomUUID === 'function') return c.randomUUID();
    var b = [],
      i;
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
    } catch (e) {}
  }

  // The utm_* parameters of the page's query, as the event's campaign (utm_campaign is its name).
  function campaign() {
    var re = /[?&]utm_(source|medium|campaign|term|content)=([^&]*)/g,
      found = null,
      m;
    while ((m = re.exec(loc.search))) {
      try {
        (found = found || {})[m[1] === 'campaign' ? 'name' : m[1]] = decodeURIComponent(m[2].replace(/\+/g, ' '));
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
    if (gpc) ctx.gpc = true;
    return ctx;
  }

  // Nothing may leave the page: consent not known yet, a decision being recorded, or still undecided (opt-in).
  function held() {
    return !consent || want || consent.needs_decision;
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
    if (!config.writeKey || held()) return;
    if (hiding) {
      // The page may be going away: hand everything to the browser now.
      while (queue.length) send(queue.splice(0, BATCH_SIZE));
    } else if (!inflight && queue.length) {
      send(queue.splice(0, BATCH_SIZE));
    }
  }

  // An API url of the platform, with the source's write key.
  function endpoint(path) {
    return config.host + '/api/v1/' + path + '?k=' + encodeURIComponent(config.writeKey);
  }

  // The one place a batch leaves the page (only through flush, which holds it back without consent).
  function send(batch) {
    var body = JSON.stringify({ events: batch, sent_at: new Date().toISOString() });
    if (hiding && nav.sendBeacon) {
      try {
        if (nav.sendBeacon(endpoint('events'), new Blob([body], { type: TEXT }))) return;
      } catch (e) {}
    }
    inflight = true;
    post(endpoint('events'), body, function (status) {
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
      try {
        w.fetch(url, {
          method: 'POST',
          body: body,
          keepalive: body.length < KEEPALIVE_MAX_BYTES,
          headers: { 'Content-Type': TEXT },
          credentials: 'omit',
          mode: 'cors'
        }).then(
          function (r) { done(r.status); },
          function () { done(0); }
        );
      } catch (e) {
        done(0);
      }
      return;
    }
    request('POST', url, body, TEXT, done);
  }

  // XMLHttpRequest (the consent calls, and events where fetch is missing); done(status, responseText),
  // with status 0 when the request failed on the network.
  function request(method, url, body, type, done, key) {
    var x = new XMLHttpRequest();
    x.open(method, url, true);
    if (type) x.setRequestHeader('Content-Type', type);
    if (key) x.setRequestHeader('X-Write-Key', key);
    x.onload = x.onerror = function () {
      done(x.status, x.responseText);
    };
    x.send(body);
  }

  // Learn the visitor's consent (GET), or record the pending decision (POST); then show the banner,
  // or let the held events go. Failures are retried with backoff, holding the events meanwhile.
  function sync() {
    clearTimeout(retry);
    var sent = want;
    if (!config.writeKey) return;
    request(
      sent ? 'POST' : 'GET',
      endpoint('consent') + (sent ? '' : '&anonymous_id=' + encodeURIComponent(anonymousId())),
      sent ? JSON.stringify({ anonymous_id: anonymousId(), purposes: sent, origin: 'banner' }) : null,
      sent && 'application/json',
      function (s, text) {
        var r;
        if (sent !== want) return; // a newer decision is on its way
        try {
          r = s > 199 && s < 300 && JSON.parse(text);
        } catch (e) {}
        if (!r || !r.purposes) {
          // A decision refused for good (4xx) is forgotten; anything else is asked again later.
          if (sent && (s / 100 | 0) === 4 && s !== 429) want = null;
          retry = setTimeout(sync, Math.min(MAX_BACKOFF_MS, FLUSH_MS * Math.pow(2, ++tries)));
          return;
        }
        tries = 0;
        want = null;
        consent = r;
        if (sent && sent.analytics === false) queue = [];
        if (consent.needs_decision || ask) show();
        flush();
      },
      sent && config.writeKey
    );
  }

  function decide(choices) {
    want = choices;
    hide();
    sync();
  }

  function hide() {
    var b = d.getElementById('pz-consent');
    if (b) b.parentNode.removeChild(b);
  }

  // Text as HTML (the source's texts and purposes are shown as text, never markup).
  function esc(text) {
    var e = d.createElement('i');
    e.textContent = text;
    return e.innerHTML;
  }

  // The banner: a non-blocking dialog at the bottom of the page.
  function show() {
    ask = false;
    if (!d.body) return setTimeout(show, 50);
    hide();
    var p = consent.purposes;
    var b = d.createElement('div');
    var rows = '';
    for (var i = 0; i < p.length; i++) {
      var q = p[i];
      rows +=
        '<label><input type=checkbox name=' + q.key.replace(/\W/g, '') +
        (q.required ? ' checked disabled' : q.granted ? ' checked' : '') + '> ' + esc(q.name + ': ' + q.description) +
        '</label><br>';
    }
    b.innerHTML =
      '<div id=pz-consent role=dialog aria-labelledby=pz-ct aria-describedby=pz-cd style="position:fixed;left:0;right:0;bottom:0;z-index:99999;padding:1em;background:#fff;border-top:1px solid">' +
      '<style>#pz-consent :focus{outline:2px solid}</style><b id=pz-ct>' + esc(consent.title) +
      '</b><p id=pz-cd>' + esc(consent.text) + '</p><button data-pz-consent=accept>Accept all</button> ' +
      '<button data-pz-consent=reject>Reject all</button> <button data-pz-consent=choose>Choose</button><div hidden>' + rows +
      '<button data-pz-consent=save>Save choices</button></div></div>';
    b = d.body.appendChild(b.firstChild);
    var list = b.lastChild;
    b.onclick = function (e) {
      var a = e.target.getAttribute('data-pz-consent');
      var c = {};
      var inputs = list.querySelectorAll('input:enabled');
      if (a === 'choose') {
        list.hidden = false;
        (inputs[0] || list.lastChild).focus();
      } else if (a) {
        // Global Privacy Control: "Accept all" still refuses marketing.
        for (i = 0; i < inputs.length; i++) {
          var k = inputs[i].name;
          c[k] = a === 'save' ? inputs[i].checked : a === 'accept' && !(gpc && k === 'marketing');
        }
        decide(c);
      }
    };
    b.children[3].focus();
  }

  function engagementCount(t) {
    if (lastActive !== null) engagedMs += Math.min(t - lastActive, IDLE_MS);
  }

  function onActivity() {
    if (lastActive === null || hidden()) return;
    var t = now();
    engagementCount(t);
    lastActive = t;
  }

  function engagementReport(url) {
    engagementCount(now());
    lastActive = hidden() ? null : now();
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
      if (hidden()) onHide();
      else onShow();
    });
    on(w, 'pagehide', onHide);
    on(w, 'pageshow', function () {
      if (!hidden()) onShow();
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
      consent = null;
      sync();
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
      // Consent belongs to the visitor: a new one decides anew.
      consent = null;
      sync();
    },
    flush: function () {
      flush();
    },
    consent: function (choices) {
      if (choices) decide(choices);
    },
    showConsent: function () {
      ask = true;
      if (consent) show();
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
