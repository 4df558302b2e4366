/**
 * The TLS alert sandgate sends when it refuses a ClientHello before any handshake: a refusal an
 * agent can read ("tlsv1 alert access denied") instead of a reset it takes for a network fault
 * and retries.
 *
 * Before any handshake key exists an alert travels as a plaintext record (RFC 8446 §5.1, §6):
 * content type alert(21), legacy_record_version 0x0303, length 2, then AlertLevel fatal(2) and
 * the AlertDescription. TLS 1.2 clients read the same record (RFC 5246 §7.2), so one form serves
 * every version a ClientHello may offer.
 */
import type net from 'node:net';

/** The AlertDescriptions sandgate sends (RFC 8446 §6.2). */
export const TLS_ALERT = {
  /** A policy denial: the name (or the ClientHello's form) is not allowed. */
  access_denied: 49,
  /** The ClientHello could not be parsed. */
  decode_error: 50,
  /** No server name to decide on (RFC 6066 §3: no SNI, or an IP literal). */
  unrecognized_name: 112,
} as const;

export type TlsAlert = keyof typeof TLS_ALERT;

const CONTENT_TYPE_ALERT = 21;
const LEVEL_FATAL = 2;

/** The 7-byte plaintext alert record. */
export function alertRecord(alert: TlsAlert): Buffer {
  return Buffer.from([CONTENT_TYPE_ALERT, 0x03, 0x03, 0x00, 0x02, LEVEL_FATAL, TLS_ALERT[alert]]);
}

/** How long a refused client may take to close its side after the refusal before it is reset. */
const LINGER_MS = 2000;

/**
 * Sends the alert and closes (endWith).
 */
export function refuseWithAlert(socket: net.Socket, alert: TlsAlert): void {
  endWith(socket, alertRecord(alert));
}

/**
 * Sends `bytes` (a TLS alert, an HTTP refusal) and closes: FIN after them, so the client reads
 * them before the end of the stream (a reset could discard them in the client's receive queue).
 * Whatever the client still sends is read and dropped, and never forwarded; a client that does
 * not close within LINGER_MS is reset.
 */
export function endWith(socket: net.Socket, bytes: Buffer | string): void {
  if (socket.destroyed) return;
  socket.on('data', () => {
    /* dropped: nothing of a refused connection goes anywhere */
  });
  const timer = setTimeout(() => {
    if (!socket.destroyed) socket.resetAndDestroy();
  }, LINGER_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  // allowHalfOpen (the transparent listener's): the client's FIN must close our side too.
  socket.once('end', () => socket.destroy());
  socket.end(bytes);
  socket.resume();
}
