// A fake git hosting upstream for integration tests, run inside an upstream namespace with plain `node`.
// It serves one bare repository over smart HTTP by running git's own `git http-backend` as a CGI
// program (RFC 3875), behind HTTP Basic authentication (RFC 7617), the way GitHub/GitLab accept a
// token as a password.
//
// argv: --port N --tls CERT KEY --repo /abs/path/NAME.git --user USER --password PASS
//   --repo: created (bare, branch main, one commit holding README.md) when it does not exist yet;
//           served at https://HOST/NAME.git. Push is enabled (http.receivepack true).
// Prints {"listening":PORT} on stdout once ready, then one JSON line per request:
//   {"request":{"method","path","query","auth":"ok"|"missing"|"wrong"|"malformed","user"?,"authHeaders":N},"status":N}
// The password is never printed; on a wrong attempt only the user name given is logged.
import https from 'node:https';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';

const BACKEND = '/usr/lib/git-core/git-http-backend';
const GIT = '/usr/bin/git';

const args = process.argv.slice(2);
const opt = (k) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : undefined;
};
const need = (k) => {
  const v = opt(k);
  if (v === undefined) throw new Error(`fake-git-server: ${k} is required`);
  return v;
};
const port = Number(opt('--port') ?? 0);
const host = opt('--host') ?? '0.0.0.0';
const tlsIdx = args.indexOf('--tls');
if (tlsIdx < 0) throw new Error('fake-git-server: --tls CERT KEY is required');
const repo = need('--repo');
const user = need('--user');
const password = need('--password');
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');

// Git must not read the machine's or root's own configuration (credential helpers, hooks paths).
const gitEnv = { PATH: '/usr/bin:/bin', HOME: dirname(repo), GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null' };

function git(argv, input, extraEnv = {}) {
  return execFileSync(GIT, ['--git-dir', repo, ...argv], { env: { ...gitEnv, ...extraEnv }, input, encoding: 'utf8' }).trim();
}

if (!existsSync(repo)) {
  execFileSync(GIT, ['init', '--quiet', '--bare', '-b', 'main', repo], { env: gitEnv });
  // One commit made with plumbing, so no work tree is needed.
  const blob = git(['hash-object', '-w', '--stdin'], 'hello from the fake git upstream\n');
  const tree = git(['mktree'], `100644 blob ${blob}\tREADME.md\n`);
  const who = { GIT_AUTHOR_NAME: 'fake', GIT_AUTHOR_EMAIL: 'fake@example.test', GIT_COMMITTER_NAME: 'fake', GIT_COMMITTER_EMAIL: 'fake@example.test' };
  const commit = git(['commit-tree', tree, '-m', 'initial commit'], undefined, who);
  git(['update-ref', 'refs/heads/main', commit]);
}
// git-http-backend refuses receive-pack to anonymous users unless this is set (git-http-backend(1)).
git(['config', 'http.receivepack', 'true']);

const expected = `${user}:${password}`;

/** RFC 7617 §2: credentials = "Basic" SP base64(user-id ":" password); the scheme is case-insensitive. */
function checkAuth(header) {
  if (header === undefined) return { auth: 'missing' };
  const m = /^basic[ ]+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!m) return { auth: 'malformed' };
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  const given = colon >= 0 ? decoded.slice(0, colon) : decoded;
  return decoded === expected ? { auth: 'ok', user: given } : { auth: 'wrong', user: given };
}

