// A webhook approver for sandgate's approvals.webhook, on 127.0.0.1 (port 0).
// Usage: fake-approver.mjs --action once|sandbox|policy|deny | --status 500
// Prints {"listening":PORT}, then {"asked": ITEM} for every POST it receives, and answers
// {"action": ACTION} (or the given status with an empty body).
import http from 'node:http';

const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const action = opt('--action');
const status = Number(opt('--status') ?? 200);
const say = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let asked;
    try {
      asked = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      asked = null;
    }
    say({ asked, method: req.method, contentType: req.headers['content-type'] });
    if (status !== 200) {
      res.writeHead(status).end();
      return;
    }
    const body = JSON.stringify({ action });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
  });
});
server.listen(0, '127.0.0.1', () => say({ listening: server.address().port }));
process.on('SIGTERM', () => process.exit(0));
