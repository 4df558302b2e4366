/**
 * The one place a request's fields are rewritten for the upstream, for ordinary requests
 * (src/http/exchange.ts) and WebSocket upgrades (src/http/websocket.ts) alike: Host set to the
 * upstream's, hop-by-hop fields and those Connection names dropped (RFC 9110 §7.6.1), Expect
 * dropped (sandgate answers 100-continue itself), the credential injected (docs/interception.md):
 * its placeholder replaced in every value, the fields it sets replacing the sandbox's (never
 * duplicating them), its query parameter set.
 */
import { SandgateError } from '../errors.js';
import { injectQuery, type Credential } from '../creds/credential.js';
import { queryPlaceholder } from './placeholder-body.js';
import { HOP_BY_HOP } from './headers.js';

/** What the builder reads of a request as the sandbox sent it. */
export interface RequestFields {
  readonly method: string;
  readonly url: string;
  /** Names and values alternating, as sent. */
  readonly rawHeaders: readonly string[];
  /** Fields the Connection header names (lower-case), if any. */
  readonly connectionNamed: ReadonlySet<string> | undefined;
}

const UNSAFE_VALUE = /[\r\n\0]/;

/** Receives the fields in the order they go upstream. */
interface FieldSink {
  field(name: string, value: string): void;
}

/** The head as text (the relay writes it as is); one instance, reused: building is synchronous. */
class TextSink implements FieldSink {
  text = '';
  field(name: string, value: string): void {
    this.text += `${name}: ${value}\r\n`;
  }
}

/** The fields as a flat name/value list (node's http.request takes that shape). */
class ListSink implements FieldSink {
  readonly list: string[] = [];
  field(name: string, value: string): void {
    this.list.push(name, value);
  }
}

/**
 * The fields as an HTTP/2 header list (node:http2's object form): names lower-cased (RFC 9113
 * §8.2.1), Host carried as :authority (§8.3.1), repeated names as one array.
 */
class H2Sink implements FieldSink {
  readonly headers: Record<string, string | string[]>;
  constructor(method: string, path: string) {
    this.headers = { ':method': method, ':scheme': 'https', ':path': path };
  }
  field(name: string, value: string): void {
    const l = name.toLowerCase();
    if (l === 'host') {
      this.headers[':authority'] = value;
      return;
    }
    // The h2c upgrade's settings (RFC 7540 §3.2.1) mean nothing on an HTTP/2 connection, and
    // node:http2 refuses to send them.
    if (l === 'http2-settings') return;
    const had = this.headers[l];
    if (had === undefined) this.headers[l] = value;
    else if (typeof had === 'string') this.headers[l] = [had, value];
    else had.push(value);
  }
}

const text = new TextSink();

/** Lower-case names of the fields a credential sets (they replace what the sandbox sent), and Accept-Encoding. */
function credentialNames(cred: Credential): ReadonlySet<string> {
  const known = credNames.get(cred);
  if (known !== undefined) return known;
  const n = new Set(['accept-encoding']);
  if (cred.value !== undefined) n.add(cred.header.toLowerCase());
  // Re-signed whole (src/http/aws-resign.ts): the sandbox's signature and what it signed with go.
  if (cred.aws !== undefined) for (const k of AWS_REPLACED) n.add(k);
  if (cred.headers !== undefined) for (const [k] of cred.headers) n.add(k.toLowerCase());
  credNames.set(cred, n);
  return n;
}

const credNames = new WeakMap<Credential, ReadonlySet<string>>();
const AWS_REPLACED = ['authorization', 'x-amz-date', 'x-amz-security-token', 'x-amz-content-sha256'];

/** Whether the credential's placeholder is replaced in header values (the default; docs/credentials-placeholders.md). */
export function placeholderIn(cred: Credential, place: 'header' | 'query' | 'body'): boolean {
  if (cred.placeholder === undefined) return false;
  return cred.placeholderIn === undefined ? place === 'header' : cred.placeholderIn.has(place);
}

/** A value sandgate put there (a secret, a token) must not end the line or the head. */
function checked(name: string, value: string): string {
  if (UNSAFE_VALUE.test(value)) throw new SandgateError(`header ${name} would carry a line break or NUL`, 'UPSTREAM_REQUEST');
  return value;
}

/**
 * The fields, in order: the sandbox's (minus those dropped or replaced), then Transfer-Encoding
 * (`keepTe`), then `extra` (name, value pairs), then the credential's. Throws UPSTREAM_REQUEST if
 * an injected value carries CR, LF or NUL.
 */
function emitFields(
  req: RequestFields,
  hostHeader: string,
  cred: Credential | undefined,
  keepTe: boolean,
  drop: ReadonlySet<string> | undefined,
  extra: readonly string[],
  sink: FieldSink,
): void {
  const raw = req.rawHeaders;
  const named = req.connectionNamed;
  const replaced = cred !== undefined ? credentialNames(cred) : undefined;
  const ph = cred !== undefined && placeholderIn(cred, 'header') ? cred.placeholder : undefined;
  sink.field('Host', hostHeader);
  let te: string | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const k = raw[i] as string;
    const l = k.toLowerCase();
    if (l === 'transfer-encoding') te = raw[i + 1];
    if (l === 'host' || l === 'expect' || drop?.has(l) === true || HOP_BY_HOP.has(l) || named?.has(l) === true || replaced?.has(l) === true) continue;
    if (l.includes('_') && aliases(l.replaceAll('_', '-'), replaced, drop)) continue;
    const v = raw[i + 1] as string;
    if (ph !== undefined && cred !== undefined && v.includes(ph)) sink.field(k, checked(k, v.split(ph).join(cred.secret)));
    else sink.field(k, v);
  }
  // Transfer-Encoding is hop-by-hop, but a chunked body keeps its framing (re-encoded by
  // sandgate): without it the body's bytes would parse as further requests upstream.
  if (keepTe && te !== undefined) sink.field('Transfer-Encoding', te);
  for (let i = 0; i + 1 < extra.length; i += 2) sink.field(extra[i] as string, extra[i + 1] as string);
  if (cred !== undefined) {
    if (cred.value !== undefined) sink.field(cred.header, checked(cred.header, cred.value));
    if (cred.headers !== undefined) for (const [k, v] of cred.headers) sink.field(k, checked(k, v));
    // Scrubbing reads the body's bytes: ask for it unencoded (RFC 9110 §12.5.3). An upstream
    // that encodes anyway is decoded (src/http/exchange.ts) or refused.
    sink.field('Accept-Encoding', 'identity');
  }
}

