// Types of channels.js, the JavaScript client of the channels server.

/** One tracked connection of a presence key. */
export interface PresenceMeta {
  /** Opaque, one per tracked connection. */
  id: string;
  meta: unknown;
}

/** Who is in the group: key (e.g. user name) → its connections. */
export type PresenceState = Record<string, PresenceMeta[]>;

export interface PresenceDiff {
  joins?: PresenceState;
  leaves?: PresenceState;
}

export type Status = "connecting" | "open" | "reconnecting" | "closed";

export interface SocketOptions {
  /** Milliseconds before the first reconnect (default 500). */
  backoffInitial?: number;
  /** The longest wait between reconnects, in milliseconds (default 10000). */
  backoffMax?: number;
  /** Growth of the wait per failed attempt (default 2). */
  backoffFactor?: number;
  /** Each wait is shortened by up to this fraction, at random (default 0.5). */
  jitter?: number;
  /** Milliseconds between heartbeats while open (default 25000). */
  heartbeatInterval?: number;
  /** Milliseconds without a message after a heartbeat before the socket counts as dead (default 10000). */
  heartbeatTimeout?: number;
  /** Ask for the presence state and diffs (`?presence=1`). */
  presence?: boolean;
  /** Resume after this id on the first connection too. */
  since?: string | null;
  /** Whether to reconnect after this close (default: not after 1000 or 4000–4999). */
  shouldReconnect?: (event: { code: number; reason?: string; wasClean?: boolean }) => boolean;
  /** The WebSocket class (default: the global one). */
  WebSocket?: typeof WebSocket;
}

export declare class Socket {
  constructor(url: string | URL, options?: SocketOptions);
  /** The id of the last message received with one: where a reconnect resumes. */
  lastId: string | null;
  /** The merged presence state (with `presence: true`). */
  presence: PresenceState;
  status: Status;
  on(event: "message", listener: (data: any) => void): this;
  on(event: "open", listener: () => void): this;
  on(event: "close", listener: (event: { code: number; reason?: string }) => void): this;
  on(event: "status", listener: (status: Status) => void): this;
  /** Messages were lost (history gone, or the position was not accepted): reload your state. */
  on(event: "notrecovered", listener: () => void): this;
  on(event: "presence", listener: (state: PresenceState) => void): this;
  /** Sends `data` as JSON; false when not open (nothing is queued). */
  send(data: unknown): boolean;
  /** Closes for good. */
  close(code?: number): void;
}

/** Merges a diff into a state in place, and returns it. */
export declare function applyPresenceDiff(state: PresenceState, diff: PresenceDiff): PresenceState;

/** The wait before reconnect attempt `attempt` (0-based), with jitter. */
export declare function backoff(attempt: number, options?: SocketOptions, random?: () => number): number;
