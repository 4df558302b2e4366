/**
 * `GET /events`: the NDJSON decision stream on the control socket (events.ts holds the logic).
 * The response stays open until the client goes or the daemon stops; each audit line that passes
 * the filter is one line of the body. Backpressure: when the socket's buffer is full the line goes
 * to the subscriber's bounded Outbox, which drops (and later reports) what does not fit.
 */
import type http from 'node:http';
import { MAX_SUBSCRIBERS, Outbox, parseEventFilter, type EventHub } from './events.js';

/** Lines waiting for one slow subscriber, beyond what the socket itself buffers. */
export const EVENTS_QUEUE_BYTES = 256 * 1024;

export function serveEvents(hub: EventHub, url: URL, req: http.IncomingMessage, res: http.ServerResponse, queueBytes = EVENTS_QUEUE_BYTES): void {
  const parsed = parseEventFilter(url.searchParams);
  if (!parsed.ok) {
    const text = `${JSON.stringify({ error: parsed.error })}\n`;
    res.writeHead(400, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
    return;
  }
  const box = new Outbox(queueBytes);
  const write = (text: string): void => {
    if (text !== '' && !res.destroyed && !res.write(text)) box.block();
  };
  const leave = hub.subscribe({
    filter: parsed.filter,
    push(line) {
      const now = box.offer(line);
      if (now !== undefined) write(now);
    },
  });
  if (leave === undefined) {
    const text = `${JSON.stringify({ error: `${MAX_SUBSCRIBERS} event streams are open already` })}\n`;
    res.writeHead(503, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
    return;
  }
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
  // Headers out at once: a client sees the stream is open before the first line.
  res.flushHeaders();
  res.on('drain', () => write(box.drain()));
  // The client went away (or the daemon closes every connection at stop).
  res.once('close', leave);
  req.resume();
}
