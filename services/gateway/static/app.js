// Demo client for the native protocol (/v1/ws): JSON control, binary PCM frames, gapless Web Audio playback.
// No framework, no build step. Works in Chrome, Firefox and Safari (AudioContext made on a user gesture).
"use strict";

(function () {
  const FORMAT = "pcm_24000";
  const LEAD_S = 0.04;          // head start for the first chunk, absorbs network jitter
  const IDLE_SEND_MS = 350;     // "stream as I type": send a half-typed word after this pause
  const SENTENCE_END = /[.!?\u2026]["'\u2019\u201d)\]]*\s/g;

  const $ = (id) => document.getElementById(id);
  const el = {
    text: $("text"), voice: $("voice"), live: $("live"), play: $("play"), stop: $("stop"),
    conn: $("conn"), session: $("session"), ttfa: $("ttfa"), ttfaServer: $("ttfa-server"),
    chunks: $("chunks"), chunkSize: $("chunk-size"), seconds: $("seconds"), rate: $("rate"),
    state: $("state"), voiceInfo: $("voice-info"), log: $("log"), scope: $("scope"), level: $("level"),
    auth: $("auth"), apikey: $("apikey"), authGo: $("auth-go"), hint: $("hint"),
  };

  const st = {
    ws: null, ready: null, sessionId: null, token: null, apiKey: null, chain: Promise.resolve(),
    audio: null, gain: null, analyser: null, playhead: 0, sources: new Set(),
    contexts: new Map(), order: [], shown: null, nextId: 0,
    typing: null, lastValue: "", savedText: null, idleTimer: 0,
  };

  // ---------------------------------------------------------------- audio

  function ensureAudio() {
    // Must first run inside a user gesture (Safari, and Chrome's autoplay policy) to be allowed to play.
    if (!st.audio) {
      const AC = window.AudioContext || window.webkitAudioContext;
      if (!AC) { logLine("this browser has no Web Audio API", true); return null; }
      let ac;
      try { ac = new AC({ latencyHint: "interactive" }); } catch (e) { ac = new AC(); }
      st.gain = ac.createGain();
      st.analyser = ac.createAnalyser();
      st.analyser.fftSize = 2048;
      st.gain.connect(st.analyser);
      st.analyser.connect(ac.destination);
      // iOS unlocks output only once something was started inside the gesture: one silent sample.
      const silent = ac.createBuffer(1, 1, 22050);
      const src = ac.createBufferSource();
      src.buffer = silent;
      src.connect(ac.destination);
      src.start(0);
      st.audio = ac;
    }
    if (st.audio.state === "suspended" && st.audio.resume) st.audio.resume();
    return st.audio;
  }

  function schedule(rec, pcm) {
    const ac = st.audio || ensureAudio();
    if (!ac || pcm.length === 0) return;
    const buf = ac.createBuffer(1, pcm.length, rec.rate);
    const ch = buf.getChannelData(0);   // copyToChannel is missing in older Safari
    for (let i = 0; i < pcm.length; i++) ch[i] = pcm[i] / 32768;
    const src = ac.createBufferSource();
    src.buffer = buf;
    src.connect(st.gain);
    const now = ac.currentTime;
    if (st.playhead < now + 0.005) {   // first chunk, or playback ran dry: a gap the listener hears
      if (st.playhead > 0 && rec.scheduled > 0) { rec.gaps += 1; rec.gapMs += (now - st.playhead) * 1000; }
      st.playhead = now + LEAD_S;
    }
    rec.scheduled += 1;
    src.start(st.playhead);
    st.playhead += buf.duration;
    st.sources.add(src);
    src.onended = () => st.sources.delete(src);
  }

  function silence() {
    for (const src of st.sources) {
      try { src.stop(0); } catch (e) { /* already stopped */ }
    }
    st.sources.clear();
    st.playhead = 0;
  }

  // ---------------------------------------------------------------- connection

  function wsUrl() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const q = st.token ? "?token=" + encodeURIComponent(st.token) : "";
    return proto + "//" + location.host + "/v1/ws" + q;
  }

  function setConn(state, text) {
    el.conn.dataset.state = state;
    el.conn.textContent = text;
  }

  function connect() {
    if (st.ws && st.ws.readyState <= 1 && st.ready) return st.ready;
    st.ready = openSocket().catch(async (err) => {
      // A browser cannot see an HTTP status on a failed upgrade: ask the endpoint over plain HTTP.
      if (await needsToken()) {
        await obtainToken();
        return openSocket();
      }
      throw err;
    });
    st.ready.catch((err) => { setConn("error", "offline"); logLine(err.message, true); st.ready = null; });
    return st.ready;
  }

  function openSocket() {
    setConn("connecting", "connecting…");
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(wsUrl());
      ws.binaryType = "arraybuffer";
      let opened = false;
      st.ws = ws;
      ws.onmessage = (ev) => {
        if (typeof ev.data !== "string") { onFrame(ev.data); return; }
        let msg;
        try { msg = JSON.parse(ev.data); } catch (e) { return; }
        if (msg.type === "session" && !opened) {
          opened = true;
          st.sessionId = msg.session_id;
          el.session.textContent = "session " + msg.session_id;
          setConn("connected", "connected");
          resolve(ws);
          return;
        }
        onEvent(msg);
      };
      ws.onclose = (ev) => {
        if (st.ws === ws) { st.ws = null; st.ready = null; }
        failLive("connection closed" + (ev.reason ? ": " + ev.reason : ""));
        if (!opened) { reject(new Error("could not open the WebSocket (code " + ev.code + ")")); return; }
        setConn("closed", "disconnected");
        el.session.textContent = "no session (reconnects on next use)";
        logLine("connection closed (" + ev.code + (ev.reason ? " " + ev.reason : "") + ")", ev.code !== 1000);
      };
    });
  }

  async function needsToken() {
    try {
      const r = await fetch("/v1/ws" + (st.token ? "?token=" + encodeURIComponent(st.token) : ""),
        { cache: "no-store" });
      return r.status === 401;
    } catch (e) { return false; }
  }

  async function obtainToken() {
    const headers = { "Content-Type": "application/json" };
    if (st.apiKey) headers.Authorization = "Bearer " + st.apiKey;
    const r = await fetch("/v1/tokens", { method: "POST", headers: headers, body: "{}" });
    if (r.status === 401 || r.status === 403) {
      el.auth.hidden = false;
      el.apikey.focus();
      throw new Error("this server needs an API key to issue a token");
    }
    if (!r.ok) throw new Error("POST /v1/tokens answered " + r.status);
    const body = await r.json();
    st.token = body.token || body.access_token || null;
    if (!st.token) throw new Error("POST /v1/tokens gave no token");
    el.auth.hidden = true;
    logLine("obtained a session token");
  }

  async function authFetch(path) {
    const opts = () => ({ headers: st.token ? { Authorization: "Bearer " + st.token } : {}, cache: "no-store" });
    let r = await fetch(path, opts());
    if (r.status === 401) {
      await obtainToken();
      r = await fetch(path, opts());
    }
    return r;
  }

  function send(msg) {
    // One chain keeps messages in order across (re)connects.
    st.chain = st.chain.then(() => connect()).then((ws) => ws.send(JSON.stringify(msg))).catch((err) => {
      logLine("could not send " + msg.type + ": " + err.message, true);
      const rec = st.contexts.get(msg.context_id);
      if (rec && !rec.done) finishContext(rec, "error");
    });
    return st.chain;
  }

  // ---------------------------------------------------------------- contexts

  function newContext(text, end) {
    const id = "c" + (++st.nextId) + "-" + Math.random().toString(36).slice(2, 8);
    const now = performance.now();
    const rec = {
      id: id, rate: 24000, sentAt: now, textAt: text ? now : null, t0: end ? now : null,
      firstAudio: null, chunks: 0, samples: 0, bytes: 0, done: false, cancelled: false, pending: [],
      serverTtfa: null, provider: "", outcome: "", typed: false, scheduled: 0, gaps: 0, gapMs: 0,
    };
    st.contexts.set(id, rec);
    st.order.push(id);
    st.shown = rec;
    send({ type: "start", context_id: id, voice: el.voice.value || undefined, format: FORMAT,
      text: text, end: end, flush: false });
    render();
    return rec;
  }

  function bargeIn() {
    // Cancel every live context and drop what is queued, so nothing stale plays after this.
    clearTimeout(st.idleTimer);
    st.typing = null;
    for (const rec of st.contexts.values()) {
      if (!rec.done && !rec.cancelled) {
        rec.cancelled = true;
        rec.pending = [];
        send({ type: "cancel", context_id: rec.id });
      }
    }
    st.order = [];
    silence();
  }

  function finishContext(rec, outcome) {
    rec.done = true;
    rec.outcome = rec.outcome || outcome;
    if (st.order[0] === rec.id) advance();
    // Forget old contexts, keep the shown one.
    for (const [id, r] of st.contexts) if (r.done && r !== st.shown && st.order.indexOf(id) < 0) st.contexts.delete(id);
    render();
  }

  function advance() {
    // Contexts play one after another: the next one's buffered audio goes out once the head is final.
    while (st.order.length) {
      const head = st.contexts.get(st.order[0]);
      if (head && !head.done) {
        for (const pcm of head.pending) schedule(head, pcm);
        head.pending = [];
        return;
      }
      st.order.shift();
      const next = st.contexts.get(st.order[0]);
      if (next) {
        for (const pcm of next.pending) schedule(next, pcm);
        next.pending = [];
      }
    }
  }

  function failLive(reason) {
    for (const rec of st.contexts.values()) if (!rec.done) { rec.outcome = "error"; finishContext(rec, "error"); }
    if (st.typing) st.typing = null;
    void reason;
  }

  function onFrame(buf) {
    const dv = new DataView(buf);
    if (buf.byteLength < 7 || dv.getUint8(0) !== 1) return;
    const len = dv.getUint8(1);
    const seq = dv.getUint32(2);
    const id = String.fromCharCode.apply(null, new Uint8Array(buf, 6, len));
    const off = 6 + len + ((6 + len) & 1);
    const rec = st.contexts.get(id);
    if (!rec || rec.cancelled) return;   // stale audio of an interrupted context: never play it
    const pcm = new Int16Array(buf, off, (buf.byteLength - off) >> 1);
    if (rec.firstAudio === null) {
      rec.firstAudio = performance.now();
      logLine("first audio " + fmtMs(ttfaOf(rec)) + " (" + id + ", seq " + seq + ")");
    }
    rec.chunks += 1;
    rec.samples += pcm.length;
    rec.bytes += buf.byteLength - off;
    if (st.order[0] === id) schedule(rec, pcm);
    else rec.pending.push(pcm);
    render();
  }

  function onEvent(msg) {
    const rec = msg.context_id ? st.contexts.get(msg.context_id) : null;
    if (msg.type === "started") {
      if (rec) { rec.rate = msg.sample_rate || rec.rate; rec.provider = msg.provider || ""; }
      logLine("started " + msg.context_id + " · " + msg.voice + " (" + msg.provider + ") · " + msg.format);
    } else if (msg.type === "final") {
      if (!rec) return;
      rec.serverTtfa = msg.ttfa_ms;
      logLine("final " + msg.context_id + " · " + msg.reason + " · " + msg.chunks + " chunks" +
        (msg.ttfa_ms != null ? " · server ttfa " + fmtMs(msg.ttfa_ms) : ""));
      finishContext(rec, msg.reason);
    } else if (msg.type === "error") {
      logLine("error " + (msg.code || "") + ": " + (msg.message || ""), true);
      if (rec) finishContext(rec, "error");
      else if (!msg.context_id) el.state.dataset.state = "error";
    }
  }

  // ---------------------------------------------------------------- stream as I type

  function typingContext() {
    if (!st.typing) {
      st.typing = { rec: newContext("", false), buffer: "" };
      st.typing.rec.typed = true;   // the server counts from the first keystroke, this page from the sentence end
    }
    return st.typing;
  }

  function onInput() {
    if (!el.live.checked) { st.lastValue = el.text.value; return; }
    const value = el.text.value;
    // Only appended text can be spoken; an edit in the middle cannot be unsaid, so it is let go.
    const added = value.indexOf(st.lastValue) === 0 ? value.slice(st.lastValue.length) : "";
    st.lastValue = value;
    if (!added) return;
    const t = typingContext();
    t.buffer += added.replace(/\n/g, " ");
    pushTyped(false);
    clearTimeout(st.idleTimer);
    st.idleTimer = setTimeout(() => pushTyped(true), IDLE_SEND_MS);
  }

  function pushTyped(all) {
    const t = st.typing;
    if (!t || !t.buffer) return;
    let cut = 0, flush = false;
    SENTENCE_END.lastIndex = 0;
    let m;
    while ((m = SENTENCE_END.exec(t.buffer)) !== null) { cut = m.index + m[0].length; flush = true; }
    if (!flush) cut = all ? t.buffer.length : t.buffer.search(/\s\S*$/) + 1;   // whole words only
    if (cut <= 0) return;
    const piece = t.buffer.slice(0, cut);
    t.buffer = t.buffer.slice(cut);
    const rec = t.rec;
    if (rec.textAt === null) rec.textAt = performance.now();
    if (flush && rec.t0 === null) rec.t0 = performance.now();
    send({ type: "text", context_id: rec.id, text: piece, flush: flush });
  }

  function endTyping() {
    clearTimeout(st.idleTimer);
    const t = st.typing;
    if (!t) return;
    pushTyped(true);
    if (t.rec.t0 === null) t.rec.t0 = performance.now();
    send({ type: "end", context_id: t.rec.id });
    st.typing = null;
  }

  // ---------------------------------------------------------------- figures

  function ttfaOf(rec) {
    if (rec.firstAudio === null) return null;
    // While typing, count from the first sentence end (or end); audio released before that, from the first text.
    let t0 = rec.t0 !== null && rec.t0 <= rec.firstAudio ? rec.t0 : (rec.textAt !== null ? rec.textAt : rec.sentAt);
    if (t0 > rec.firstAudio) t0 = rec.sentAt;
    return rec.firstAudio - t0;
  }

  function fmtMs(ms) { return ms === null || ms === undefined ? "—" : Math.round(ms) + " ms"; }

  function render() {
    const rec = st.shown;
    if (!rec) return;
    el.ttfa.textContent = fmtMs(ttfaOf(rec));
    const from = rec.typed ? "from sentence end" : "measured in this page";
    el.ttfaServer.textContent = rec.serverTtfa != null && !rec.typed ? "server " + fmtMs(rec.serverTtfa) : from;
    el.chunks.textContent = String(rec.chunks);
    el.chunkSize.textContent = rec.chunks ? Math.round(rec.bytes / rec.chunks / 1024 * 10) / 10 + " KB avg" : "\u00a0";
    el.seconds.textContent = (rec.samples / rec.rate).toFixed(2);
    el.rate.textContent = (rec.rate / 1000) + " kHz · " + (rec.gaps ? rec.gaps + (rec.gaps > 1 ? " gaps, " : " gap, ") + Math.round(rec.gapMs) + " ms" : "gapless");
    const parts = [rec.provider ? el.voice.value + " · " + rec.provider : "", rec.outcome].filter(Boolean);
    el.voiceInfo.textContent = parts.length ? parts.join(" · ") : "\u00a0";
  }

  function liveState() {
    for (const rec of st.contexts.values()) if (!rec.done && !rec.cancelled) return "streaming";
    if (st.audio && st.playhead > st.audio.currentTime) return "playing";
    if (st.shown && st.shown.outcome === "error") return "error";
    return "idle";
  }

  // ---------------------------------------------------------------- scope and level meter

  function draw() {
    const c = el.scope;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(c.clientWidth * dpr)), h = Math.max(1, Math.round(c.clientHeight * dpr));
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    const g = c.getContext("2d");
    g.clearRect(0, 0, w, h);
    let rms = 0;
    const mid = h / 2;
    g.lineWidth = 2 * dpr;
    g.strokeStyle = getComputedStyle(document.documentElement).getPropertyValue("--scope-line").trim() || "#8b93ff";
    g.beginPath();
    if (st.analyser) {
      const data = new Uint8Array(st.analyser.fftSize);
      st.analyser.getByteTimeDomainData(data);   // the byte variant exists in every engine
      const usable = w - 26 * dpr;
      for (let i = 0; i < data.length; i++) {
        const v = (data[i] - 128) / 128;
        rms += v * v;
        const x = (i / (data.length - 1)) * usable, y = mid - v * mid * 0.9;
        if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
      }
      rms = Math.sqrt(rms / data.length);
      st.peakLevel = Math.max(st.peakLevel || 0, rms);
    } else {
      g.moveTo(0, mid); g.lineTo(w - 26 * dpr, mid);
    }
    g.stroke();
    const db = rms > 0 ? 20 * Math.log10(rms) : -100;   // -60 dBFS .. 0 dBFS fills the meter
    el.level.style.height = Math.max(0, Math.min(100, Math.round((db + 60) / 60 * 100))) + "%";
    const s = liveState();
    if (el.state.dataset.state !== s) { el.state.dataset.state = s; el.state.textContent = s; }
    el.stop.disabled = s === "idle" || s === "error";
    requestAnimationFrame(draw);
  }

  // ---------------------------------------------------------------- misc

  function logLine(text, isError) {
    const li = document.createElement("li");
    if (isError) li.className = "error";
    const time = document.createElement("time");
    time.textContent = new Date().toLocaleTimeString();
    li.appendChild(time);
    li.appendChild(document.createTextNode(text));
    el.log.insertBefore(li, el.log.firstChild);
    while (el.log.childNodes.length > 60) el.log.removeChild(el.log.lastChild);
  }

  async function loadVoices() {
    try {
      const r = await authFetch("/v1/catalog");
      if (!r.ok) throw new Error("catalog answered " + r.status);
      const body = await r.json();
      el.voice.innerHTML = "";
      for (const v of body.voices || []) {
        const o = document.createElement("option");
        o.value = v.voice_id;
        o.textContent = (v.name || v.voice_id) + (v.provider ? "  ·  " + v.provider : "");
        el.voice.appendChild(o);
      }
      if (!el.voice.options.length) {
        el.voice.innerHTML = "<option value=''>no voices yet (is a worker running?)</option>";
        setTimeout(loadVoices, 2000);
        return;
      }
      el.voice.disabled = false;
    } catch (e) {
      logLine("could not load voices: " + e.message, true);
      setTimeout(loadVoices, 3000);
    }
  }

  function speak() {
    ensureAudio();
    bargeIn();
    const text = el.text.value.trim();
    if (!text) { el.text.focus(); return; }
    newContext(text, true);
  }

  function stop() {
    ensureAudio();
    bargeIn();
    logLine("stopped");
    render();
  }

  el.play.addEventListener("click", speak);
  el.stop.addEventListener("click", stop);
  el.text.addEventListener("keydown", (ev) => {
    ensureAudio();   // a keystroke is a user gesture: Safari lets the AudioContext start here
    if (ev.key === "Enter" && !ev.shiftKey && el.live.checked) { ev.preventDefault(); endTyping(); }
    else if (ev.key === "Enter" && (ev.metaKey || ev.ctrlKey)) { ev.preventDefault(); speak(); }
  });
  el.text.addEventListener("input", onInput);
  el.text.addEventListener("blur", () => { if (el.live.checked) endTyping(); });
  el.live.addEventListener("change", () => {
    ensureAudio();
    if (el.live.checked) {
      st.savedText = el.text.value;
      el.text.value = "";
      el.text.placeholder = "Start typing: each sentence is spoken as you finish it, Enter ends the utterance.";
      el.text.focus();
    } else {
      endTyping();
      if (!el.text.value && st.savedText) el.text.value = st.savedText;
      el.text.placeholder = "";
    }
    st.lastValue = el.text.value;
  });
  el.authGo.addEventListener("click", () => {
    st.apiKey = el.apikey.value.trim() || null;
    st.token = null;
    obtainToken().then(() => { loadVoices(); return connect(); }).catch((e) => logLine(e.message, true));
  });

  st.lastValue = el.text.value;
  requestAnimationFrame(draw);
  loadVoices().then(() => connect()).catch(() => {});

  // Read-only figures for tests and the curious.
  window.ttsDemo = {
    figures: () => {
      const r = st.shown;
      return r ? { contextId: r.id, chunks: r.chunks, seconds: r.samples / r.rate, ttfaMs: ttfaOf(r),
        serverTtfaMs: r.serverTtfa, outcome: r.outcome, state: liveState(),
        audioState: st.audio ? st.audio.state : "none", scheduled: st.sources.size,
        level: st.peakLevel || 0, gaps: r.gaps, gapMs: r.gapMs } : null;
    },
  };
})();