/** Request headers as CGI meta-variables (RFC 3875 §4.1.18), minus credentials (as a web server does). */
function cgiEnv(req, pathInfo, query, remoteUser) {
  const env = {
    ...gitEnv,
    GIT_PROJECT_ROOT: dirname(repo),
    GIT_HTTP_EXPORT_ALL: '1',
    GATEWAY_INTERFACE: 'CGI/1.1',
    SERVER_PROTOCOL: `HTTP/${req.httpVersion}`,
    SERVER_SOFTWARE: 'fake-git-server',
    REQUEST_METHOD: req.method,
    PATH_INFO: pathInfo,
    QUERY_STRING: query,
    REMOTE_ADDR: req.socket.remoteAddress ?? '',
    REMOTE_USER: remoteUser,
    AUTH_TYPE: 'Basic',
  };
  if (req.headers['content-type'] !== undefined) env.CONTENT_TYPE = req.headers['content-type'];
  // With chunked transfer coding there is no length: git-http-backend then reads to EOF.
  if (req.headers['content-length'] !== undefined) env.CONTENT_LENGTH = req.headers['content-length'];
  for (const [k, v] of Object.entries(req.headers)) {
    if (k === 'authorization' || k === 'proxy-authorization' || k === 'content-type' || k === 'content-length') continue;
    env[`HTTP_${k.toUpperCase().replace(/-/g, '_')}`] = Array.isArray(v) ? v.join(', ') : v;
  }
  return env;
}

function handler(req, res) {
  const url = new URL(req.url ?? '/', 'https://fake');
  const a = checkAuth(req.headers.authorization);
  const authHeaders = req.headersDistinct?.authorization?.length ?? (req.headers.authorization === undefined ? 0 : 1);
  const log = (status) =>
    say({
      request: {
        method: req.method,
        path: url.pathname,
        query: url.search.slice(1),
        auth: a.auth,
        ...(a.user !== undefined ? { user: a.user } : {}),
        authHeaders,
      },
      status,
    });
  if (a.auth !== 'ok') {
    const body = 'authentication required\n';
    res.writeHead(401, { 'www-authenticate': 'Basic realm="fake-git"', 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
    res.end(body);
    req.resume();
    log(401);
    return;
  }
  const cgi = spawn(BACKEND, [], { env: cgiEnv(req, decodeURIComponent(url.pathname), url.search.slice(1), a.user ?? ''), stdio: ['pipe', 'pipe', 'pipe'] });
  cgi.stdin.on('error', () => {});
  req.pipe(cgi.stdin);
  let stderr = '';
  cgi.stderr.setEncoding('utf8');
  cgi.stderr.on('data', (d) => {
    stderr += d;
  });

  // RFC 3875 §6.2: CGI response = header lines, blank line, body. "Status:" sets the status.
  let head = Buffer.alloc(0);
  let headersDone = false;
  const onData = (chunk) => {
    if (headersDone) return;
    head = Buffer.concat([head, chunk]);
    const crlf = head.indexOf('\r\n\r\n');
    const lf = head.indexOf('\n\n');
    let end = -1;
    let sep = 0;
    if (crlf >= 0 && (lf < 0 || crlf < lf)) {
      end = crlf;
      sep = 4;
    } else if (lf >= 0) {
      end = lf;
      sep = 2;
    }
    if (end < 0) return;
    headersDone = true;
    cgi.stdout.off('data', onData);
    let status = 200;
    const headers = {};
    for (const line of head.subarray(0, end).toString('latin1').split(/\r?\n/)) {
      const c = line.indexOf(':');
      if (c <= 0) continue;
      const k = line.slice(0, c).trim();
      const v = line.slice(c + 1).trim();
      if (k.toLowerCase() === 'status') status = Number.parseInt(v, 10) || 500;
      else headers[k] = v;
    }
    res.writeHead(status, headers);
    const rest = head.subarray(end + sep);
    if (rest.length > 0) res.write(rest);
    cgi.stdout.pipe(res);
    log(status);
  };
  cgi.stdout.on('data', onData);
  cgi.on('close', (code) => {
    if (!headersDone) {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`git-http-backend exited ${code} without a response\n`);
      log(500);
    }
    if (stderr.trim() !== '') say({ backendStderr: stderr.trim().slice(0, 500) });
  });
}

const server = https.createServer({ cert: readFileSync(args[tlsIdx + 1]), key: readFileSync(args[tlsIdx + 2]), noDelay: true }, handler);
server.listen(port, host, () => say({ listening: server.address().port, repo: `/${basename(repo)}` }));
