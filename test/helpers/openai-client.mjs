// A sandbox-side client for integration tests: the official `openai` npm SDK (resolved from the
// repo's node_modules), run with plain `node` inside a sandbox namespace. It trusts whatever CA
// NODE_EXTRA_CA_CERTS names.
//
// argv: --base URL --key KEY --mode complete|stream
// Prints one JSON line: {ok, content, chunks:[{t,content}], status?, error?, seen}
//   chunks: for --mode stream, each chunk's arrival time (Date.now()) and delta text.
//   seen:   every response header and body byte the SDK's fetch received (decoded as UTF-8), so a
//           test can check that nothing the sandbox received contains a secret.
import OpenAI from 'openai';

const args = process.argv.slice(2);
const opt = (k) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : undefined;
};
const mode = opt('--mode') ?? 'complete';

const seen = [];
const pending = [];
/** Wraps the global fetch (undici) to keep a copy of every response; clone() tees the body stream. */
const tap = async (url, init) => {
  const res = await fetch(url, init);
  seen.push(`HTTP ${res.status}\n${[...res.headers].map(([k, v]) => `${k}: ${v}`).join('\n')}`);
  pending.push(
    res
      .clone()
      .arrayBuffer()
      .then(
        (b) => {
          seen.push(Buffer.from(b).toString('utf8'));
        },
        (e) => {
          seen.push(`body error: ${e.message}`);
        },
      ),
  );
  return res;
};

const client = new OpenAI({ baseURL: opt('--base'), apiKey: opt('--key'), maxRetries: 0, timeout: 10_000, fetch: tap });
const out = { ok: false, content: '', chunks: [] };
try {
  if (mode === 'stream') {
    const stream = await client.chat.completions.create({ model: 'gpt-fake', messages: [{ role: 'user', content: 'say hello' }], stream: true });
    for await (const chunk of stream) {
      const c = chunk.choices[0]?.delta?.content ?? '';
      out.chunks.push({ t: Date.now(), content: c });
      out.content += c;
    }
  } else {
    const r = await client.chat.completions.create({ model: 'gpt-fake', messages: [{ role: 'user', content: 'say hello' }] });
    out.content = r.choices[0]?.message?.content ?? '';
    out.id = r.id;
  }
  out.ok = true;
} catch (e) {
  out.error = `${e.constructor?.name ?? 'Error'}: ${e.message}`;
  if (typeof e.status === 'number') out.status = e.status;
}
await Promise.all(pending);
out.seen = seen.join('\n');
process.stdout.write(JSON.stringify(out) + '\n');
