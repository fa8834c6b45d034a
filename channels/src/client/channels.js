// channels.js: the JavaScript client of the channels server (an ES module, no build step).
// Protocol: channels/src/docs/protocol.md. Types: channels.d.ts.
//
//   import { Socket } from "/static/channels.js";
//   const socket = new Socket("/ws/chat/lobby/", { presence: true });
//   socket.on("message", (data) => show(data));          // every JSON message but the protocol's own
//   socket.on("notrecovered", () => reloadFromServer());  // messages were lost: reload state
//   socket.on("presence", (state) => showOnline(state));  // {key: [{id, meta}]}, merged
//   socket.send({ message: "hi" });

const HEARTBEAT = '{"heartbeat":true}';
// The shape of a position (`<epoch>-<offset>`): only such an `id` is remembered for resuming.
const POSITION = /^[0-9a-f]{16}-[0-9]{1,20}$/;

const DEFAULTS = {
  backoffInitial: 500, // ms before the first reconnect
  backoffMax: 10000, // ms, the longest wait
  backoffFactor: 2,
  jitter: 0.5, // each wait is shortened by up to this fraction, at random
  heartbeatInterval: 25000, // ms between heartbeats while the socket is open
  heartbeatTimeout: 10000, // ms without any message after a heartbeat: the socket is dead
  presence: false, // ask for the presence state and diffs (?presence=1)
  since: null, // resume after this id on the first connection too
  shouldReconnect: (event) => !(event.code === 1000 || (event.code >= 4000 && event.code < 5000)),
  WebSocket: globalThis.WebSocket,
};

/** Merges a presence diff into a state ({key: [{id, meta}]}), in place; returns the state. */
export function applyPresenceDiff(state, diff) {
  for (const [key, metas] of Object.entries(diff.leaves || {})) {
    const gone = new Set(metas.map((m) => m.id));
    const kept = (state[key] || []).filter((m) => !gone.has(m.id));
    if (kept.length) state[key] = kept;
    else delete state[key];
  }
  for (const [key, metas] of Object.entries(diff.joins || {})) {
    const current = state[key] || (state[key] = []);
    for (const meta of metas) {
      if (!current.some((m) => m.id === meta.id)) current.push(meta);
    }
  }
  return state;
}

/** The wait before reconnect attempt `attempt` (0-based), with jitter. */
export function backoff(attempt, options = DEFAULTS, random = Math.random) {
  const o = { ...DEFAULTS, ...options };
  const full = Math.min(o.backoffMax, o.backoffInitial * Math.pow(o.backoffFactor, attempt));
  return Math.round(full * (1 - o.jitter * random()));
}

/** A WebSocket that reconnects, resumes from the last id it saw, and merges presence. */
export class Socket {
  constructor(url, options = {}) {
    this.options = { ...DEFAULTS, ...options };
    this.url = new URL(url, globalThis.location ? globalThis.location.href : undefined);
    if (this.url.protocol === "http:") this.url.protocol = "ws:";
    if (this.url.protocol === "https:") this.url.protocol = "wss:";
    this.lastId = this.options.since;
    this.presence = {};
    this.status = "connecting";
    this.attempt = 0;
    this.openedAt = 0;
    this.listeners = {};
    this.closedByUser = false;
    this.ws = null;
    this.timers = {};
    this._connect();
  }

  /** Listens to "message", "open", "close", "status", "notrecovered" or "presence". */
  on(event, listener) {
    (this.listeners[event] || (this.listeners[event] = [])).push(listener);
    return this;
  }

  /** Sends `data` as JSON; false when the socket is not open (nothing is queued). */
  send(data) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(data));
    return true;
  }

  /** Closes for good (no reconnect). */
  close(code = 1000) {
    this.closedByUser = true;
    this._clearTimers();
    if (this.ws) this.ws.close(code);
    this._setStatus("closed");
  }

  _emit(event, ...args) {
    for (const listener of this.listeners[event] || []) {
      try {
        listener(...args);
      } catch (err) {
        setTimeout(() => { throw err; });
      }
    }
  }

  _setStatus(status) {
    if (this.status !== status) {
      this.status = status;
      this._emit("status", status);
    }
  }

  _clearTimers() {
    for (const timer of Object.values(this.timers)) clearTimeout(timer);
    this.timers = {};
  }

  _connectUrl() {
    const url = new URL(this.url.href);
    if (this.lastId) url.searchParams.set("since", this.lastId);
    if (this.options.presence) url.searchParams.set("presence", "1");
    return url.href;
  }

  _connect() {
    this._setStatus(this.attempt === 0 ? "connecting" : "reconnecting");
    let ws;
    try {
      ws = new this.options.WebSocket(this._connectUrl());
    } catch (err) {
      // (e.g. a SecurityError): counts as a failed attempt, and the next one is scheduled.
      this._lost({ code: 1006, reason: String(err), wasClean: false });
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.openedAt = Date.now();
      this._setStatus("open");
      this._emit("open");
      this._scheduleHeartbeat();
    };
    ws.onmessage = (event) => this._receive(event.data);
    ws.onclose = (event) => {
      if (this.ws === ws) this._lost(event);
    };
  }

  /** The socket is gone (closed, or dead after a missed heartbeat): reconnect unless told not to. */
  _lost(event) {
    this.ws = null;
    this._clearTimers();
    this._emit("close", event);
    if (this.closedByUser || !this.options.shouldReconnect(event)) {
      this._setStatus("closed");
      return;
    }
    this._setStatus("reconnecting");
    // A connection that lasted resets the backoff; one that opens and drops at once does not.
    if (this.openedAt && Date.now() - this.openedAt >= this.options.backoffMax) this.attempt = 0;
    this.openedAt = 0;
    const wait = backoff(this.attempt++, this.options);
    this.timers.reconnect = setTimeout(() => this._connect(), wait);
  }

  _scheduleHeartbeat() {
    clearTimeout(this.timers.heartbeat);
    this.timers.heartbeat = setTimeout(() => {
      if (!this.ws || this.ws.readyState !== 1) return;
      this.ws.send(HEARTBEAT);
      // Any message in time proves the socket alive; otherwise drop it and reconnect.
      this.timers.dead = setTimeout(() => {
        const dead = this.ws;
        if (!dead) return;
        dead.onclose = null;
        dead.close();
        this._lost({ code: 1006, reason: "heartbeat timeout", wasClean: false });
      }, this.options.heartbeatTimeout);
    }, this.options.heartbeatInterval);
  }

  _receive(text) {
    clearTimeout(this.timers.dead);
    this._scheduleHeartbeat();
    if (text === HEARTBEAT) return;
    let data;
    try {
      data = JSON.parse(text);
    } catch {
      this._emit("message", text);
      return;
    }
    if (data && typeof data === "object" && !Array.isArray(data)) {
      if (data.recovered === false && Object.keys(data).length === 1) {
        this._emit("notrecovered");
        return;
      }
      if ("presence_state" in data) {
        this.presence = data.presence_state || {};
        this._emit("presence", this.presence);
        return;
      }
      if ("presence_diff" in data) {
        applyPresenceDiff(this.presence, data.presence_diff || {});
        this._emit("presence", this.presence);
        return;
      }
      if (typeof data.id === "string" && POSITION.test(data.id)) this.lastId = data.id;
    }
    this._emit("message", data);
  }
}
