// A gRPC client for integration tests (@grpc/grpc-js), run in a sandbox namespace.
// argv: CA_FILE HOST:PORT PLACEHOLDER
// Calls sg.Echo (test/helpers/fake-grpc-server.mjs) with `authorization: Bearer PLACEHOLDER`:
// Unary, Stream (3 messages), Chat (bidirectional: each message written once the previous answer
// came back) and Secret. Prints one JSON line {unary, stream, chat, secret}: each
// {ok, value?, code?, details?, trailer?, got?}.
import grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';

const [caFile, target, placeholder] = process.argv.slice(2);
const bytes = { requestSerialize: (b) => b, requestDeserialize: (b) => b, responseSerialize: (b) => b, responseDeserialize: (b) => b };
const Echo = grpc.makeGenericClientConstructor(
  {
    unary: { path: '/sg.Echo/Unary', requestStream: false, responseStream: false, ...bytes },
    stream: { path: '/sg.Echo/Stream', requestStream: false, responseStream: true, ...bytes },
    secret: { path: '/sg.Echo/Secret', requestStream: false, responseStream: false, ...bytes },
    chat: { path: '/sg.Echo/Chat', requestStream: true, responseStream: true, ...bytes },
  },
  'Echo',
);
const client = new Echo(target, grpc.credentials.createSsl(readFileSync(caFile)));
const md = () => {
  const m = new grpc.Metadata();
  m.set('authorization', `Bearer ${placeholder}`);
  return m;
};
const deadline = () => ({ deadline: Date.now() + 8000 });
const unaryCall = (name, body) =>
  new Promise((resolve) => {
    let result;
    let trailer;
    // The callback and the 'status' event come in either order: the answer waits for both.
    const done = () => {
      if (result !== undefined && trailer !== undefined) resolve({ ...result, trailer: trailer[0] });
    };
    const call = client[name](Buffer.from(body), md(), deadline(), (err, res) => {
      result = err ? { ok: false, code: err.code, details: err.details } : { ok: true, value: res.toString('utf8') };
      done();
    });
    call.on('status', (s) => {
      trailer = s.metadata.get('x-echo-auth');
      done();
    });
  });
const streamCall = () =>
  new Promise((resolve) => {
    const got = [];
    const call = client.stream(Buffer.from('3'), md(), deadline());
    call.on('data', (d) => got.push(JSON.parse(d.toString('utf8'))));
    call.on('error', (err) => resolve({ ok: false, code: err.code, details: err.details, got }));
    call.on('end', () => resolve({ ok: true, got }));
  });
// Ping-pong: the next message goes only after the answer to the last one, so the call is truly
// bidirectional (the request is still open while responses flow).
const chatCall = () =>
  new Promise((resolve) => {
    const got = [];
    const call = client.chat(md(), deadline());
    call.on('data', (d) => {
      got.push(JSON.parse(d.toString('utf8')));
      if (got.length < 3) call.write(Buffer.from(`m${got.length}`));
      else call.end();
    });
    call.on('error', (err) => resolve({ ok: false, code: err.code, details: err.details, got }));
    call.on('end', () => resolve({ ok: true, got }));
    call.write(Buffer.from('m0'));
  });
const unary = await unaryCall('unary', 'hello');
const stream = await streamCall();
const chat = await chatCall();
const secret = await unaryCall('secret', 'x');
process.stdout.write(JSON.stringify({ unary, stream, chat, secret }) + '\n');
client.close();
