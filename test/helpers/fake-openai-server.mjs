// A fake OpenAI-compatible API upstream for integration tests, run inside an upstream namespace
// with plain `node`. It checks the real key, as the real API does, so a request that arrives with
// a placeholder (or no key) fails with the same 401 shape the SDK knows.
//
// argv: --port N --tls CERT KEY --key REAL_KEY [--interval MS]
//   POST /v1/chat/completions   needs `Authorization: Bearer REAL_KEY`, else 401 JSON error.
//     "stream": false/absent -> one chat.completion object.
//     "stream": true         -> SSE: 3 chat.completion.chunk events, --interval ms apart (default 300),
//                               then `data: [DONE]` (the OpenAI streaming wire format).
//   GET /v1/echo                same key check; answers with the request's headers as JSON and the
//                               Authorization it received in `x-echo-authorization`: an upstream that
//                               reflects the credential, so tests can check the sandbox never sees it.
// Prints {"listening":PORT} on stdout once ready, then one JSON line per request:
//   {"request":{"method","path","auth":"ok"|"missing"|"wrong","authHeaders":N,"stream"?,"model"?},"status":N}
// The key itself is never printed.
import https from 'node:https';
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const opt = (k) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : undefined;
};
const port = Number(opt('--port') ?? 0);
const host = opt('--host') ?? '0.0.0.0';
const key = opt('--key');
if (key === undefined || key === '') throw new Error('fake-openai-server: --key REAL_KEY is required');
const interval = Number(opt('--interval') ?? 300);
const tlsIdx = args.indexOf('--tls');
if (tlsIdx < 0) throw new Error('fake-openai-server: --tls CERT KEY is required');
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');

function json(res, status, obj, extra = {}) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...extra });
  res.end(body);
}

function authOf(req) {
  const h = req.headers.authorization;
  if (h === undefined) return 'missing';
  return h === `Bearer ${key}` ? 'ok' : 'wrong';
}

let seq = 0;

function handler(req, res) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const path = new URL(req.url ?? '/', 'https://fake').pathname;
    const auth = authOf(req);
    const authHeaders = req.headersDistinct?.authorization?.length ?? (req.headers.authorization === undefined ? 0 : 1);
    const entry = { method: req.method, path, auth, authHeaders };
    const log = (status, more = {}) => say({ request: { ...entry, ...more }, status });

    if (!(req.method === 'POST' && path === '/v1/chat/completions') && !(req.method === 'GET' && path === '/v1/echo')) {
      json(res, 404, { error: { message: `Unknown request URL: ${req.method} ${path}.`, type: 'invalid_request_error', param: null, code: 'unknown_url' } });
      log(404);
      return;
    }
    if (auth !== 'ok') {
      // The real API's shape; like any careful server it does not repeat the key it was given.
      json(res, 401, { error: { message: 'Incorrect API key provided.', type: 'invalid_request_error', param: null, code: 'invalid_api_key' } });
      log(401);
      return;
    }
    if (path === '/v1/echo') {
      json(res, 200, { headers: req.headers }, { 'x-echo-authorization': req.headers.authorization ?? '' });
      log(200);
      return;
    }

    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      body = undefined;
    }
    if (body === null || typeof body !== 'object' || typeof body.model !== 'string' || !Array.isArray(body.messages)) {
      json(res, 400, {
        error: { message: 'The request body must be JSON with "model" and "messages".', type: 'invalid_request_error', param: null, code: null },
      });
      log(400);
      return;
    }
    const id = `chatcmpl-fake${++seq}`;
    const created = Math.floor(Date.now() / 1000);
    const model = body.model;
    if (body.stream !== true) {
      json(res, 200, {
        id,
        object: 'chat.completion',
        created,
        model,
        choices: [{ index: 0, message: { role: 'assistant', content: 'Hello from the fake upstream.', refusal: null }, logprobs: null, finish_reason: 'stop' }],
        usage: { prompt_tokens: 5, completion_tokens: 6, total_tokens: 11 },
      });
      log(200, { stream: false, model });
      return;
    }
    // Server-sent events (HTML Living Standard §9.2): each event is `data: ...` and a blank line.
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.flushHeaders();
    const deltas = [{ role: 'assistant', content: 'Hello' }, { content: ' from the' }, { content: ' stream.' }];
    let i = 0;
    const sent = [];
    const next = () => {
      if (res.destroyed) return;
      if (i < deltas.length) {
        const last = i === deltas.length - 1;
        const chunk = {
          id,
          object: 'chat.completion.chunk',
          created,
          model,
          choices: [{ index: 0, delta: deltas[i], logprobs: null, finish_reason: last ? 'stop' : null }],
        };
        res.write(`data: ${JSON.stringify(chunk)}\n\n`);
        sent.push(Date.now());
        i++;
        setTimeout(next, interval);
      } else {
        res.end('data: [DONE]\n\n');
        log(200, { stream: true, model, sentAt: sent });
      }
    };
    next();
  });
}

const server = https.createServer({ cert: readFileSync(args[tlsIdx + 1]), key: readFileSync(args[tlsIdx + 2]), noDelay: true }, handler);
server.listen(port, host, () => say({ listening: server.address().port }));
