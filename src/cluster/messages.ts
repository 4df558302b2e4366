/**
 * What the primary and its workers say to each other over the cluster IPC channel (`workers: N`,
 * docs/performance.md "1 vs N workers"). Nothing here is per request except token acquisition
 * for authService/oauth2 credentials and the batched audit text; raw-TCP rules ask about DNS
 * answers once per connection, and a connection held for an `unlisted: ask` approval asks once.
 */
import type { Config } from '../config/types.js';
import type { SandboxSpec } from '../policy/sandboxes.js';
import type { Credential, TokenRequest } from '../creds/credential.js';
import type { Grant } from '../approvals/grants.js';
import type { Via } from '../approvals/broker.js';
import type { QuarantineEntry } from '../control/quarantine.js';

/** Primary -> worker. */
export type ToWorker =
  /** First message: the config and the registered sandboxes; the worker answers `ready`. */
  | {
      readonly t: 'init';
      readonly config: Config;
      readonly dynamic: readonly SandboxSpec[];
      readonly ticketKeys: Buffer;
      readonly grants: readonly Grant[];
      readonly quarantined: readonly QuarantineEntry[];
    }
  /** The quarantined sandboxes changed (a tripwire anywhere, a release): the whole set; close the new ones' connections. */
  | { readonly t: 'quarantine'; readonly held: readonly QuarantineEntry[] }
  /** New TLS session ticket keys (rotation): every leaf context takes them. */
  | { readonly t: 'ticketKeys'; readonly keys: Buffer }
  /** A SIGHUP reload was accepted: build the new runtime from this. */
  | { readonly t: 'config'; readonly config: Config; readonly dynamic: readonly SandboxSpec[]; readonly grants: readonly Grant[] }
  /**
   * What `sandbox`/`policy` approvals added, whole (src/approvals/grants.ts): sent before the
   * reply that releases the connections waiting on the approval, so they and every later
   * connection in this worker see it.
   */
  | { readonly t: 'grants'; readonly grants: readonly Grant[] }
  /** The control API changed the registered sandboxes; `closes`: reset these sandboxes' connections. */
  | { readonly t: 'sandboxes'; readonly dynamic: readonly SandboxSpec[]; readonly closes: readonly string[] }
  /** One accepted transparent connection; the socket travels as the message's handle. */
  | { readonly t: 'conn' }
  | { readonly t: 'reply'; readonly n: number; readonly ok: true; readonly value: unknown }
  | {
      readonly t: 'reply';
      readonly n: number;
      readonly ok: false;
      readonly error: { readonly message: string; readonly retryable: boolean; readonly short: string };
    }
  /** SIGTERM reached the primary: hand over pending audit lines and exit. */
  | { readonly t: 'stop' };

/** Questions a worker asks the primary, the keeper of the state they are about. */
export type Question =
  | { readonly kind: 'answered'; readonly sandbox: string; readonly host: string; readonly ip: string }
  | { readonly kind: 'acquire'; readonly id: string; readonly req: TokenRequest }
  | { readonly kind: 'reject'; readonly id: string; readonly req: TokenRequest; readonly used: Credential }
  /**
   * `unlisted: ask`: the worker holds the connection, the primary holds the pending decision
   * (beside the control API); the reply is the decision's outcome (src/approvals/broker.ts).
   */
  | {
      readonly kind: 'approve';
      readonly sandbox: string;
      readonly user?: string;
      readonly policy: string;
      readonly host: string;
      readonly port: number;
      readonly via: Via;
      readonly timeoutMs: number;
    };

/** Worker -> primary. */
export type FromWorker =
  /**
   * The worker listens now; the primary sends `init`. (Not cluster's 'online': that comes before an
   * ES module's top level has run, and a message emitted with no listener yet is lost.)
   */
  | { readonly t: 'hello' }
  | { readonly t: 'ready' }
  /** Whole audit lines, each ending in "\n", written by the primary as they are. */
  | { readonly t: 'audit'; readonly text: string }
  | { readonly t: 'ask'; readonly n: number; readonly q: Question }
  /** A tripwire in this worker quarantined a sandbox: the primary records it and tells every worker. */
  | { readonly t: 'tripped'; readonly entry: QuarantineEntry };

export function isFromWorker(m: unknown): m is FromWorker {
  return typeof m === 'object' && m !== null && typeof (m as { t?: unknown }).t === 'string';
}