/**
 * CGI-style servers (WSGI, Rack, PHP's $_SERVER, some proxies) read `_` in a field name as `-`:
 * to them `Transfer_Encoding` is Transfer-Encoding and `X_Api_Key` the credential's field. Such a
 * field would frame the body differently upstream than here (request smuggling: a second request
 * hidden in the body, with the next request on the pooled connection, credential and all, as its
 * body), or stand beside the injected credential. So a name that aliases a field sandgate owns
 * (framing, Host, Expect, hop-by-hop, the credential's) is dropped, as nginx drops every name with
 * an underscore by default.
 */
function aliases(dashed: string, replaced: ReadonlySet<string> | undefined, drop: ReadonlySet<string> | undefined): boolean {
  return (
    dashed === 'host' ||
    dashed === 'content-length' ||
    dashed === 'transfer-encoding' ||
    dashed === 'expect' ||
    HOP_BY_HOP.has(dashed) ||
    replaced?.has(dashed) === true ||
    drop?.has(dashed) === true
  );
}

const NO_EXTRA: readonly string[] = [];

/**
 * The fields toward the upstream as name/value pairs, for a head that is finished elsewhere
 * (re-signed, or with a rewritten body): `drop` names more fields to leave out (Content-Length of
 * a body that changes length), `keepTe` keeps Transfer-Encoding (a body still sent chunked).
 */
export function upstreamFields(req: RequestFields, hostHeader: string, cred: Credential, keepTe: boolean, drop: ReadonlySet<string>): [string, string][] {
  const sink = new ListSink();
  emitFields(req, hostHeader, cred, keepTe, drop, NO_EXTRA, sink);
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < sink.list.length; i += 2) out.push([sink.list[i] as string, sink.list[i + 1] as string]);
  return out;
}

/** A head's text from its request line's parts and its fields. */
export function renderHead(method: string, target: string, fields: readonly (readonly [string, string])[]): string {
  let t = `${method} ${target} HTTP/1.1\r\n`;
  for (const [k, v] of fields) t += `${k}: ${checked(k, v)}\r\n`;
  return t + '\r\n';
}

/** The request target toward the upstream (the credential's query parameter set). */
export function requestTarget(url: string, cred: Credential | undefined): string {
  if (cred === undefined) return url;
  const t = injectQuery(url, cred);
  return placeholderIn(cred, 'query') ? queryPlaceholder(t, cred) : t;
}

/** An ordinary request's head toward the upstream, as HTTP/1.1 text (latin1, as parsed). */
export function requestHead(req: RequestFields, hostHeader: string, cred: Credential | undefined): string {
  text.text = `${req.method} ${requestTarget(req.url, cred)} HTTP/1.1\r\n`;
  try {
    emitFields(req, hostHeader, cred, true, undefined, NO_EXTRA, text);
    return text.text + '\r\n';
  } finally {
    text.text = '';
  }
}

const NO_WS_EXTENSIONS: ReadonlySet<string> = new Set(['sec-websocket-extensions']);

const TE_TRAILERS: readonly string[] = ['te', 'trailers'];

/**
 * An ordinary request's fields toward an HTTP/2 upstream: the same fields as requestHead's, as a
 * header list. TE is hop-by-hop, but `TE: trailers` is the one value HTTP/2 carries (RFC 9113
 * §8.2.2), and gRPC servers look for it.
 */
export function requestHeaders(req: RequestFields, hostHeader: string, cred: Credential | undefined): Record<string, string | string[]> {
  const sink = new H2Sink(req.method, requestTarget(req.url, cred));
  let te = false;
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if ((raw[i] as string).toLowerCase() === 'te' && (raw[i + 1] as string).trim().toLowerCase() === 'trailers') te = true;
  }
  emitFields(req, hostHeader, cred, false, undefined, te ? TE_TRAILERS : NO_EXTRA, sink);
  return sink.headers;
}

const UPGRADE: readonly string[] = ['Connection', 'Upgrade', 'Upgrade', 'websocket'];

/**
 * A WebSocket upgrade request's fields (flat name/value list). With a credential,
 * Sec-WebSocket-Extensions is not forwarded, so permessage-deflate (RFC 7692) is never negotiated
 * and the scrubber sees every frame's payload.
 */
export function upgradeFields(req: RequestFields, hostHeader: string, cred: Credential | undefined): string[] {
  const sink = new ListSink();
  emitFields(req, hostHeader, cred, false, cred !== undefined ? NO_WS_EXTENSIONS : undefined, UPGRADE, sink);
  return sink.list;
}
